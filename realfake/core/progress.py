"""Progress bars: the one tqdm wrapper that library code and stage scripts share."""

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    description: str = "",
    unit: str = "file",
    quiet: bool = False,
) -> Iterator[T]:
    """Wrap a loop in a tqdm bar on stderr, shown only on a terminal and when not quiet.

    `unit` names what one step of the loop is, as the bar counts it ("3/19 rows").
    """
    disable = quiet or not sys.stderr.isatty()
    return iter(tqdm(iterable, total=total, desc=description, unit=unit, disable=disable))
