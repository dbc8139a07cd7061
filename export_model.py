"""Export a saved classifier for other runtimes: a SavedModel (TF Serving, KServe), ONNX
(onnxruntime, no TensorFlow needed to run it) or TFLite (phones).

Reads the model (.h5) and its card; refuses a model whose card describes another file. Writes the
export and a card beside it (same path, .json) with the source card's threshold, uncertain band,
classes and input size, the export's format, size and SHA-256, and the source model's. The
mirror average of the card's test_time_flip is inside every exported graph.

Example:
    python export_model.py --model models/ai_real_image_classifier_resnet101.h5 --format onnx
"""

import argparse
import sys
from pathlib import Path

import realfake  # noqa: F401  (sets TensorFlow's environment before it is imported)
from realfake.core import config
from realfake.core.cli import add_verbose_argument, report_errors
from realfake.inference.modelcard import EXPORT_FORMATS, QUANTIZATIONS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        type=Path,
        default=config.MODEL_PATH,
        help=f"saved .h5 model with its card beside it (default: {config.MODEL_PATH})",
    )
    parser.add_argument(
        "--format", choices=EXPORT_FORMATS, required=True, help="what to export to (required)"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write it (default: beside the model: M.onnx, M.tflite, "
        "M.<quantization>.tflite, or the folder M_savedmodel/1)",
    )
    parser.add_argument(
        "--quantization",
        choices=QUANTIZATIONS,
        default="none",
        help="TFLite weights: none (float32), dynamic-range (int8 weights) or float16 "
        "(default: none)",
    )
    add_verbose_argument(parser)
    return parser


@report_errors
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quantization != "none" and args.format != "tflite":
        parser.error("--quantization applies to --format tflite only")
    from realfake.inference.export import ExportSettings, export_model

    result = export_model(ExportSettings(args.model, args.format, args.output, args.quantization))
    print(result.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
