"""Generate the synthetic demo archives, in the layouts of the two Kaggle downloads.

Reads:  nothing but the photographs bundled with scikit-learn (no download).
Writes: DEST (default demo/archives)/cifake.zip (train|test/REAL|FAKE/*.jpg, 32x32) and
        DEST/fake_or_real.zip (train/real_images, train/fake_images, unlabelled test/images,
        test/sample_submission.csv; 64x64 PNGs). The images are synthetic stand-ins that exercise
        the pipeline, not the real datasets. The same --seed always gives the same bytes; an
        archive whose bytes would not change is left untouched.

Example:
    python make_demo_data.py --dest demo/archives && \\
        python data_unzipper.py demo/archives/cifake.zip --dest demo/data/raw/cifake
"""

import argparse
import sys
from pathlib import Path

from realfake.core.cli import add_quiet_argument, progress, report_errors, stage_parser
from realfake.core.config import SEED
from realfake.core.fileops import atomic_write_bytes
from realfake.data.archive import write_zip_members
from realfake.data.demo_data import DemoCounts, cifake_members, fake_or_real_members, sample_photos

DEFAULT_DEST = Path("demo") / "archives"


def build_parser() -> argparse.ArgumentParser:
    defaults = DemoCounts()
    parser = stage_parser(__doc__, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        help=f"folder for the two archives (default: {DEFAULT_DEST})",
    )
    parser.add_argument(
        "--seed", type=int, default=SEED, help=f"seed of every random draw (default: {SEED})"
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=defaults.cifake_train,
        help="training images per class in each archive; test sets scale with it "
        f"(default: {defaults.cifake_train})",
    )
    add_quiet_argument(parser)
    return parser


def _write_if_changed(path: Path, members) -> tuple[int, bool]:
    """Build the archive beside `path`; replace `path` only when its bytes differ."""
    temporary = path.with_name(f".{path.name}.new")
    count = write_zip_members(temporary, members)
    data = temporary.read_bytes()
    temporary.unlink()
    if path.is_file() and path.read_bytes() == data:
        return count, False
    atomic_write_bytes(path, data)
    return count, True


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.per_class < 10:
        parser.error("--per-class must be at least 10")
    counts = DemoCounts(
        cifake_train=args.per_class,
        cifake_test=max(2, args.per_class // 5),
        fake_or_real_train=args.per_class,
        fake_or_real_unlabelled_test=max(2, args.per_class // 8),
    )
    photos = sample_photos()
    summaries = []
    for name, members, total in (
        ("cifake.zip", cifake_members, 2 * (counts.cifake_train + counts.cifake_test) + 1),
        (
            "fake_or_real.zip",
            fake_or_real_members,
            2 * counts.fake_or_real_train + counts.fake_or_real_unlabelled_test + 1,
        ),
    ):
        bar = progress(
            members(photos, counts, args.seed), total=total, description=name, quiet=args.quiet
        )
        count, changed = _write_if_changed(args.dest / name, bar)
        summaries.append(f"{args.dest / name} ({count:,} files{'' if changed else ', unchanged'})")
    print(f"wrote demo archives (synthetic stand-ins): {'; '.join(summaries)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
