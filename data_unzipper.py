"""Extract a dataset archive (a Kaggle `archive.zip`) into data/raw/, checking every entry first.

Reads:  a .zip file.
Writes: DEST (default data/raw/<archive name without .zip>), exactly as the archive lays it out;
        it appears only once complete, so a killed run can simply be run again.

Refused with a one-line error, before anything is written: a missing file, something that is not
a zip, entries with absolute paths or '..', symbolic links, encrypted entries, entries nested
more than 100 folders deep, archives that would expand beyond --max-total-gib or --max-ratio.
Entries are CRC-checked while extracting.

Example:
    python data_unzipper.py ~/Downloads/archive.zip --dest data/raw/cifake
"""

import argparse
import sys
from pathlib import Path

from realfake.core.cli import add_quiet_argument, report_errors, stage_parser
from realfake.core.config import RAW_DIR
from realfake.data.archive import DEFAULT_MAX_RATIO, DEFAULT_MAX_TOTAL_GIB, unzip_archive


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument("archive", type=Path, help="the .zip file to extract")
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        help=f"folder to extract into (default: {RAW_DIR}/<archive name without .zip>)",
    )
    parser.add_argument(
        "--max-total-gib",
        type=float,
        default=DEFAULT_MAX_TOTAL_GIB,
        help="refuse archives that expand to more than this many GiB "
        f"(default: {DEFAULT_MAX_TOTAL_GIB:g})",
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=DEFAULT_MAX_RATIO,
        help="refuse entries of 1 MiB or more, and archives, that expand more than this many "
        f"times their compressed size (default: {DEFAULT_MAX_RATIO:g})",
    )
    add_quiet_argument(parser)
    return parser


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_total_gib <= 0 or args.max_ratio <= 0:
        parser.error("--max-total-gib and --max-ratio must be positive")
    destination = args.dest or RAW_DIR / args.archive.name.removesuffix(".zip")
    result = unzip_archive(
        args.archive,
        destination,
        max_total_bytes=int(args.max_total_gib * 2**30),
        max_ratio=args.max_ratio,
        quiet=args.quiet,
    )
    verb = "already extracted" if result.already_done else "extracted"
    print(
        f"{verb} {result.files:,} files ({result.total_bytes:,} bytes) "
        f"from {args.archive} into {destination}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
