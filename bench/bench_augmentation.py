"""Images per second of the project's augmentation against Keras's ImageDataGenerator, side by side.

Both make one augmented JPEG per source image with the same transformation ranges (rotation 20,
shifts 0.2, shear 0.2, zoom 0.2, horizontal flip, nearest fill) at the same resolution, writing
files into the same work folder. Keras gets the images already decoded in memory (its
`flow(x, batch_size=1, save_to_dir=...)` way); the project's stage reads and decodes the files
itself; a second Keras row also reads the files, with Keras's `load_img`. Rounds alternate between
the methods so that load from other processes hits all alike; the table shows each one's best
round. The issue's speed target (5x) is against the first row, Keras with the images in memory.

Each method is shown with its images per second (wall clock) and its CPU time per image (process
CPU time of the method and its worker processes, per output image, best round), each as a ratio to
both Keras rows. On a machine shared with other work, wall-clock rates follow how much CPU the
other processes leave; the CPU time per image does not depend on that as much. Keras runs in one
process, the project's stage in --workers processes, so on an otherwise idle machine with that
many cores the wall-clock ratio approaches the CPU ratio times the number of workers.

Reads:  CIFAKE images from --archive (default: $CIFAKE_SAMPLE_ARCHIVE), or generated images.
Writes: only a temporary work folder, removed at the end.

Example:
    CIFAKE_SAMPLE_ARCHIVE=../shared/datasets/cifake-sample.zip python bench/bench_augmentation.py
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from realfake.core.cli import report_errors, require_at_least_one
from realfake.core.config import SEED
from realfake.core.images import is_image_name, load_rgb
from realfake.core.layout import canonical_class
from realfake.data.augmentation import (
    AugmentationSettings,
    augment,
    default_workers,
    plan_augmentation,
)

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
        "--images", type=int, default=1000, help="source images per round (default: %(default)s)"
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
    # One measurement in a fresh process, so that neither method pays for the other's imports
    # (forking workers from a process that holds TensorFlow is slower).
    parser.add_argument("--run", choices=("memory", "files", "project"), help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    return parser


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (the workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def prepare_sources(archive: Path | None, count: int, image_size: int | None, folder: Path):
    """Write `count` source images into folder/{Fake,Real}; return their (height, width)."""
    import numpy as np
    from PIL import Image

    if archive is not None:
        with zipfile.ZipFile(archive) as zipped:
            names = sorted(
                name
                for name in zipped.namelist()
                if is_image_name(Path(name)) and canonical_class(Path(name).parent.name)
            )
            if not names:
                raise SystemExit(f"error: {archive} holds no images in class folders")
            # Spread over the archive; past its size, images repeat under new names.
            step = len(names) / count
            for index in range(count):
                name = names[int(index * step) if count <= len(names) else index % len(names)]
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
    return load_rgb(next(folder.rglob("*.jpg"))).shape[:2]


def load_sources(folder: Path):
    """The source images decoded into one float32 array, as Keras's flow takes them."""
    import numpy as np

    return np.stack([load_rgb(path) for path in sorted(folder.rglob("*.jpg"))]).astype("float32")


def run_keras(images, output: Path, source: Path | None = None) -> tuple[float, float]:
    """Seconds for Keras to augment and save each image once, as the original project did.

    With `source`, the timing also includes reading the images from those files with Keras's
    own loader, which the project's stage has to do as well.
    """
    import numpy as np
    from keras.src.legacy.preprocessing.image import ImageDataGenerator
    from keras.utils import img_to_array, load_img

    output.mkdir(parents=True)
    start, start_cpu = time.perf_counter(), cpu_seconds()
    if source is not None:
        paths = sorted(source.rglob("*.jpg"))
        images = np.stack([img_to_array(load_img(path)) for path in paths])
    loading, loading_cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    generator = ImageDataGenerator(
        rotation_range=20,
        width_shift_range=0.2,
        height_shift_range=0.2,
        shear_range=0.2,
        zoom_range=0.2,
        horizontal_flip=True,
        fill_mode="nearest",
    )
    start, start_cpu = time.perf_counter(), cpu_seconds()
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
    elapsed = time.perf_counter() - start + loading
    cpu = cpu_seconds() - start_cpu + loading_cpu
    written = sum(1 for _ in output.iterdir())
    if written != len(images):
        raise SystemExit(f"error: Keras wrote {written:,} files, expected {len(images):,}")
    return elapsed, cpu


