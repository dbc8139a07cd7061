"""Batch prediction: P(Fake) for every image under some paths, one row per image, streamed to a
CSV or JSONL file that survives interruption, split across machines by a stable hash, and turned
into a competition submission.

Scoring goes through the inference contract (`realfake.inference.classifier.Classifier`) and
decoding
through `realfake.core.images.load_rgb`; this module only finds files, overlaps their decoding with
the model, and writes rows. Rows come in the order of their path strings, so shard outputs merge
back by path into exactly the rows of one run.

Example:
    files, skipped, folders_skipped = find_images(["photos/", "more/*.png"])
    config = PredictConfig(("photos/",), model=Path("models/m.h5"), output=Path("scores.csv"))
    print(predict(config).line())
"""

import contextlib
import csv
import glob
import hashlib
import heapq
import io
import itertools
import json
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from realfake.core.config import INFERENCE_BATCH_SIZE
from realfake.core.errors import NO_ROOM, PipelineError
from realfake.core.images import is_image_name, load_rgb, without_text_chunks
from realfake.inference.classifier import size_notice

# The columns every row has; extra column groups (such as provenance) follow them.
# `notice` is set when the image is far larger than the model's input (inference.size_notice).
BASE_COLUMNS = (
    "path", "probability_fake", "label", "verdict", "width", "height", "notice", "error",
)  # fmt: skip
# Submission answers: 1 for AI-generated, 0 for real.
ANSWERS = {"Fake": 1, "Real": 0}
# Names listed in a summary or an error before "and N more".
MAX_NAMES_SHOWN = 10


# Finding files ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFile:
    """An image to score: its path as written in the output, and its path relative to the PATH
    argument it was found under, which decides its shard on every machine alike."""

    path: Path
    relative: str

    @property
    def text(self) -> str:
        """The path as written in a row (`path_text`)."""
        return path_text(self.path)


def path_text(path: Path | str) -> str:
    """A path as text that any UTF-8 file can hold: bytes of a name that are not UTF-8 (a name
    made on another system) are written in backslash form, `\\xe9`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def find_images(arguments: Sequence[str]) -> tuple[list[ImageFile], int, list[str]]:
    """Image files under the given files, folders (recursed) and glob patterns, sorted by path,
    each once; the number of non-image files skipped; and the folders not entered, each as
    "path (reason)".

    Hidden folders (`.git`, `.ipynb_checkpoints`) are not entered; hidden files such as
    `.DS_Store` count as skipped non-images. A folder linked inside a PATH is not followed (a
    link can lead back up and loop) and a folder that cannot be listed is not entered: both are
    returned with the reason. A PATH that names nothing raises PipelineError.
    """
    found: dict[str, ImageFile] = {}
    skipped = 0
    folders_skipped: list[str] = []
    for argument in arguments:
        literal = Path(argument)
        if literal.exists():
            matches, base = [literal], literal if literal.is_dir() else literal.parent
        elif glob.has_magic(argument):
            matches = [Path(match) for match in sorted(glob.glob(argument, recursive=True))]
            base = _glob_base(argument)
        else:
            matches = []
        if not matches:
            raise PipelineError(f"no such file or folder, and no file matches: {argument}")
        for match in matches:
            paths = _walk(match, folders_skipped) if match.is_dir() else [match]
            for path in paths:
                if not is_image_name(path):
                    skipped += 1
                    continue
                relative = path.relative_to(base).as_posix()
                found.setdefault(path_text(path), ImageFile(path, relative))
    return [found[key] for key in sorted(found)], skipped, sorted(set(folders_skipped))


def _glob_base(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading parts without wildcards."""
    plain = list(itertools.takewhile(lambda part: not glob.has_magic(part), Path(pattern).parts))
    return Path(*plain) if plain else Path(".")


def _walk(folder: Path, folders_skipped: list[str]) -> Iterator[Path]:
    """Every file under `folder`, hidden folders left out, in sorted order; each linked or
    unreadable folder met is added to `folders_skipped` as "path (reason)"."""

    def unreadable(error: OSError) -> None:
        folders_skipped.append(f"{path_text(error.filename)} (cannot read: {error.strerror})")

    for root, folders, files in os.walk(folder, onerror=unreadable):
        visible = sorted(name for name in folders if not name.startswith("."))
        folders[:] = [name for name in visible if not os.path.islink(os.path.join(root, name))]
        for name in sorted(set(visible) - set(folders)):
            folders_skipped.append(
                f"{path_text(Path(root) / name)} (a link to a folder, not followed)"
            )
        for name in sorted(files):
            yield Path(root) / name


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' to (K, N), K counted from 0 as Slurm array and Kubernetes indexes are."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be K/N, such as 0/4, not {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard K/N needs 0 <= K < N, not {text!r}")
    return index, count


