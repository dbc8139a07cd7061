"""Make randomly transformed copies of the training images, to add to the training set.

Reads:  --source (default data/train) with class folders (Fake, Real or an alias).
Writes: --dest (default data/augmented_train)/<class folder>/aug_<source stem>_<k>.jpg, at each
        source's own size unless --image-size is given; move them into the training set with
        move_augmented_images.py.

Each output's transformation depends only on the seed, its source's path and k, so the result is
the same with any number of workers, and a re-run (also after kill -9) makes only what is missing.

Example:
    python data_augmentation.py --target-per-class 50000 --preview augmentation.png
"""

import argparse
import sys
from pathlib import Path

from realfake.core.cli import add_quiet_argument, report_errors, require_at_least_one, stage_parser
from realfake.core.config import AUGMENTED_TRAIN_DIR, DATA_DIR, SEED
from realfake.data.augmentation import (
    AugmentationSettings,
    augment,
    default_workers,
    plan_augmentation,
    write_preview,
)

DEFAULTS = AugmentationSettings()


def _add_folder_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the folder read and the folder the copies are written to."""
    parser.add_argument(
        "--source",
        type=Path,
        default=DATA_DIR / "train",
        help="folder with class folders to augment (default: %(default)s)",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=AUGMENTED_TRAIN_DIR,
        help="folder the copies are written to, same class folders (default: %(default)s)",
    )


def _add_amount_flags(parser: argparse.ArgumentParser) -> None:
    """The two ways to say how many copies to write, of which at most one is given."""
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--copies",
        type=int,
        help="copies per source image (default: 1 unless --target-per-class is given)",
    )
    amount.add_argument(
        "--target-per-class",
        type=int,
        metavar="N",
        help="top every class up to N images, spreading the copies evenly over its images "
        "(default: off)",
    )


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the seed, the worker processes and the preview sheet."""
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes; the output does not depend on it (default: this machine's cores, "
        "%(default)s)",
    )
    parser.add_argument(
        "--preview",
        type=Path,
        metavar="FILE",
        help="also write a PNG contact sheet of originals beside their copies (default: none)",
    )


def _add_transformation_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the size and the ranges of the random transformations."""
    parser.add_argument(
        "--image-size",
        type=int,
        help="resize to this square size before augmenting (default: each source's own size)",
    )
    parser.add_argument(
        "--rotation-range",
        type=float,
        default=DEFAULTS.rotation_range,
        help="maximum rotation in degrees (default: %(default)s)",
    )
    parser.add_argument(
        "--width-shift-range",
        type=float,
        default=DEFAULTS.width_shift_range,
        help="maximum horizontal shift, fraction of the width (default: %(default)s)",
    )
    parser.add_argument(
        "--height-shift-range",
        type=float,
        default=DEFAULTS.height_shift_range,
        help="maximum vertical shift, fraction of the height (default: %(default)s)",
    )
    parser.add_argument(
        "--shear-range",
        type=float,
        default=DEFAULTS.shear_range,
        help="maximum shear angle in degrees, as Keras counts it (default: %(default)s)",
    )
    parser.add_argument(
        "--zoom-range",
        type=float,
        default=DEFAULTS.zoom_range,
        help="each axis scaled by a factor in [1 - z, 1 + z] (default: %(default)s)",
    )
    parser.add_argument(
        "--no-horizontal-flip",
        dest="horizontal_flip",
        action="store_false",
        help="do not mirror half of the copies (default: mirror)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        __doc__,
        description="Write randomly rotated, shifted, sheared, zoomed and flipped copies of "
        "the training images.",
    )
    _add_folder_flags(parser)
    _add_amount_flags(parser)
    _add_run_flags(parser)
    _add_transformation_flags(parser)
    add_quiet_argument(parser)
    return parser


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.copies is None and args.target_per_class is None:
        args.copies = 1
    if args.copies is not None and args.copies < 0:
        parser.error("--copies must be 0 or more")
    if args.target_per_class is not None and args.target_per_class < 0:
        parser.error("--target-per-class must be 0 or more")
    require_at_least_one(parser, args, "workers", "image_size")
    if (
        min(args.rotation_range, args.width_shift_range, args.height_shift_range) < 0
        or min(args.shear_range, args.zoom_range) < 0
    ):
        parser.error("transformation ranges must be 0 or more")
    if args.zoom_range >= 1:
        parser.error("--zoom-range must be below 1")
    if args.source.resolve() == args.dest.resolve():
        parser.error("--source and --dest must be different folders")

    settings = AugmentationSettings(
        rotation_range=args.rotation_range,
        width_shift_range=args.width_shift_range,
        height_shift_range=args.height_shift_range,
        shear_range=args.shear_range,
        zoom_range=args.zoom_range,
        horizontal_flip=args.horizontal_flip,
        image_size=args.image_size,
    )
    plan = plan_augmentation(
        args.source,
        args.dest,
        copies=args.copies,
        target_per_class=args.target_per_class,
        seed=args.seed,
    )
    if args.preview is not None:
        write_preview(args.preview, args.source, settings, seed=args.seed)
        print(f"preview: {args.preview}")
    report = augment(
        plan, args.dest, settings, seed=args.seed, workers=args.workers, quiet=args.quiet
    )
    per_class = ", ".join(f"{name} {count:,}" for name, count in sorted(report.written.items()))
    print(
        f"augmentation: wrote {sum(report.written.values()):,} images to {args.dest}"
        + (f" ({per_class})" if per_class else "")
        + f"; {report.already_there:,} were already there"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
