"""What every stage script shares: the --quiet flag, progress bars and one-line error reporting."""

import argparse
import functools
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

from realfake.errors import PipelineError

T = TypeVar("T")


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    """Add --quiet, which turns progress bars off."""
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (they are also off when stderr is not a terminal)",
    )


def require_at_least_one(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str
) -> None:
    """Stop with a usage error when one of these integer options is below 1 (None is unset)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def progress(
    iterable: Iterable[T], *, total: int | None = None, description: str = "", quiet: bool = False
) -> Iterator[T]:
    """Wrap a loop in a tqdm bar on stderr, shown only on a terminal and when not quiet."""
    disable = quiet or not sys.stderr.isatty()
    return iter(tqdm(iterable, total=total, desc=description, unit="file", disable=disable))


def report_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Turn a PipelineError raised by `main` into `error: ...` on stderr and exit status 1."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except PipelineError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("error: interrupted; run the same command again to finish", file=sys.stderr)
            return 130

    return wrapper