def shard_of(relative: str, count: int) -> int:
    """The shard (0 to count - 1) of a file: a hash of its relative path, the same everywhere."""
    digest = hashlib.sha256(relative.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(files: Iterable[ImageFile], shard: tuple[int, int] | None) -> list[ImageFile]:
    """The files of one shard, in their order; all of them without a shard."""
    if shard is None:
        return list(files)
    index, count = shard
    return [file for file in files if shard_of(file.relative, count) == index]


# Rows ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtraColumns:
    """A group of columns read from each file's raw bytes (provenance, for one)."""

    names: tuple[str, ...]
    read: Callable[[bytes], dict[str, str]]
    # What identifies its settings, so that a run does not continue another run's output.
    settings: dict = field(default_factory=dict)


def provenance_columns(trust_anchors: str | None = None) -> ExtraColumns:
    """The provenance columns: source of evidence, declared origin, generator, signature."""
    from realfake.inference.provenance import CSV_COLUMNS, read_provenance

    def read(data: bytes) -> dict[str, str]:
        return read_provenance(data, trust_anchors=trust_anchors).csv_fields()

    anchors = hashlib.sha256(trust_anchors.encode()).hexdigest() if trust_anchors else None
    return ExtraColumns(tuple(CSV_COLUMNS), read, {"provenance_trust_anchors": anchors})


@dataclass
class Decoded:
    """One file after reading: pixels for the model, or the reason there are none."""

    file: ImageFile
    pixels: np.ndarray | None
    width: int | None
    height: int | None
    error: str | None
    extra: dict[str, str]


def decode_file(file: ImageFile, image_size: int, extras: Sequence[ExtraColumns]) -> Decoded:
    """Read a file's bytes once; decode them for the model and read the extra columns from them."""
    from realfake.core.fileops import read_regular_file

    empty = {name: "" for group in extras for name in group.names}
    try:
        data = read_regular_file(file.path)
    except OSError as error:
        return Decoded(file, None, None, None, f"cannot read: {error.strerror}", empty)
    extra = {name: value for group in extras for name, value in group.read(data).items()}
    width = height = None
    try:
        width, height = displayed_size(data)
        pixels = load_rgb(data, image_size)
    except Exception as error:  # Pillow raises many types for broken files
        # Pillow refuses a PNG text chunk that expands past its limit; the text is provenance,
        # which the provenance reader finds unreadable; the pixels are still there.
        pixels_only = without_text_chunks(data)
        try:
            if pixels_only is None:
                raise
            width, height = displayed_size(pixels_only)
            pixels = load_rgb(pixels_only, image_size)
        except Exception:
            return Decoded(file, None, width, height, f"cannot decode: {_reason(error)}", extra)
    return Decoded(file, pixels, width, height, None, extra)


def displayed_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image as shown, after its EXIF orientation; reads the header only."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        # Orientations 5-8 turn the picture a quarter, as load_rgb's exif_transpose does.
        if image.getexif().get(0x0112) in (5, 6, 7, 8):
            width, height = height, width
    return width, height


def _reason(error: Exception) -> str:
    """One stable line for a decoding failure (Pillow's messages can name object addresses)."""
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "not an image format Pillow can read"
    text = str(error).splitlines()[0] if str(error) else ""
    return text if text and " at 0x" not in text else type(error).__name__


def build_row(decoded: Decoded, prediction, image_size: int) -> dict:
    """The output row of one file: its base columns, then every extra column group's. A scored
    file (`prediction` not None) far larger than the model's `image_size` gets a notice
    (`inference.size_notice`)."""
    row = {
        "path": decoded.file.text,
        "probability_fake": None,
        "label": None,
        "verdict": None,
        "width": decoded.width,
        "height": decoded.height,
        "notice": None,
        "error": decoded.error,
    }
    if prediction is not None:
        row.update(
            probability_fake=float32_value(prediction.probability_fake),
            label=prediction.label,
            verdict=prediction.verdict,
        )
        if decoded.width is not None:
            notice = size_notice(decoded.width, decoded.height, image_size)
            row["notice"] = None if notice is None else f"{notice} (README: Robustness)"
    row.update(decoded.extra)
    return row


def float32_value(value: float) -> float:
    """The shortest decimal that is the same float32: the model's own precision, not float64's
    noise digits."""
    return float(str(np.float32(value)))


def row_columns(extras: Sequence[ExtraColumns]) -> tuple[str, ...]:
    """The output's columns in order."""
    return BASE_COLUMNS + tuple(name for group in extras for name in group.names)


# Decoding overlapped with the model ------------------------------------------------------------


def decoded_batches(
    files: Sequence[ImageFile],
    image_size: int,
    batch_size: int,
    extras: Sequence[ExtraColumns],
    threads: int,
) -> Iterator[list[Decoded]]:
    """Batches of decoded files in order, decoded by a thread pool a few batches ahead, so that
    Pillow (which releases the GIL) works while the model runs; at most threads + 2 batches are
    in memory, however many files there are."""

    def decode_batch(start: int) -> list[Decoded]:
        return [decode_file(file, image_size, extras) for file in files[start : start + batch_size]]

    starts = iter(range(0, len(files), batch_size))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        pending = deque(
            pool.submit(decode_batch, start) for start in itertools.islice(starts, threads + 1)
        )
        while pending:
            batch = pending.popleft().result()
            start = next(starts, None)
            if start is not None:
                pending.append(pool.submit(decode_batch, start))
            yield batch


def scored_rows(
    classifier, batches: Iterable[list[Decoded]], batch_size: int
) -> Iterator[list[dict]]:
    """Rows for each batch of decoded files.

    Every model batch is padded to `batch_size`: the math library picks its kernels by batch
    size, so a file scored in a short last batch (of a shard, or alone) could otherwise differ in
    its last bit from the same file scored in a full batch of one whole run.
    """
    for batch in batches:
        good = [decoded for decoded in batch if decoded.pixels is not None]
        predictions = iter(())
        if good:
            pixels = np.stack([decoded.pixels for decoded in good])
            if len(good) < batch_size:
                padding = np.zeros((batch_size - len(good), *pixels.shape[1:]), pixels.dtype)
                pixels = np.concatenate([pixels, padding])
            predictions = iter(classifier.predictions(pixels, batch_size)[: len(good)])
        yield [
            build_row(
                decoded,
                next(predictions) if decoded.pixels is not None else None,
                classifier.image_size,
            )
            for decoded in batch
        ]


# Writing and reading rows ----------------------------------------------------------------------


def format_for(output: Path | None, requested: str | None) -> str:
    """The output format: the one asked for, else JSONL for a .jsonl/.json output, else CSV."""
    if requested is not None:
        return requested
    if output is not None and output.suffix.lower() in (".jsonl", ".json"):
        return "jsonl"
    return "csv"


def header_text(columns: Sequence[str], output_format: str) -> str:
    """What starts an output file: the CSV header line, nothing for JSONL."""
    return _csv_line(columns) if output_format == "csv" else ""


def rows_text(rows: Iterable[dict], columns: Sequence[str], output_format: str) -> str:
    """Rows as CSV lines (empty cell for nothing, text that a spreadsheet would run as a
    formula neutralised: `neutralise_cell`) or JSON lines (null for nothing, text as it is)."""
    if output_format == "csv":
        return "".join(
            _csv_line(
                ["" if row.get(name) is None else neutralise_cell(row[name]) for name in columns]
            )
            for row in rows
        )
    return "".join(
        json.dumps({name: row.get(name) for name in columns}, ensure_ascii=False) + "\n"
        for row in rows
    )


# What makes a spreadsheet read a cell as a formula (OWASP, CSV Injection): such text is written
# after a single quote, which spreadsheets show as text and do not run.
_FORMULA_STARTS = frozenset("=+-@\t\r")


def neutralise_cell(value):
    """A CSV cell's value with a `'` before text that starts like a formula (`=1+1.png`, a
    Software chunk `=HYPERLINK(...)`); also before text that is quotes and then such a start, so
    that `restore_cell` gives back every text exactly. Numbers are left as they are."""
    if isinstance(value, str) and value.lstrip("'")[:1] in _FORMULA_STARTS:
        return "'" + value
    return value


def restore_cell(cell: str) -> str:
    """The text that `neutralise_cell` wrote as `cell`."""
    if cell.startswith("'") and cell[1:].lstrip("'")[:1] in _FORMULA_STARTS:
        return cell[1:]
    return cell


def _csv_line(values: Sequence) -> str:
    """One CSV record ending in \\n. The writer quotes a cell holding any character of its line
    terminator, so it writes with \\r\\n, which quotes a \\r in a name too (readers end a record
    at a bare \\r), and the record's own \\r\\n becomes \\n."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()[:-2] + "\n"


def detect_format(first_line: str) -> str:
    """'jsonl' for a file whose first line is a JSON object, else 'csv'."""
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


def split_records(text: str, output_format: str) -> list[str]:
    """The records of an output's text, each with its line end: a JSON line ends only at \\n
    (JSON escapes it inside strings), a CSV record where the csv module says it does, so a name
    holding \\r, \\n or U+2028 stays in its record (`str.splitlines` would split it there).
    Text that does not end a record (a torn or broken quote) comes last as one record."""
    lines = io.StringIO(text, newline="\n").readlines()
    if output_format != "csv":
        return lines
    records: list[str] = []
    reader = csv.reader(lines, strict=True)
    consumed = 0
    with contextlib.suppress(csv.Error):  # the rest is one record, which parse_lines refuses
        for _ in reader:
            records.append("".join(lines[consumed : reader.line_num]))
            consumed = reader.line_num
    if consumed < len(lines):
        records.append("".join(lines[consumed:]))
    return records


def parse_lines(
    lines: Sequence[str], output_format: str, source: str
) -> tuple[tuple[str, ...], list[dict]]:
    """Columns and rows of complete output records (`split_records`; a CSV header first, for
    CSV).

    CSV cells come back as the text they were written from (`restore_cell`), which writes back
    out unchanged; a record that does not parse
    raises PipelineError naming `source` and its record number.
    """
    rows = []
    if output_format == "csv":
        if not lines:
            return (), []
        columns = tuple(_csv_record(lines[0], source, 1))
        for number, line in enumerate(lines[1:], start=2):
            values = _csv_record(line, source, number)
            if len(values) != len(columns):
                raise PipelineError(f"{source} line {number} is not a row of {len(columns)} cells")
            rows.append(dict(zip(columns, map(restore_cell, values), strict=True)))
        return columns, rows
    columns = ()
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except ValueError:
            raise PipelineError(f"{source} line {number} is not JSON") from None
        if not isinstance(row, dict):
            raise PipelineError(f"{source} line {number} is not a JSON object")
        columns = columns or tuple(row)
        rows.append(row)
    return columns, rows


def _csv_record(record: str, source: str, number: int) -> list[str]:
    """The cells of one CSV record, or PipelineError when it is not exactly one whole record."""
    try:
        parsed = list(csv.reader(io.StringIO(record, newline=""), strict=True))
    except csv.Error:
        parsed = []
    if len(parsed) != 1 or not record.endswith("\n"):
        raise PipelineError(f"{source} line {number} is not a whole CSV record")
    return parsed[0]


# Counts and the summary ------------------------------------------------------------------------


@dataclass
class Tally:
    """Counts of a run's rows by verdict, the files that could not be decoded, and (for a
    submission) each path's answer."""

    verdicts: Counter = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    answers: dict[str, int | None] | None = None

    def add(self, row: dict) -> None:
        if row.get("error"):
            self.failed.append(row["path"])
        else:
            self.verdicts[row["verdict"]] += 1
        if self.answers is not None:
            self.answers[row["path"]] = None if row.get("error") else ANSWERS[row["label"]]

    @property
    def rows(self) -> int:
        return sum(self.verdicts.values()) + len(self.failed)


