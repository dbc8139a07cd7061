"""Batch prediction speed against the model alone, on small and on large images, side by side.

Two cases in one run: CIFAKE's test images (32x32 JPEGs, extracted from $CIFAKE_ARCHIVE, half of
--limit from each class) and generated photo-like JPEGs (--large-count of them, 2000x1500 by
default). For each, the reference is `model.predict` on the already-decoded images at the same
batch size (and the inference contract's `probability_fake` on them); against it, the whole of
`predict.py`'s work (`realfake.inference.batch.predict`: listing, reading, decoding overlapped with
the model, provenance, writing rows to a file), with and without the provenance columns. Also shown:
single-thread decode time per image and its share of decode plus model, the most the resident
memory grew during a run, and the largest difference between predict.py's P(Fake) and the one
evaluation computes (its decode with `load_split`, then `probability_fake`) for every image.

The model is a random ResNet101 from `build_model(weights="none")` saved with a card (speed does
not depend on the weights); --model scores with a trained one instead. Rounds alternate the
measurements so that load from other processes hits all alike; the table shows the median of
the rounds, and each ratio is the median of the ratios within a round.

Reads:  $CIFAKE_ARCHIVE (or --archive), its test/ folder.
Writes: a temporary folder (under /dev/shm where it exists), removed at the end.

Example (from the repository root):
    CIFAKE_ARCHIVE=/work/shared/datasets/cifake-train-split.zip \\
        PYTHONPATH=. .venv/bin/python bench/bench_predict.py --limit 2000 --large-count 64
"""

import argparse
import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

import realfake  # noqa: F401  (sets TensorFlow's environment before it is imported)
from realfake.core.cli import add_quiet_argument, report_errors, require_at_least_one
from realfake.core.errors import PipelineError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  CIFAKE_ARCHIVE=cifake-train-split.zip python bench/bench_predict.py "
        "--limit 2000",
    )
    archive = os.environ.get("CIFAKE_ARCHIVE")
    parser.add_argument(
        "--archive",
        type=Path,
        default=Path(archive) if archive else None,
        help="CIFAKE archive with test/REAL and test/FAKE (default: $CIFAKE_ARCHIVE)",
    )
    parser.add_argument(
        "--limit", type=int, default=2000, help="CIFAKE test images, half per class (default: 2000)"
    )
    parser.add_argument(
        "--large-count",
        type=int,
        default=64,
        help="generated large photos; one full batch by default, since predict.py pads the last "
        "batch (default: 64)",
    )
    parser.add_argument("--large-width", type=int, default=2000, help="(default: 2000)")
    parser.add_argument("--large-height", type=int, default=1500, help="(default: 1500)")
    parser.add_argument("--batch-size", type=int, default=64, help="(default: 64)")
    parser.add_argument(
        "--threads", type=int, default=2, help="decoding threads of predict.py (default: 2)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per case (default: 3)")
    parser.add_argument(
        "--model", type=Path, default=None, help="a saved model (default: a random ResNet101)"
    )
    add_quiet_argument(parser)
    return parser


