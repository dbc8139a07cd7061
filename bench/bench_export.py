"""Every export against the .h5 on the same images, side by side: P(Fake) differences, accuracy at
the card's threshold, file sizes, and onnxruntime's throughput against TensorFlow's.

Exports the model to each format (SavedModel, ONNX, TFLite float32, dynamic-range and float16) with
`realfake.inference.export.export_model` into a temporary folder, decodes the first --limit images
of a labelled folder (half per class, `load_rgb` at the model's size, as predict.py decodes them),
and scores them through each: the .h5 and the ONNX export through the inference contract
(`load_classifier(...).class_probabilities`, what predict.py calls), SavedModel and TFLite through
their pixel signature. Throughput is that contract's call on the decoded images at --batch-size, for
the .h5 on TensorFlow and the ONNX export on onnxruntime, in alternating rounds; the table shows the
median, and the ratio is the median of the per-round ratios.

Reads:  --model (.h5 with its card), --data (a folder with Fake/ and Real/).
Writes: a temporary folder, removed at the end.

Example (from the repository root):
    PYTHONPATH=. .venv/bin/python bench/bench_export.py --model models/m.h5 \\
        --data data/interim/cifake/test --limit 2000
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import realfake  # noqa: F401  (sets TensorFlow's environment before it is imported)
from realfake.core.cli import report_errors, require_at_least_one
from realfake.core.errors import PipelineError

VARIANTS = (
    ("savedmodel", "none"),
    ("onnx", "none"),
    ("tflite", "none"),
    ("tflite", "dynamic-range"),
    ("tflite", "float16"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="the .h5 with its card (required)"
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="labelled folder with Fake/ and Real/ (required)"
    )
    parser.add_argument(
        "--limit", type=int, default=2000, help="images, half from each class (default: 2000)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="images per model call (default: 64)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating throughput rounds (default: 3)"
    )
    return parser


def labelled_images(folder: Path, limit: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The first limit/2 images (by name) of each class, decoded; labels 1 for Fake."""
    from realfake.core.images import list_images, load_rgb
    from realfake.core.layout import class_folders

    folders = class_folders(folder)
    if set(folders) != {"Fake", "Real"}:
        raise PipelineError(f"{folder} needs Fake/ and Real/ folders")
    pixels, labels = [], []
    for class_name in ("Fake", "Real"):
        for path in list_images(folders[class_name])[: limit // 2]:
            pixels.append(load_rgb(path, image_size))
            labels.append(1 if class_name == "Fake" else 0)
    return np.stack(pixels), np.array(labels)


def accuracy(probability_fake: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    return float(np.mean((probability_fake >= threshold) == (labels == 1)))


def throughput(classifier, pixels: np.ndarray, batch_size: int) -> float:
    """Images per second of the contract's class_probabilities over all of `pixels`."""
    start = time.perf_counter()
    classifier.class_probabilities(pixels, batch_size)
    return len(pixels) / (time.perf_counter() - start)


@report_errors
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "limit", "batch_size", "rounds")
    from realfake.inference.classifier import load_classifier
    from realfake.inference.export import ExportedModel, ExportSettings, export_model

    source = load_classifier(args.model)
    pixels, labels = labelled_images(args.data, args.limit, source.image_size)
    threshold = source.threshold
    reference = source.probability_fake(pixels, args.batch_size)
    base_accuracy = accuracy(reference, labels, threshold)
    print(
        f"model {args.model.name} ({args.model.stat().st_size:,} bytes), {len(pixels):,} images "
        f"of {args.data}, threshold {threshold:.4f}, test_time_flip {source.test_time_flip}"
    )
    header = f"{'format':<24}{'bytes':>14}{'export s':>10}{'max |dP|':>11}{'accuracy':>10}"
    print(f"{header}{'change':>9}")
    print(f"{'h5 (Keras)':<24}{args.model.stat().st_size:>14,}{'':>10}{0:>11.1e}", end="")
    print(f"{100 * base_accuracy:>9.2f}%{'':>9}")
    with tempfile.TemporaryDirectory(prefix="bench_export.") as work:
        onnx_classifier = None
        for export_format, quantization in VARIANTS:
            name = f"{export_format}" + ("" if quantization == "none" else f"_{quantization}")
            suffix = {"savedmodel": "", "onnx": ".onnx", "tflite": ".tflite"}[export_format]
            start = time.perf_counter()
            result = export_model(
                ExportSettings(
                    args.model, export_format, Path(work) / f"{name}{suffix}", quantization
                )
            )
            seconds = time.perf_counter() - start
            if export_format == "onnx":
                onnx_classifier = load_classifier(result.path)
                got = onnx_classifier.probability_fake(pixels, args.batch_size)
            else:
                exported = ExportedModel(result.path)
                got = exported.class_probabilities(pixels, args.batch_size)[:, 0]
            change = 100 * (accuracy(got, labels, threshold) - base_accuracy)
            print(
                f"{name:<24}{result.card['model_bytes']:>14,}{seconds:>10.1f}"
                f"{np.abs(got - reference).max():>11.1e}"
                f"{100 * accuracy(got, labels, threshold):>9.2f}%{change:>+8.2f}p"
            )

        speeds = {"TensorFlow (.h5)": [], "onnxruntime (.onnx)": []}
        throughput(source, pixels[: args.batch_size], args.batch_size)  # warm-up: tracing
        throughput(onnx_classifier, pixels[: args.batch_size], args.batch_size)
        for _ in range(args.rounds):
            speeds["TensorFlow (.h5)"].append(throughput(source, pixels, args.batch_size))
            speeds["onnxruntime (.onnx)"].append(
                throughput(onnx_classifier, pixels, args.batch_size)
            )
    ratios = [
        onnx / tf
        for tf, onnx in zip(speeds["TensorFlow (.h5)"], speeds["onnxruntime (.onnx)"], strict=True)
    ]
    print(f"\nthroughput, batch {args.batch_size}, median of {args.rounds} rounds:")
    for runtime, values in speeds.items():
        print(f"  {runtime:<22}{statistics.median(values):>8.0f} images/s")
    print(f"  onnxruntime / TensorFlow: {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