@dataclass
class Summary:
    """What a run did, for its one summary line."""

    tally: Tally
    files: int
    skipped: int = 0
    resumed: int = 0
    shard: tuple[int, int] | None = None
    output: Path | None = None
    submission_rows: int | None = None
    parts: int = 0
    folders_skipped: list[str] = field(default_factory=list)

    def line(self) -> str:
        scored = sum(self.tally.verdicts.values())
        verdicts = ", ".join(f"{name} {n:,}" for name, n in sorted(self.tally.verdicts.items()))
        text = (
            f"merged {self.parts:,} part{'s' if self.parts != 1 else ''}: {self.tally.rows:,} rows"
            if self.parts
            else f"predicted {scored:,} of {self.files:,} images"
        )
        if verdicts:
            text += f" ({verdicts})"
        if self.shard:
            text += f" in shard {self.shard[0]}/{self.shard[1]}"
        if self.resumed:
            text += f", continuing after {self.resumed:,} rows already written"
        if self.skipped:
            text += f"; skipped {self.skipped:,} non-image files"
        if self.folders_skipped:
            count = len(self.folders_skipped)
            text += f"; skipped {count:,} folder{'s' if count != 1 else ''}: "
            text += _names(self.folders_skipped)
        if self.tally.failed:
            text += (
                f"; {len(self.tally.failed):,} could not be decoded: {_names(self.tally.failed)}"
            )
        if self.submission_rows is not None:
            text += f"; submission of {self.submission_rows:,} rows"
        return text + (f" -> {self.output}" if self.output else "")


