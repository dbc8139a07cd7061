"""The output files of a batch run: rows written to a locked partial file that a killed run
continues from, moved into place when complete; the record a shard's run leaves beside its
output; and the merge of shard outputs, checked against those records, into one run's rows.
"""

import contextlib
import heapq
import itertools
import json
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from realfake.core.errors import PipelineError
from realfake.inference.batch_files import ImageFile
from realfake.inference.batch_summary import Summary, Tally
from realfake.inference.rows import (
    BASE_COLUMNS,
    detect_format,
    header_text,
    parse_lines,
    rows_text,
    split_records,
)
from realfake.inference.submission import match_sample, read_sample, submission_text

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


def write_settings(output: Path, settings: dict) -> None:
    from realfake.core.fileops import atomic_write_text

    atomic_write_text(settings_path(output), json.dumps(settings, indent=2, sort_keys=True) + "\n")


def shard_record_path(output: Path) -> Path:
    """The record a --shard run leaves beside its output: which shard, and the settings (model,
    threshold, columns...) that decided its rows, for --merge to check the parts against."""
    return output.with_name(f"{output.name}.shard.json")


# Settings that may differ between the parts of one run: where each machine mounts the data, and
# how many images it scores at a time.
_LOCAL_SETTINGS = ("paths", "batch_size", "shard")


def write_shard_record(output: Path, settings: dict, rows: int) -> None:
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


def finish_output(partial: Path, output: Path, text: str | None = None) -> None:
    """Move the finished rows (or `text` made from them) into place, then drop the leftovers."""
    from realfake.core.fileops import atomic_write_text

    if text is None:
        os.replace(partial, output)
    else:
        atomic_write_text(output, text)
        partial.unlink()
    settings_path(output).unlink(missing_ok=True)


@contextlib.contextmanager
def locked_partial(output: Path) -> Iterator[None]:
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
