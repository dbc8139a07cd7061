"""Move augmented images into the training set's class folders.

Reads:  --source (default data/augmented_train)/<class folder>/*, as data_augmentation.py wrote it.
Writes: the files into the matching class folder of --dest (default data/train), then removes the
        emptied source folders.

Never overwrites: if a file name already exists in the destination with other content, the stage
stops before moving anything (a file with the same bytes counts as already moved). A killed move
is finished by running the same command again. Refused: a class folder of --source that is a
symbolic link (moving would empty its target) and a --source inside data/raw.

Example:
    python move_augmented_images.py --source data/augmented_train --dest data/train
"""

import argparse
import sys
from pathlib import Path

from realfake.core.cli import add_quiet_argument, report_errors, stage_parser
from realfake.core.config import AUGMENTED_TRAIN_DIR, DATA_DIR
from realfake.data.moving import move_augmented


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        __doc__,
        description="Move augmented images into the matching class folders of the training set.",
    )
    parser.add_argument(
        "--source",
        type=Path,
        default=AUGMENTED_TRAIN_DIR,
        help="folder with augmented class folders (default: %(default)s)",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=DATA_DIR / "train",
        help="training folder with the same class folders (default: %(default)s)",
    )
    add_quiet_argument(parser)
    return parser


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.source.exists() and args.dest.exists() and args.source.resolve() == args.dest.resolve():
        parser.error("--source and --dest must be different folders")
    report = move_augmented(args.source, args.dest, quiet=args.quiet)
    per_class = ", ".join(f"{name} {count:,}" for name, count in sorted(report.moved.items()))
    summary = f"move: moved {sum(report.moved.values()):,} images into {args.dest}"
    if per_class:
        summary += f" ({per_class})"
    if report.left_behind:
        summary += f"; {len(report.left_behind):,} other files stay in {args.source}"
    else:
        summary += f"; removed {args.source}"
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