def _names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:MAX_NAMES_SHOWN])
    more = len(paths) - MAX_NAMES_SHOWN
    return shown + (f" and {more:,} more" if more > 0 else "")


# Competition submission ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """A competition's sample submission: its columns, ids in order, and the answer column."""

    columns: tuple[str, ...]
    rows: list[list[str]]
    answer_index: int

    @property
    def ids(self) -> list[str]:
        return [row[0] for row in self.rows]


def read_sample(path: Path) -> Sample:
    """Read a sample submission: the first column holds image ids, the answer goes into the
    column named 'answer' (in any case), else the second column."""
    from realfake.core.fileops import read_regular_file

    path = Path(path)
    try:
        text = read_regular_file(path).decode("utf-8-sig")
        table = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except OSError as error:
        raise PipelineError(f"cannot read the sample submission {path}: {error.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise PipelineError(f"cannot read the sample submission {path}: {error}") from None
    if not table or len(table[0]) < 2:
        raise PipelineError(
            f"the sample submission {path} needs a header with an id and an answer column, "
            "such as ImageId,answer"
        )
    columns = tuple(table[0])
    lowered = [name.strip().lower() for name in columns]
    answer_index = lowered.index("answer") if "answer" in lowered[1:] else 1
    rows = table[1:]
    short = [index for index, row in enumerate(rows, start=2) if len(row) != len(columns)]
    if short:
        raise PipelineError(f"the sample submission {path} line {short[0]} has the wrong cells")
    return Sample(columns, rows, answer_index)


def match_sample(sample: Sample, files: Sequence[ImageFile], source: Path) -> dict[str, str]:
    """Each sample id's image path (matched by file name, else by name without extension);
    PipelineError naming the ids that have no image, or more than one."""
    by_name: dict[str, list[str]] = {}
    for file in files:
        name, stem = path_text(file.path.name), path_text(file.path.stem)
        by_name.setdefault(name, []).append(file.text)
        if stem != name:
            by_name.setdefault(stem, []).append(file.text)
    missing, ambiguous, matched = [], [], {}
    for image_id in sample.ids:
        paths = by_name.get(image_id, [])
        if not paths:
            missing.append(image_id)
        elif len(paths) > 1:
            ambiguous.append(image_id)
        else:
            matched[image_id] = paths[0]
    if missing:
        raise PipelineError(
            f"{len(missing):,} ids of the sample submission {source} have no image among the "
            f"paths given: {_names(missing)}"
        )
    if ambiguous:
        raise PipelineError(
            f"{len(ambiguous):,} ids of the sample submission {source} match more than one "
            f"image: {_names(ambiguous)}"
        )
    return matched


def submission_text(sample: Sample, matched: dict[str, str], answers: dict) -> str:
    """The sample's columns and rows with each answer filled in: 1 for Fake, 0 for Real.

    An answer in the uncertain band falls back to the label at the threshold, since a
    submission has no third answer. An id whose image has no P(Fake) raises PipelineError.
    """
    failed = [image_id for image_id in sample.ids if answers.get(matched[image_id]) is None]
    if failed:
        raise PipelineError(
            f"cannot write the submission: {len(failed):,} of its images have no P(Fake): "
            f"{_names(failed)}"
        )
    lines = [_csv_line(sample.columns)]
    for row in sample.rows:
        filled = list(row)
        filled[sample.answer_index] = str(answers[matched[row[0]]])
        lines.append(_csv_line(filled))
    return "".join(lines)


# Output files that survive interruption --------------------------------------------------------


def partial_path(output: Path) -> Path:
    """Where rows go until the run ends: a hidden file beside the output."""
    return output.with_name(f".{output.name}.partial")


def settings_path(output: Path) -> Path:
    """The settings of the run that writes `partial_path(output)`."""
    return output.with_name(f".{output.name}.partial.json")


@dataclass
class Continuation:
    """Rows a killed run already wrote that this run keeps, and where it starts."""

    rows: list[dict]
    note: str | None = None


def continue_partial(
    output: Path, settings: dict, files: Sequence[ImageFile], batch_size: int, output_format: str
) -> Continuation:
    """Keep the rows that an interrupted run with the same settings wrote, truncated to whole
    batches (so every later batch holds the same files as in an uninterrupted run), and drop a
    torn last line. Anything else there is discarded, with a note saying why."""
    partial, stamp = partial_path(output), settings_path(output)
    if not partial.exists() or partial.stat().st_size == 0:  # none, or just locked by this run
        return Continuation([])
    try:
        previous = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if previous != settings:
        return Continuation([], f"discarded {partial}, written with other settings")
    data = partial.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    lines = split_records(complete.decode("utf-8", "surrogateescape"), output_format)
    header_lines = 1 if output_format == "csv" else 0
    try:
        columns, rows = parse_lines(lines, output_format, str(partial))
    except PipelineError:
        # A kill can tear the last record at a line break inside a quoted CSV name.
        lines = lines[:-1]
        try:
            columns, rows = parse_lines(lines, output_format, str(partial))
        except PipelineError:
            return Continuation([], f"discarded {partial}, which does not parse")
    if header_lines and columns != tuple(settings["columns"]):
        return Continuation([], f"discarded {partial}, which has other columns")
    keep = len(rows) // batch_size * batch_size
    if [row["path"] for row in rows[:keep]] != [file.text for file in files[:keep]]:
        return Continuation([], f"discarded {partial}: the files to score have changed")
    size = sum(
        len(line.encode("utf-8", "surrogateescape")) for line in lines[: header_lines + keep]
    )
    with open(partial, "r+b") as handle:
        handle.truncate(size)
    return Continuation(rows[:keep])


def _write_settings(output: Path, settings: dict) -> None:
    from realfake.core.fileops import atomic_write_text

    atomic_write_text(settings_path(output), json.dumps(settings, indent=2, sort_keys=True) + "\n")


def shard_record_path(output: Path) -> Path:
    """The record a --shard run leaves beside its output: which shard, and the settings (model,
    threshold, columns...) that decided its rows, for --merge to check the parts against."""
    return output.with_name(f"{output.name}.shard.json")


# Settings that may differ between the parts of one run: where each machine mounts the data, and
# how many images it scores at a time.
_LOCAL_SETTINGS = ("paths", "batch_size", "shard")


def _write_shard_record(output: Path, settings: dict, rows: int) -> None:
    from realfake.core.fileops import atomic_write_text

    record = {key: value for key, value in settings.items() if key not in _LOCAL_SETTINGS}
    record.update(shard=settings["shard"], rows=rows)
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    atomic_write_text(shard_record_path(output), text)


def _read_shard_record(part: Path) -> dict:
    from realfake.core.fileops import read_regular_file
    from realfake.inference.modelcard import DuplicateKey, without_duplicate_keys

    path = shard_record_path(part)
    try:
        text = read_regular_file(path).decode("utf-8")
        record = json.loads(text, object_pairs_hook=without_duplicate_keys)
        index, count = record["shard"]
        if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
            raise ValueError("bad shard")
    except DuplicateKey as error:
        # json keeps the last of two values silently: the settings checked could be either.
        raise PipelineError(
            f"{part}'s record {path.name} gives the key {error} twice: it was not written by "
            "predict.py"
        ) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise PipelineError(
            f"{part} has no readable record of its run beside it ({path.name}, which predict.py "
            "--shard writes): merge the outputs of --shard runs, each with its record"
        ) from None
    return record


def check_parts(parts: Sequence[Path], records: Sequence[dict], allow_partial: bool) -> None:
    """PipelineError unless the parts come from one run's settings, split the files one way,
    and (without `allow_partial`) hold every shard."""
    first, first_record = parts[0], records[0]
    for part, record in zip(parts[1:], records[1:], strict=True):
        differing = sorted(
            key
            for key in set(record) | set(first_record)
            if key not in ("shard", "rows") and record.get(key) != first_record.get(key)
        )
        if differing:
            raise PipelineError(
                f"{first} and {part} were made with different settings ({', '.join(differing)}): "
                "merge only parts scored by one model with one command"
            )
        if record["shard"][1] != first_record["shard"][1]:
            raise PipelineError(
                f"{first} is shard {'/'.join(map(str, first_record['shard']))} but {part} is "
                f"shard {'/'.join(map(str, record['shard']))}: the parts split the files in "
                "different ways"
            )
    count = first_record["shard"][1]
    seen: dict[int, Path] = {}
    for part, record in zip(parts, records, strict=True):
        index = record["shard"][0]
        if index in seen:
            raise PipelineError(
                f"{seen[index]} and {part} are both shard {index}/{count}: the shards overlap"
            )
        seen[index] = part
    missing = [f"{index}/{count}" for index in range(count) if index not in seen]
    if missing and not allow_partial:
        raise PipelineError(
            f"missing shard{'s' if len(missing) > 1 else ''} {', '.join(missing)}: merge all "
            f"{count} parts, or add --allow-partial to merge only these"
        )


def _finish(partial: Path, output: Path, text: str | None = None) -> None:
    """Move the finished rows (or `text` made from them) into place, then drop the leftovers."""
    from realfake.core.fileops import atomic_write_text

    if text is None:
        os.replace(partial, output)
    else:
        atomic_write_text(output, text)
        partial.unlink()
    settings_path(output).unlink(missing_ok=True)


# Running ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PredictConfig:
    """One batch prediction run."""

    paths: tuple[str, ...]
    model: Path
    output: Path | None = None
    output_format: str | None = None
    batch_size: int = INFERENCE_BATCH_SIZE
    shard: tuple[int, int] | None = None
    submission: Path | None = None
    provenance: bool = True
    trust_anchors: Path | None = None
    decode_threads: int = 2
    quiet: bool = False


def predict(config: PredictConfig, classifier=None, stdout=None) -> Summary:
    """Score every image under the config's paths and write the rows (or the submission made
    from them) to its output, or to `stdout` (default sys.stdout) without one.

    With an output file, rows go to a hidden partial file renamed into place at the end; a run
    killed at any moment continues from it when started again with the same settings. A second
    run on the same output while the first works is refused.
    """
    if config.output is None:
        return _predict(config, classifier, stdout)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    with _locked_partial(config.output):
        try:
            return _predict(config, classifier, stdout)
        except OSError as error:
            if error.errno not in NO_ROOM:
                raise
            raise PipelineError(
                f"cannot write the rows of {config.output}: {error.strerror}; those written so "
                f"far stay in {partial_path(config.output)}: make room and run the same command "
                "again to continue"
            ) from None


@contextlib.contextmanager
def _locked_partial(output: Path) -> Iterator[None]:
    """Hold an exclusive lock on the output's partial file (created empty if missing) for the
    run, or raise PipelineError when another run holds it.

    The lock is on the file itself, so it moves with it when the finished rows are renamed to
    the output, and a later run locks a new partial file.
    """
    import fcntl

    partial = partial_path(output)
    while True:
        handle = open(partial, "ab")  # noqa: SIM115  (held open until the run ends)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise PipelineError(
                f"another run is writing {output} (it holds {partial}): wait for it to end, "
                "or give another --output"
            ) from None
        try:
            if os.fstat(handle.fileno()).st_ino == os.stat(partial).st_ino:
                break
        except FileNotFoundError:
            pass
        handle.close()  # the run that held it finished and renamed it meanwhile: lock anew
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            held = os.fstat(handle.fileno())
            if held.st_size == 0 and os.stat(partial).st_ino == held.st_ino:
                partial.unlink()  # a run stopped before it wrote anything leaves nothing behind
        handle.close()


