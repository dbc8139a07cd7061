"""Cost of robustness: the training augmentation per image, and the robustness report per row.

augment: milliseconds of wall clock and of CPU per image that `augment_for_robustness` adds to
a tf.data pipeline like training's (uint8 array, batches, float cast, prefetch), for JPEG and blur
alone and together at several probabilities, against the same pipeline without it. Compare with a
ResNet101 training step at 32x32, about 10-30 ms per image on these CPUs.

report: seconds per row of `robustness_report` on a labelled folder with a classifier (by default
an untrained ResNet101 with a card, threshold 0.5): the whole report, and apart, the time to make
each perturbed set and to score the clean set, so the overlap of the two shows.

Reads:  --data, a folder with Fake/Real (or alias) sub-folders, for the report (default: random
        images); --model, a saved classifier (default: an untrained one in a temporary folder).
Writes: nothing but that temporary folder, removed at the end.

Example:
    python bench/bench_robustness.py --data /tmp/cifake/train --per-class 500
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import realfake  # noqa: E402, F401  (sets TensorFlow's environment before it is imported)
from realfake.core.config import SEED  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SETTINGS = [  # (JPEG probability, blur probability, down-scale probability)
    (0.0, 0.0, 0.0),
    (1.0, 0.0, 0.0),
    (0.0, 1.0, 0.0),
    (0.0, 0.0, 1.0),
    (1.0, 1.0, 1.0),
    (0.5, 0.5, 0.5),
    (0.3, 0.3, 0.3),
    (0.1, 0.1, 0.0),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("augment", "report", "both"), default="both")
    parser.add_argument("--data", type=Path, help="labelled folder (default: random images)")
    parser.add_argument("--model", type=Path, help="saved classifier (default: untrained)")
    parser.add_argument(
        "--per-class", type=int, default=500, help="images per class (default: %(default)s)"
    )
    parser.add_argument(
        "--images", type=int, default=4096, help="images per augment pass (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per batch (default: %(default)s)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="passes per setting, best kept (default: %(default)s)"
    )
    return parser


def random_images(count: int, side: int = 32):
    import numpy as np

    rng = np.random.default_rng(SEED)
    return rng.integers(0, 256, (count, side, side, 3), dtype=np.uint8)


def seconds(function) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_augment(images, batch_size: int, rounds: int) -> list[dict]:
    import numpy as np
    import tensorflow as tf

    from realfake.training.batch_augmentation import augment_for_robustness

    labels = np.zeros(len(images), np.int64)

    def pipeline(jpeg: float, blur: float, downscale: float):
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
        if jpeg or blur or downscale:
            dataset = dataset.enumerate().map(
                lambda index, batch: (
                    augment_for_robustness(
                        batch[0],
                        tf.stack([SEED, index]),
                        jpeg,
                        blur,
                        downscale_probability=downscale,
                    ),
                    batch[1],
                ),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        return dataset.map(
            lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE
        ).prefetch(tf.data.AUTOTUNE)

    def one_pass(dataset) -> None:
        for _ in dataset:
            pass

    results = []
    for jpeg, blur, downscale in SETTINGS:
        # Built once, as training builds it once per run: tracing the map is not counted.
        dataset = pipeline(jpeg, blur, downscale)
        one_pass(dataset)
        best = min(seconds(lambda d=dataset: one_pass(d)) for _ in range(rounds))
        results.append(
            {
                "jpeg_probability": jpeg,
                "blur_probability": blur,
                "downscale_probability": downscale,
                "wall_ms_per_image": 1000 * best[0] / len(images),
                "cpu_ms_per_image": 1000 * best[1] / len(images),
            }
        )
    baseline = results[0]
    for row in results:
        row["added_wall_ms_per_image"] = row["wall_ms_per_image"] - baseline["wall_ms_per_image"]
        row["added_cpu_ms_per_image"] = row["cpu_ms_per_image"] - baseline["cpu_ms_per_image"]
    return results


def untrained_model(folder: Path) -> Path:
    from realfake.evaluation.benchmarking import save_untrained_classifier

    return save_untrained_classifier(folder / "untrained.h5")


def bench_report(args, folder: Path) -> dict:
    import numpy as np

    from realfake.evaluation.perturbations import perturb, perturbations
    from realfake.evaluation.robustness import robustness_report
    from realfake.inference.classifier import load_classifier
    from realfake.training.pipeline import load_split

    classifier = load_classifier(args.model or untrained_model(folder))
    if args.data is not None:
        split = load_split(args.data, classifier.image_size, args.per_class, quiet=True)
        images, labels = split.images, split.labels
    else:
        images = random_images(2 * args.per_class, classifier.image_size)
        labels = np.repeat([0, 1], args.per_class)
    classifier.probability_fake(images[: args.batch_size], args.batch_size)  # compiles once
    rows = perturbations(classifier.image_size)
    report_wall, report_cpu = seconds(
        lambda: robustness_report(classifier, images, labels, args.batch_size, quiet=True)
    )
    scoring_wall, _ = seconds(lambda: classifier.probability_fake(images, args.batch_size))
    making = {row.describe(): seconds(lambda r=row: perturb(images, r))[0] for row in rows}
    return {
        "images": int(len(images)),
        "rows": len(rows),
        "report_seconds": report_wall,
        "report_cpu_seconds": report_cpu,
        "seconds_per_row": report_wall / len(rows),
        "scoring_seconds_per_set": scoring_wall,
        "making_seconds_per_set": making,
        "making_seconds_total": sum(making.values()),
    }


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    results = {}
    if args.part in ("augment", "both"):
        results["augment"] = bench_augment(random_images(args.images), args.batch_size, args.rounds)
        print("JPEG p  blur p  down p  wall ms/image (added)  CPU ms/image (added)")
        for row in results["augment"]:
            print(
                f"{row['jpeg_probability']:>6.1f}  {row['blur_probability']:>6.1f}  "
                f"{row['downscale_probability']:>6.1f}  "
                f"{row['wall_ms_per_image']:>8.3f} ({row['added_wall_ms_per_image']:+.3f})  "
                f"{row['cpu_ms_per_image']:>8.3f} ({row['added_cpu_ms_per_image']:+.3f})"
            )
    if args.part in ("report", "both"):
        with tempfile.TemporaryDirectory() as folder:
            report = bench_report(args, Path(folder))
        results["report"] = report
        print(
            f"report: {report['rows']} rows on {report['images']:,} images in "
            f"{report['report_seconds']:.1f} s ({report['seconds_per_row']:.2f} s per row); "
            f"scoring one set {report['scoring_seconds_per_set']:.2f} s, making all perturbed "
            f"sets {report['making_seconds_total']:.2f} s"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
