"""Split the Fake-or-Real Competition Dataset (dataset 1) into train, validation and test.

Reads:  SOURCE (default data/raw/fake_or_real) laid out as the competition's archive:
        train/real_images and train/fake_images (class folders recognised by alias,
        case-insensitively, also under one wrapping folder). The unlabelled test/images folder
        and test/sample_submission.csv have no classes, so they are ignored (and the summary
        says so).
Writes: DEST (default data/interim/fake_or_real)/{train,validation,test}/{Fake,Real}, stratified
        by --fractions. Files are hard links to the raw ones (copies across filesystems); the raw
        data is never changed. Non-image files are skipped and counted; undecodable images are
        left out and named.

Example:
    python data_split_d1.py --source data/raw/fake_or_real --fractions 0.70 0.15 0.15
"""

import argparse
import math
import sys
from pathlib import Path

from realfake.core.cli import (
    add_quiet_argument,
    add_workers_argument,
    print_split_summary,
    report_errors,
    require_at_least_one,
    stage_parser,
)
from realfake.core.config import FAKE_OR_REAL_RAW_DIR, FAKE_OR_REAL_SPLIT_DIR, SEED
from realfake.data.splitting import split_fake_or_real

DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "--source",
        type=Path,
        default=FAKE_OR_REAL_RAW_DIR,
        help=f"the extracted Fake-or-Real archive (default: {FAKE_OR_REAL_RAW_DIR})",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=FAKE_OR_REAL_SPLIT_DIR,
        help=f"folder to write the split into (default: {FAKE_OR_REAL_SPLIT_DIR})",
    )
    parser.add_argument(
        "--fractions",
        type=float,
        nargs=3,
        metavar=("TRAIN", "VALIDATION", "TEST"),
        default=list(DEFAULT_FRACTIONS),
        help="shares of each class for train, validation and test, summing to 1 "
        f"(default: {' '.join(f'{fraction:g}' for fraction in DEFAULT_FRACTIONS)})",
    )
    parser.add_argument(
        "--seed", type=int, default=SEED, help=f"seed of the shuffle (default: {SEED})"
    )
    add_workers_argument(parser)
    add_quiet_argument(parser)
    return parser


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "workers")
    if any(fraction < 0 for fraction in args.fractions) or args.fractions[0] <= 0:
        parser.error("--fractions must not be negative, and the train share must be positive")
    if not math.isclose(sum(args.fractions), 1.0, abs_tol=1e-6):
        parser.error(f"--fractions must sum to 1, not {sum(args.fractions):g}")
    result = split_fake_or_real(
        args.source,
        args.dest,
        fractions=args.fractions,
        seed=args.seed,
        workers=args.workers,
        quiet=args.quiet,
    )
    print_split_summary(result, args.source, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
