"""What every stage script shares: its parser, the --quiet and --workers flags, progress bars,
the split stages' summary and one-line error reporting."""

import argparse
import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from realfake.core.config import SPLITS
from realfake.core.errors import NO_ROOM, PipelineError
from realfake.core.progress import progress  # noqa: F401  (scripts and benches import it from here too)

if TYPE_CHECKING:  # the splitting module loads Pillow, which --help of other stages never needs
    from realfake.data.splitting import SplitResult

_MAX_NAMES_SHOWN = 50


def stage_parser(docstring: str, description: str | None = None) -> argparse.ArgumentParser:
    """A parser whose --help ends with the example from the script's docstring.

    The example is the docstring's paragraph that starts with "Example:", shown as written;
    `description` defaults to the docstring's first paragraph.
    """
    paragraphs = docstring.strip().split("\n\n")
    examples = [p for p in paragraphs if p.lstrip().lower().startswith("example")]
    return argparse.ArgumentParser(
        description=description or paragraphs[0],
        epilog="\n\n".join(examples) or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    """Add --quiet, which turns progress bars off."""
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars (they are also off when stderr is not a terminal)",
    )


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """Add --verbose, which keeps TensorFlow's start-up and log lines (read by `realfake`'s
    import, before TensorFlow loads; see `realfake.quiet_tensorflow`)."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show TensorFlow's start-up and log lines (hidden by default)",
    )


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    """Add --workers, the number of processes that check images decode."""
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that check every image decodes (default: one per CPU)",
    )


def require_at_least_one(
    parser: argparse.ArgumentParser, args: argparse.Namespace, *names: str
) -> None:
    """Stop with a usage error when one of these integer options is below 1 (None is unset)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")


def print_split_summary(result: "SplitResult", source: object, destination: object) -> None:
    """Print a split or merge's notes and undecodable files on stderr, then the one summary line
    on stdout."""
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.undecodable:
        print(
            f"warning: left out {len(result.undecodable):,} files that are not decodable images: "
            + ", ".join(str(path) for path in result.undecodable[:_MAX_NAMES_SHOWN])
            + (
                f" and {len(result.undecodable) - _MAX_NAMES_SHOWN:,} more"
                if len(result.undecodable) > _MAX_NAMES_SHOWN
                else ""
            ),
            file=sys.stderr,
        )
    parts = ", ".join(
        f"{split} {sum(result.counts[split].values()):,} "
        f"({', '.join(f'{name} {count:,}' for name, count in result.counts[split].items())})"
        for split in SPLITS
    )
    verb = "already done" if result.already_done else "wrote"
    print(
        f"{verb}: {result.total:,} images from {source} in {destination}: {parts}; "
        f"skipped {result.skipped:,} non-image files, left out {len(result.undecodable):,} "
        "undecodable"
    )


def report_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Turn a PipelineError raised by `main` into `error: ...` on stderr and exit status 1,
    Ctrl-C into a one-line message and exit status 130, a write with no room left (a full disk,
    `> /dev/full`) into one line and status 1, and a closed standard output (`| head`) into a
    quiet end with the status of a process ended by SIGPIPE, 141."""

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
        except BrokenPipeError:
            _silence_stdout()
            return 128 + signal.SIGPIPE
        except OSError as error:
            if error.errno not in NO_ROOM:
                raise
            _silence_stdout()  # what stdout still buffers would fail again at exit
            where = f" {error.filename}" if error.filename else ""
            print(f"error: cannot write{where}: {error.strerror}", file=sys.stderr)
            return 1

    return wrapper


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that Python's own flush at exit does not fail
    again on the closed pipe (the Python documentation's advice for SIGPIPE)."""
    with contextlib.suppress(OSError, ValueError):  # ValueError: no file descriptor (a test's)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
