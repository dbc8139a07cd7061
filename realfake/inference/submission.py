"""Competition submissions: a sample submission read, its ids matched to the images scored, and
its rows written back with each answer filled in (1 for Fake, 0 for Real).
"""

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from realfake.core.errors import PipelineError
from realfake.inference.batch_files import ImageFile, path_text
from realfake.inference.batch_summary import shown_names
from realfake.inference.rows import csv_line


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
            f"paths given: {shown_names(missing)}"
        )
    if ambiguous:
        raise PipelineError(
            f"{len(ambiguous):,} ids of the sample submission {source} match more than one "
            f"image: {shown_names(ambiguous)}"
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
            f"{shown_names(failed)}"
        )
    lines = [csv_line(sample.columns)]
    for row in sample.rows:
        filled = list(row)
        filled[sample.answer_index] = str(answers[matched[row[0]]])
        lines.append(csv_line(filled))
    return "".join(lines)
