"""Merge split datasets into one train/validation/test tree.

Reads:  SOURCE ... (default: every folder under data/interim), each with
        {train,validation,test}/{Fake,Real} as data_split_d1.py and data_split_d2.py write them.
Writes: DEST (default data)/{train,validation,test}/{Fake,Real}, each file named
        <source>_<original name> and hard-linked to its input (a copy across filesystems), plus
        DEST/merge_report.json with the counts and every group of identical files that sits in
        more than one split (train/test leakage), whose count the summary also gives. The three
        folders are built together and moved into place only when all are complete.

Example:
    python data_merger.py data/interim/cifake data/interim/fake_or_real --dest data
"""

import argparse
import sys
from pathlib import Path

from realfake.core.cli import add_quiet_argument, print_split_summary, report_errors, stage_parser
from realfake.core.config import DATA_DIR, INTERIM_DIR
from realfake.core.errors import PipelineError
from realfake.core.layout import visible_subfolders
from realfake.data.merging import MERGE_REPORT_NAME, merge_splits


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__)
    parser.add_argument(
        "sources",
        type=Path,
        nargs="*",
        metavar="SOURCE",
        help=f"split datasets to merge (default: every folder under {INTERIM_DIR})",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=DATA_DIR,
        help=f"folder that receives train/, validation/ and test/ (default: {DATA_DIR})",
    )
    add_quiet_argument(parser)
    return parser


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sources = args.sources
    if not sources:
        if not INTERIM_DIR.is_dir() or not visible_subfolders(INTERIM_DIR):
            raise PipelineError(
                f"no split datasets under {INTERIM_DIR}; run data_split_d1.py and/or "
                "data_split_d2.py first, or name the sources"
            )
        sources = visible_subfolders(INTERIM_DIR)
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        parser.error("two sources share a folder name; their files could not be told apart")
    result = merge_splits(sources, args.dest, quiet=args.quiet)
    print_split_summary(result, ", ".join(map(str, sources)), args.dest)
    if result.cross_split_groups:
        print(
            f"warning: {result.cross_split_files:,} files in {result.cross_split_groups:,} groups "
            "of identical content sit in different splits (train/test leakage); "
            f"listed in {args.dest / MERGE_REPORT_NAME}; `data_deleter.py --duplicates "
            f"{args.dest}` keeps one copy of each, test's where there is one",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
