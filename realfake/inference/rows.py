"""The rows of a batch run: one row per file built from its decoding and its prediction, and the
CSV and JSONL text of rows, written (names escaped, formula-like cells neutralised) and read back
exactly.
"""

import contextlib
import csv
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from realfake.core.errors import PipelineError
from realfake.inference.batch_decoding import Decoded, ExtraColumns
from realfake.inference.classifier import size_notice

# The columns every row has; extra column groups (such as provenance) follow them.
# `notice` is set when the image is far larger than the model's input (inference.size_notice).
BASE_COLUMNS = (
    "path", "probability_fake", "label", "verdict", "width", "height", "notice", "error",
)  # fmt: skip


# Rows ------------------------------------------------------------------------------------------


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
    return csv_line(columns) if output_format == "csv" else ""


def rows_text(rows: Iterable[dict], columns: Sequence[str], output_format: str) -> str:
    """Rows as CSV lines (empty cell for nothing, text that a spreadsheet would run as a
    formula neutralised: `neutralise_cell`) or JSON lines (null for nothing, text as it is)."""
    if output_format == "csv":
        return "".join(
            csv_line(
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


def csv_line(values: Sequence) -> str:
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
