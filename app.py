"""Serve the saved classifier: an upload page for people and a JSON API for programs.

Reads the model (default models/ai_real_image_classifier_resnet101.h5) and its model card (the
same path with .json); writes nothing. Without a model it still starts and says how to train one.

    python app.py --model models/ai_real_image_classifier_resnet101.h5 --port 5000

The app factory serves other servers too: `flask --app app run`, or
`gunicorn -w 2 -b 127.0.0.1:8000 "app:create_app()"` (REALFAKE_MODEL_PATH picks the model).
`--check` loads the model (and any --trust-anchors), answers one request with a generated image
and exits. Each answer carries the provenance evidence found in the uploaded file; signers of
content credentials are checked against --trust-anchors (REALFAKE_TRUST_ANCHORS), when given.
"""

import argparse
import io
import sys

import realfake  # noqa: F401  (sets TensorFlow's defaults before it is imported)
from realfake.app.settings import DEFAULTS
from realfake.core.cli import add_verbose_argument, report_errors, require_at_least_one
from realfake.core.errors import PipelineError

__all__ = ["create_app", "main"]  # noqa: F822  (create_app comes from __getattr__)

EPILOG = """examples:
  python app.py                                   serve the default model on 127.0.0.1:5000
  python app.py --model models/other.h5 --port 8080
  python app.py --check                           load the model, answer one image, exit
  python app.py --trust-anchors my-trust-list.pem trust content credentials signed under these CAs
  REALFAKE_MODEL_PATH=models/other.h5 gunicorn -w 2 "app:create_app()"

Other settings are environment variables read by create_app (REALFAKE_ + the name):
MAX_IMAGE_PIXELS (per image, default {MAX_IMAGE_PIXELS:,}), MAX_REQUEST_PIXELS (per request,
default {MAX_REQUEST_PIXELS:,}), MAX_CONCURRENT_WORK (requests decoding or predicting at once,
default {MAX_CONCURRENT_WORK}), WORK_WAIT_SECONDS (how long others wait before a 503, default
{WORK_WAIT_SECONDS:g}), TRUST_ANCHORS (as --trust-anchors, default none), EXAMPLES_FOLDER (a
labelled folder whose first two images per class are offered as examples when it exists, default
{EXAMPLES_FOLDER}; empty: none)."""


def __getattr__(name: str):
    # `flask --app app` and gunicorn's "app:create_app()" find the factory here; importing it
    # only then keeps `python app.py --help` free of Flask, NumPy and TensorFlow.
    if name == "create_app":
        from realfake.app.webapp import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG.format(**DEFAULTS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", default=DEFAULTS["MODEL_PATH"], help="saved .h5 model (default: %(default)s)"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=5000, help="port to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--max-files",
        type=int,
        default=DEFAULTS["MAX_FILES"],
        help="most images per request (default: %(default)s)",
    )
    parser.add_argument(
        "--max-megabytes",
        type=float,
        default=DEFAULTS["MAX_CONTENT_LENGTH"] / (1024 * 1024),
        help="largest request body in MB (default: %(default)g)",
    )
    parser.add_argument(
        "--trust-anchors",
        default=None,
        metavar="PEM",
        help="PEM file of CA certificates whose signers of content credentials count as "
        "trusted (default: none, so signers are shown as not checked)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="Flask debug mode; never on a public address (default: off)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="load the model, answer one request with a generated image, print it and exit",
    )
    add_verbose_argument(parser)
    return parser


def _check(app) -> int:
    """One API request through the test client, as a smoke test of a trained model."""
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    response = app.test_client().post(
        "/api/predict", data={"file": (io.BytesIO(buffer.getvalue()), "noise.png")}
    )
    body = response.get_json()
    if response.status_code != 200:
        raise PipelineError(body.get("error", f"status {response.status_code}"))
    answer = body["predictions"][0]
    print(
        f"model answers: {answer['filename']} -> {answer['label']} "
        f"(probability_fake {answer['probability_fake']:.4f}, threshold {answer['threshold']:.4f})"
    )
    return 0


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, not {args.port}")
    require_at_least_one(parser, args, "max_files")
    if args.max_megabytes <= 0:
        parser.error("--max-megabytes must be positive")
    from realfake.app.webapp import create_app

    settings = {
        "MODEL_PATH": args.model,
        "MAX_FILES": args.max_files,
        "MAX_CONTENT_LENGTH": int(args.max_megabytes * 1024 * 1024),
    }
    if args.trust_anchors is not None:  # otherwise REALFAKE_TRUST_ANCHORS may set them
        settings["TRUST_ANCHORS"] = args.trust_anchors
    app = create_app(settings)
    if args.check:
        return _check(app)
    print(f"serving {args.model} on http://{args.host}:{args.port}/ (Ctrl+C stops)")
    app.run(host=args.host, port=args.port, debug=args.debug, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
