"""The counts of a batch run's rows (verdicts, files that could not be decoded, a submission's
answers) and its one summary line.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Submission answers: 1 for AI-generated, 0 for real.
ANSWERS = {"Fake": 1, "Real": 0}
# Names listed in a summary or an error before "and N more".
MAX_NAMES_SHOWN = 10


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
            text += shown_names(self.folders_skipped)
        if self.tally.failed:
            text += (
                f"; {len(self.tally.failed):,} could not be decoded: "
                f"{shown_names(self.tally.failed)}"
            )
        if self.submission_rows is not None:
            text += f"; submission of {self.submission_rows:,} rows"
        return text + (f" -> {self.output}" if self.output else "")


def shown_names(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:MAX_NAMES_SHOWN])
    more = len(paths) - MAX_NAMES_SHOWN
    return shown + (f" and {more:,} more" if more > 0 else "")