def extract_test_images(archive: Path, destination: Path, limit: int) -> Path:
    """Extract the first limit/2 images (by name) of each class of the archive's test/."""
    if archive is None or not archive.is_file():
        raise PipelineError(
            f"CIFAKE archive not found: {archive} (set CIFAKE_ARCHIVE or --archive)"
        )
    folder = destination / "cifake" / "test"
    with zipfile.ZipFile(archive) as opened:
        for class_name in ("FAKE", "REAL"):
            names = sorted(
                name
                for name in opened.namelist()
                if name.startswith(f"test/{class_name}/") and name.lower().endswith(".jpg")
            )[: limit // 2]
            (folder / class_name).mkdir(parents=True)
            for name in names:
                (folder / class_name / Path(name).name).write_bytes(opened.read(name))
    return folder


def write_large_photos(folder: Path, count: int, width: int, height: int) -> Path:
    """Photo-like JPEGs (smooth gradients with texture, quality 90), each a little different."""
    from PIL import Image

    folder.mkdir(parents=True)
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    columns = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    base = rows * np.float32([0.6, 0.3, 0.1]) + columns * np.float32([0.2, 0.5, 0.3])
    for index in range(count):
        rng = np.random.default_rng(index)
        picture = base + rng.normal(0, 12, base.shape).astype(np.float32)
        pixels = np.clip(np.roll(picture, index * 37, axis=1), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"photo_{index:04d}.jpg", quality=90)
    return folder


def random_model(destination: Path) -> Path:
    """A random ResNet101 at 32x32, saved with a card as training saves it."""
    from realfake.evaluation.benchmarking import save_untrained_classifier

    return save_untrained_classifier(destination)


class MemoryWatch:
    """The most the resident memory grew above its level at the start, sampled every 10 ms."""

    def __init__(self):
        self.start = self.peak = self._resident()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    @staticmethod
    def _resident() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * resource.getpagesize()

    def _watch(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._resident())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def measure_case(name, folder, paths, classifier, args, workdir) -> dict:
    """One row of the table."""
    from realfake.core.images import load_rgb
    from realfake.inference import batch, batch_output
    from realfake.training.pipeline import load_split

    size = classifier.image_size
    if name.startswith("CIFAKE"):
        start = time.perf_counter()
        split = load_split(folder, size, quiet=True)
        decode_seconds = time.perf_counter() - start
        images, evaluated_paths = split.images, [str(path) for path in split.paths]
    else:
        start = time.perf_counter()
        images = np.stack([load_rgb(path, size) for path in paths])
        decode_seconds = time.perf_counter() - start
        evaluated_paths = [str(path) for path in paths]
    count = len(images)
    model = classifier.model
    pixels = images.astype(np.float32)
    model.predict(pixels[: args.batch_size], batch_size=args.batch_size, verbose=0)  # warm-up
    classifier.probability_fake(images[: args.batch_size], args.batch_size)

    def run(provenance: bool, output: Path):
        config = batch.PredictConfig(
            (str(folder),),
            classifier.path,
            output,
            batch_size=args.batch_size,
            provenance=provenance,
            decode_threads=args.threads,
            quiet=True,
        )
        return batch.predict(config, classifier=classifier)

    rates: dict[str, list[float]] = {"predict": [], "contract": [], "with": [], "without": []}
    memory = 0.0
    for _ in range(args.rounds):
        seconds = timed(lambda: model.predict(pixels, batch_size=args.batch_size, verbose=0))
        rates["predict"].append(count / seconds)
        seconds = timed(lambda: classifier.probability_fake(images, args.batch_size))
        rates["contract"].append(count / seconds)
        for key, provenance in (("with", True), ("without", False)):
            output = workdir / f"{key}.csv"
            output.unlink(missing_ok=True)
            with MemoryWatch() as watch:
                seconds = timed(
                    lambda provenance=provenance, output=output: run(provenance, output)
                )
            memory = max(memory, watch.growth_mb)
            rates[key].append(count / seconds)

    evaluated = dict(
        zip(evaluated_paths, classifier.probability_fake(images, args.batch_size), strict=True)
    )
    rows = batch_output.read_output(workdir / "with.csv")[2]
    difference = max(abs(float(row["probability_fake"]) - evaluated[row["path"]]) for row in rows)
    median = {key: statistics.median(values) for key, values in rates.items()}

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(a / b for a, b in zip(rates[top], rates[bottom], strict=True))

    model_seconds = count / median["predict"]
    return {
        "case": name,
        "images": count,
        **median,
        "ratio": ratio("with", "predict"),
        "ratio_contract": ratio("with", "contract"),
        "ratio_without": ratio("without", "predict"),
        "decode_ms": decode_seconds / count * 1e3,
        "decode_share": decode_seconds / (decode_seconds + model_seconds),
        "memory_mb": memory,
        "difference": difference,
    }


@report_errors
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "limit", "large_count", "batch_size", "threads", "rounds")
    from realfake.inference.classifier import load_classifier

    shm = Path("/dev/shm")
    workdir = Path(tempfile.mkdtemp(prefix="bench_predict_", dir=shm if shm.is_dir() else None))
    try:
        cifake = extract_test_images(args.archive, workdir, args.limit)
        large = write_large_photos(
            workdir / "large", args.large_count, args.large_width, args.large_height
        )
        model_path = args.model or random_model(workdir / "model" / "random.h5")
        classifier = load_classifier(model_path)
        results = [
            measure_case("CIFAKE test 32x32", cifake, None, classifier, args, workdir),
            measure_case(
                f"generated {args.large_width}x{args.large_height} JPEG",
                large,
                sorted(large.glob("*.jpg")),
                classifier,
                args,
                workdir,
            ),
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print(
        f"batch size {args.batch_size}, {args.threads} decoding threads, {os.cpu_count()} CPUs, "
        f"median of {args.rounds} rounds; images/s"
    )
    print(
        "| case | images | model.predict | probability_fake | predict.py | predict.py "
        "--no-provenance | predict.py / model.predict | predict.py / probability_fake | "
        "decode ms/image | decode share | "
        "memory growth MB | max abs P(Fake) diff to evaluation |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in results:
        print(
            f"| {row['case']} | {row['images']:,} | {row['predict']:.1f} | {row['contract']:.1f} "
            f"| {row['with']:.1f} | {row['without']:.1f} | {row['ratio']:.2f} "
            f"({row['ratio_without']:.2f} without provenance) | {row['ratio_contract']:.2f} | "
            f"{row['decode_ms']:.2f} | "
            f"{row['decode_share']:.0%} | {row['memory_mb']:.0f} | {row['difference']:.1e} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