def _predict(config: PredictConfig, classifier, stdout) -> Summary:
    from realfake.core.cli import progress

    stdout = stdout if stdout is not None else sys.stdout
    output_format = format_for(config.output, config.output_format)
    files, skipped, folders_skipped = find_images(config.paths)
    if config.output is not None and config.output.exists():
        _refuse_output_among_inputs(config.output, [file.path for file in files], config.submission)
    files = select_shard(files, config.shard)
    sample = matched = None
    if config.submission is not None:
        sample = read_sample(config.submission)
        matched = match_sample(sample, files, config.submission)
    if classifier is None:
        from realfake.inference.classifier import load_classifier

        classifier = load_classifier(config.model)
    extras = [provenance_columns(_trust_anchors(config.trust_anchors))] if config.provenance else []
    columns = row_columns(extras)
    tally = Tally(answers={} if sample is not None else None)

    if config.output is not None:
        settings = _run_settings(config, classifier, output_format, columns, extras)
        continuation = continue_partial(
            config.output, settings, files, config.batch_size, output_format
        )
        if continuation.note:
            print(f"note: {continuation.note}", file=sys.stderr)
        partial = partial_path(config.output)
        if not continuation.rows:
            _write_settings(config.output, settings)
            partial.write_text(header_text(columns, output_format), encoding="utf-8")
        for row in continuation.rows:
            tally.add(row)
        done = len(continuation.rows)
    else:
        partial = None
        done = 0
        if sample is None:
            stdout.write(header_text(columns, output_format))

    remaining = files[done:]
    batches = decoded_batches(
        remaining, classifier.image_size, config.batch_size, extras, config.decode_threads
    )
    rows = (row for batch in scored_rows(classifier, batches, config.batch_size) for row in batch)
    with _row_writer(partial, stdout, keep_rows=sample is None) as writer:
        pending: list[dict] = []
        for row in progress(rows, total=len(remaining), description="predict", quiet=config.quiet):
            pending.append(row)
            tally.add(row)
            # One write per batch: a kill leaves whole lines, at worst one torn last line.
            if len(pending) == config.batch_size:
                writer.write(rows_text(pending, columns, output_format))
                writer.flush()
                pending = []
        writer.write(rows_text(pending, columns, output_format))
        writer.flush()

    summary = Summary(
        tally,
        len(files),
        skipped,
        done,
        config.shard,
        config.output,
        folders_skipped=folders_skipped,
    )
    text = None
    if sample is not None:
        text = submission_text(sample, matched, tally.answers)
        summary.submission_rows = len(sample.rows)
    if config.output is not None:
        if config.shard is not None:
            _write_shard_record(config.output, settings, len(files))
        _finish(partial_path(config.output), config.output, text)
    elif text is not None:
        stdout.write(text)
        stdout.flush()
    return summary


