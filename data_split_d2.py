"""Split CIFAKE (dataset 2) into train, validation and test.

Reads:  SOURCE (default data/raw/cifake) laid out as Kaggle's CIFAKE archive: train/{REAL,FAKE}
        and test/{REAL,FAKE}, also under one wrapping folder; class folders are recognised by
        alias, case-insensitively.
Writes: DEST (default data/interim/cifake)/{train,validation,test}/{Fake,Real}: a stratified
        --validation-fraction of train/ becomes validation, test/ is kept as test. Files are hard
        links to the raw ones (copies across filesystems); the raw data is never changed.
        Non-image files are skipped and counted; undecodable images are left out and named.

Example:
    python data_split_d2.py --source data/raw/cifake --dest data/interim/cifake --seed 42
"""

import argparse
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
from realfake.core.config import CIFAKE_RAW_DIR, CIFAKE_SPLIT_DIR, SEED
from realfake.data.splitting import split_cifake


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "--source",
        type=Path,
        default=CIFAKE_RAW_DIR,
        help=f"the extracted CIFAKE archive (default: {CIFAKE_RAW_DIR})",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=CIFAKE_SPLIT_DIR,
        help=f"folder to write the split into (default: {CIFAKE_SPLIT_DIR})",
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.2,
        help="share of each class of train/ moved to validation (default: 0.2)",
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
    if not 0 < args.validation_fraction < 1:
        parser.error("--validation-fraction must be between 0 and 1")
    result = split_cifake(
        args.source,
        args.dest,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        workers=args.workers,
        quiet=args.quiet,
    )
    print_split_summary(result, args.source, args.dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