def run_project(source: Path, output: Path, workers: int, count: int) -> tuple[float, float]:
    """Seconds for the project's stage (planning, decoding, augmenting, writing) at copies=1."""
    start, start_cpu = time.perf_counter(), cpu_seconds()
    plan = plan_augmentation(source, output, copies=1, seed=SEED)
    report = augment(plan, output, AugmentationSettings(), workers=workers, quiet=True)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
    if sum(report.written.values()) != count:
        raise SystemExit(f"error: wrote {sum(report.written.values()):,}, expected {count:,}")
    return elapsed, cpu


def measure(args: argparse.Namespace, method: str, output: Path) -> tuple[float, float]:
    """Run one measurement in a child process; return its (wall, CPU) seconds."""
    command = [
        sys.executable,
        __file__,
        "--run",
        method,
        "--work-dir",
        str(args.work_dir),
        "--output",
        str(output),
        "--workers",
        str(args.workers),
        "--images",
        str(args.images),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"error: the {method} run failed: {result.stderr.strip()[-500:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return measured["wall"], measured["cpu"]


def run_one(args: argparse.Namespace) -> int:
    """The child's side of `measure`: sources in work-dir/source, output in --output."""
    source = args.work_dir / "source"
    if args.run == "memory":
        wall, cpu = run_keras(load_sources(source), args.output)
    elif args.run == "files":
        wall, cpu = run_keras(None, args.output, source)
    else:
        wall, cpu = run_project(source, args.output, args.workers, args.images)
    print(json.dumps({"wall": wall, "cpu": cpu}))
    return 0


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "images", "rounds", "workers")
    if args.run is not None:
        return run_one(args)
    if args.archive is not None and not Path(args.archive).is_file():
        parser.error(f"--archive {args.archive} does not exist")

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench_augmentation_", dir=args.work_dir))
    try:
        height, width = prepare_sources(args.archive, args.images, args.image_size, work / "source")
        child = argparse.Namespace(**{**vars(args), "work_dir": work})
        runs: dict[str, list[tuple[float, float]]] = {"memory": [], "files": [], "project": []}
        for round_index in range(args.rounds):
            for method in runs:
                runs[method].append(measure(child, method, work / f"{method}_{round_index}"))
        rates = {name: args.images / min(wall for wall, _ in found) for name, found in runs.items()}
        cpu = {name: min(used for _, used in found) / args.images for name, found in runs.items()}
        source = args.archive.name if args.archive else "generated images"
        print(
            f"{args.images:,} images of {height}x{width} from {source}; best of {args.rounds} "
            f"alternating rounds; output under {args.work_dir}; load average {load_before:.1f} "
            f"before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs"
        )
        rows = [
            ("Keras flow(save_to_dir), images in memory", "memory"),
            ("Keras load_img + flow(save_to_dir), files", "files"),
            (f"realfake augmentation, files, {args.workers} worker(s)", "project"),
        ]
        print(
            f"{'method':<50} {'images/s':>9} {'vs memory':>10} {'vs files':>9}"
            f" {'CPU us/image':>13} {'vs memory':>10} {'vs files':>9}"
        )
        for label, name in rows:
            print(
                f"{label:<50} {rates[name]:>9,.0f} {rates[name] / rates['memory']:>9.1f}x "
                f"{rates[name] / rates['files']:>8.1f}x {cpu[name] * 1e6:>13,.0f} "
                f"{cpu['memory'] / cpu[name]:>9.1f}x {cpu['files'] / cpu[name]:>8.1f}x"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
