"""Images per second of the project's augmentation against Keras's ImageDataGenerator, side by side.

Both make one augmented JPEG per source image with the same transformation ranges (rotation 20,
shifts 0.2, shear 0.2, zoom 0.2, horizontal flip, nearest fill) at the same resolution, writing
files into the same work folder. Keras gets the images already decoded in memory (its
`flow(x, batch_size=1, save_to_dir=...)` way); the project's stage reads and decodes the files
itself. Rounds alternate between the two so that load from other processes hits both alike; the
table shows each one's median.

Reads:  CIFAKE images from --archive (default: $CIFAKE_SAMPLE_ARCHIVE), or generated images.
Writes: only a temporary work folder, removed at the end.

Example:
    CIFAKE_SAMPLE_ARCHIVE=../shared/datasets/cifake-sample.zip python bench/bench_augmentation.py
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from realfake.augmentation import (  # noqa: E402  (after the path set-up above)
    AugmentationSettings,
    augment,
    default_workers,
    plan_augmentation,
)
from realfake.cli import report_errors  # noqa: E402
from realfake.config import SEED  # noqa: E402
from realfake.images import is_image_name, load_rgb  # noqa: E402
from realfake.layout import canonical_class  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--archive",
        type=Path,
        default=os.environ.get("CIFAKE_SAMPLE_ARCHIVE"),
        help="zip of CIFAKE images (default: $CIFAKE_SAMPLE_ARCHIVE; generated images if unset)",
    )
    parser.add_argument(
        "--images", type=int, default=2000, help="source images per round (default: %(default)s)"
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="resize the sources to this square size first (default: their own size)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds per method (default: %(default)s)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="processes for the project's stage (default: %(default)s)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help="where the temporary folders go (default: %(default)s)",
    )
    return parser


def prepare_sources(archive: Path | None, count: int, image_size: int | None, folder: Path):
    """Write `count` source images into folder/{Fake,Real}; return them decoded as an array."""
    import numpy as np
    from PIL import Image

    arrays = []
    if archive is not None:
        with zipfile.ZipFile(archive) as zipped:
            names = sorted(
                name
                for name in zipped.namelist()
                if is_image_name(Path(name)) and canonical_class(Path(name).parent.name)
            )
            if len(names) < count:
                raise SystemExit(f"error: {archive} holds only {len(names):,} images")
            step = len(names) / count
            for index in range(count):
                name = names[int(index * step)]
                target = folder / canonical_class(Path(name).parent.name) / f"{index:06d}.jpg"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zipped.read(name))
    else:
        rng = np.random.default_rng(SEED)
        for index in range(count):
            # Smooth random images, so JPEG sizes resemble photographs rather than noise.
            small = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            image = Image.fromarray(small).resize((32, 32), Image.Resampling.BICUBIC)
            target = folder / ("Fake", "Real")[index % 2] / f"{index:06d}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target, quality=95)
    if image_size is not None:
        for path in sorted(folder.rglob("*.jpg")):
            Image.fromarray(load_rgb(path, image_size)).save(path, quality=95)
    for path in sorted(folder.rglob("*.jpg")):
        arrays.append(load_rgb(path))
    return np.stack(arrays).astype("float32")


def run_keras(images, output: Path) -> float:
    """Seconds for Keras to augment and save each image once, as the original project did."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    output.mkdir(parents=True)
    generator = ImageDataGenerator(
        rotation_range=20,
        width_shift_range=0.2,
        height_shift_range=0.2,
        shear_range=0.2,
        zoom_range=0.2,
        horizontal_flip=True,
        fill_mode="nearest",
    )
    start = time.perf_counter()
    flow = generator.flow(
        images,
        batch_size=1,
        shuffle=False,
        seed=SEED,
        save_to_dir=str(output),
        save_format="jpeg",
    )
    for _ in range(len(images)):
        next(flow)
    elapsed = time.perf_counter() - start
    written = sum(1 for _ in output.iterdir())
    if written != len(images):
        raise SystemExit(f"error: Keras wrote {written:,} files, expected {len(images):,}")
    return elapsed


def run_project(source: Path, output: Path, workers: int, count: int) -> float:
    """Seconds for the project's stage (planning, decoding, augmenting, writing) at copies=1."""
    start = time.perf_counter()
    plan = plan_augmentation(source, output, copies=1, seed=SEED)
    report = augment(plan, output, AugmentationSettings(), workers=workers, quiet=True)
    elapsed = time.perf_counter() - start
    if sum(report.written.values()) != count:
        raise SystemExit(f"error: wrote {sum(report.written.values()):,}, expected {count:,}")
    return elapsed


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.images < 1 or args.rounds < 1 or args.workers < 1:
        parser.error("--images, --rounds and --workers must be at least 1")
    if args.archive is not None and not Path(args.archive).is_file():
        parser.error(f"--archive {args.archive} does not exist")

    work = Path(tempfile.mkdtemp(prefix="bench_augmentation_", dir=args.work_dir))
    try:
        images = prepare_sources(args.archive, args.images, args.image_size, work / "source")
        height, width = images.shape[1:3]
        keras_times, project_times = [], []
        for round_index in range(args.rounds):
            keras_times.append(run_keras(images, work / f"keras_{round_index}"))
            project_times.append(
                run_project(
                    work / "source", work / f"project_{round_index}", args.workers, args.images
                )
            )
        keras_rate = args.images / statistics.median(keras_times)
        project_rate = args.images / statistics.median(project_times)
        source = args.archive.name if args.archive else "generated images"
        print(
            f"{args.images:,} images of {height}x{width} from {source}, {args.rounds} rounds "
            f"each, median, output in {args.work_dir}"
        )
        print(f"{'method':<44} {'images/s':>9} {'ratio':>6}")
        print(f"{'Keras ImageDataGenerator.flow(save_to_dir)':<44} {keras_rate:>9,.0f} {1:>6.1f}")
        label = f"realfake augmentation, {args.workers} worker(s)"
        print(f"{label:<44} {project_rate:>9,.0f} {project_rate / keras_rate:>6.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