def _refuse_output_among_inputs(output: Path, inputs: list[Path], sample: Path | None) -> None:
    """PipelineError when the output file is one of the images to score or the sample
    submission: the run would overwrite what it reads."""
    target = os.stat(output)
    for path in [*inputs, *([sample] if sample is not None else [])]:
        try:
            status = os.stat(path)
        except OSError:
            continue
        if (status.st_dev, status.st_ino) == (target.st_dev, target.st_ino):
            raise PipelineError(
                f"--output {output} is {path_text(path)}, one of the files this run reads: "
                "give another output file"
            )


class _Discard:
    """Where rows go when only the submission made from them is wanted on standard output."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _row_writer(partial: Path | None, stdout, keep_rows: bool):
    """The partial file, appended to and synced to disk at the end; else standard output."""
    if partial is None:
        yield stdout if keep_rows else _Discard()
        return
    with open(partial, "a", encoding="utf-8", newline="") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def _trust_anchors(path: Path | None) -> str | None:
    if path is None:
        return None
    from realfake.inference.provenance import load_trust_anchors

    return load_trust_anchors(path)


def _run_settings(config, classifier, output_format, columns, extras) -> dict:
    """Everything that decides the rows: a partial output written under other settings is not
    continued."""
    from realfake.inference.modelcard import model_identity

    card = classifier.card
    model = (
        {key: card[key] for key in ("model_file", "model_bytes", "model_sha256")}
        if "model_sha256" in card
        else model_identity(classifier.path)
    )
    settings = {
        "paths": list(config.paths),
        "shard": list(config.shard) if config.shard else None,
        "format": output_format,
        "columns": list(columns),
        "batch_size": config.batch_size,
        "model": model,
        "image_size": classifier.image_size,
        "threshold": classifier.threshold,
        "uncertain_band": list(classifier.uncertain_band) if classifier.uncertain_band else None,
        "test_time_flip": classifier.test_time_flip,
    }
    for group in extras:
        settings.update(group.settings)
    return settings


# Merging shard outputs -------------------------------------------------------------------------


def read_output(path: Path) -> tuple[str, tuple[str, ...], list[dict]]:
    """Format, columns and rows of a finished output file."""
    from realfake.core.fileops import read_regular_file

    path = Path(path)
    try:
        # Bytes decoded as they are: reading as text would turn a \r inside a name into \n.
        text = read_regular_file(path, limit=None).decode("utf-8")
    except OSError as error:
        raise PipelineError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise PipelineError(f"cannot read {path}: {error}") from None
    if text and not text.endswith("\n"):
        raise PipelineError(f"{path} ends in a torn line: is its run finished?")
    output_format = detect_format(text.split("\n", 1)[0])
    lines = split_records(text, output_format)
    columns, rows = parse_lines(lines, output_format, str(path))
    if output_format == "csv" and "path" not in columns:
        raise PipelineError(f"{path} is not an output of predict.py: it has no path column")
    return output_format, columns, rows


def merge(
    parts: Sequence[Path],
    output: Path | None,
    output_format: str | None = None,
    submission: Path | None = None,
    stdout=None,
    allow_partial: bool = False,
) -> Summary:
    """Join shard outputs, each in path order, into the rows of one run over all their files.

    Each part's record (`shard_record_path`) must show the same model and settings, and every
    shard of the N must be there unless `allow_partial`.
    """
    stdout = stdout if stdout is not None else sys.stdout
    if not parts:
        raise PipelineError("--merge needs the shard outputs to join")
    loaded = [read_output(part) for part in parts]
    records = [_read_shard_record(Path(part)) for part in parts]
    formats = {output_format_ for output_format_, _, _ in loaded}
    known_columns = {columns for _, columns, rows in loaded if rows or columns}
    if len(formats) > 1:
        raise PipelineError("the parts mix CSV and JSONL outputs")
    if len(known_columns) > 1:
        raise PipelineError("the parts have different columns: were they made with one command?")
    part_format = formats.pop()
    if output_format is not None and output_format != part_format:
        raise PipelineError(f"the parts are {part_format}, not {output_format}")
    columns = known_columns.pop() if known_columns else BASE_COLUMNS
    for part, (_, _, rows) in zip(parts, loaded, strict=True):
        paths = [row["path"] for row in rows]
        if any(first >= second for first, second in itertools.pairwise(paths)):
            raise PipelineError(f"{part} is not in path order: not an output of predict.py")
    merged = list(heapq.merge(*(rows for _, _, rows in loaded), key=lambda row: row["path"]))
    for first, second in itertools.pairwise(merged):
        if first["path"] == second["path"]:
            raise PipelineError(
                f"{first['path']} is in more than one part: the shards overlap (same K twice?)"
            )
    check_parts(parts, records, allow_partial)
    tally = Tally(answers={} if submission is not None else None)
    for row in merged:
        tally.add(row)
    summary = Summary(tally, len(merged), output=output, parts=len(parts))
    if submission is not None:
        sample = read_sample(submission)
        files = [ImageFile(Path(row["path"]), "") for row in merged]
        text = submission_text(sample, match_sample(sample, files, submission), tally.answers)
        summary.submission_rows = len(sample.rows)
    else:
        text = header_text(columns, part_format) + rows_text(merged, columns, part_format)
    if output is None:
        stdout.write(text)
        stdout.flush()
    else:
        from realfake.core.fileops import atomic_write_text

        Path(output).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(output), text)
    return summary
