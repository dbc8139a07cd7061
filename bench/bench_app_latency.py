"""Latency of one single-image API request against the model's own cost, side by side.

The baseline is what no app can avoid: decoding the upload with `load_rgb` and one forward pass
at batch size 1 through the app's compiled predict function. Against it, in interleaved rounds:
POST /api/predict through Flask's test client, the same over HTTP to a real local server
(loopback, threaded Werkzeug), and, for reference only, decode + `model.predict` per request
(what the app avoids). The table shows medians; the script fails when the test client's median
exceeds --max-ratio times the baseline's.

Reads:  the model (--model, default models/ai_real_image_classifier_resnet101.h5, or --untrained
        for a random model of --image-size), CIFAKE JPEGs from --archive (default:
        $CIFAKE_SAMPLE_ARCHIVE) or generated images, plus a generated 1600x1200 JPEG.
Writes: nothing (an untrained model goes to a temporary folder, removed at the end).

Example:
    python bench/bench_app_latency.py --untrained --rounds 40
"""

import argparse
import http.client
import io
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from pathlib import Path

import realfake  # noqa: F401  (before TensorFlow: sets its defaults)
from realfake.core.cli import add_quiet_argument, progress, report_errors
from realfake.core.config import MODEL_PATH
from realfake.core.errors import PipelineError
from realfake.core.images import is_image_name, load_rgb


def add_model_arguments(parser: argparse.ArgumentParser, untrained_help: str) -> None:
    """--model, --untrained, --image-size and --archive: what the app benches serve and upload."""
    parser.add_argument(
        "--model", default=str(MODEL_PATH), help=f"saved model (default: {MODEL_PATH})"
    )
    parser.add_argument(
        "--untrained",
        action="store_true",
        help=untrained_help,
    )
    parser.add_argument(
        "--image-size", type=int, default=32, help="input size for --untrained (default: 32)"
    )
    parser.add_argument(
        "--archive",
        default=os.environ.get("CIFAKE_SAMPLE_ARCHIVE"),
        help="zip of CIFAKE images to upload (default: $CIFAKE_SAMPLE_ARCHIVE, else generated)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(
        parser, "time a randomly initialised model of --image-size instead (same cost)"
    )
    parser.add_argument(
        "--rounds", type=int, default=40, help="timed requests per measure and image (default: 40)"
    )
    parser.add_argument(
        "--max-ratio",
        type=float,
        default=1.5,
        help="fail when the test client's median exceeds this times the baseline's (default: 1.5)",
    )
    add_quiet_argument(parser)
    return parser


def sample_uploads(archive: str | None, count: int = 8) -> dict[str, list[bytes]]:
    """Upload bodies by kind: small CIFAKE-like JPEGs and a phone-sized photo."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)

    def jpeg(pixels) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()

    if archive:
        with zipfile.ZipFile(archive) as bundle:
            names = sorted(name for name in bundle.namelist() if is_image_name(Path(name)))[:count]
            small = [bundle.read(name) for name in names]
        small_kind = "CIFAKE 32x32 JPEG"
    else:
        small = [jpeg(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]
        small_kind = "generated 32x32 JPEG"
    # A smooth picture with some texture compresses like a photograph, not like pure noise.
    rows = np.linspace(0, 255, 1200)[:, None, None]
    columns = np.linspace(0, 255, 1600)[None, :, None]
    photo = (rows * [0.6, 0.3, 0.1] + columns * [0.2, 0.5, 0.3]).astype(np.float32)
    photo += rng.normal(0, 12, photo.shape)
    large = [jpeg(np.clip(photo, 0, 255).astype(np.uint8))]
    return {small_kind: small, "generated 1600x1200 JPEG": large}


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def post_http(port: int, body: bytes, content_type: str) -> float:
    """POST /api/predict over a fresh loopback connection, as a client would; the probability."""
    import json

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", "/api/predict", body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    if response.status != 200:
        raise PipelineError(f"server answered {response.status}: {payload[:200]!r}")
    return json.loads(payload)["predictions"][0]["probability_fake"]


def untrained_model(folder: Path, image_size: int) -> Path:
    from realfake.evaluation.benchmarking import save_untrained_classifier

    return save_untrained_classifier(folder / "untrained.h5", image_size)


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rounds < 3:
        parser.error("--rounds must be at least 3")
    if args.archive and not Path(args.archive).is_file():
        parser.error(f"--archive {args.archive} does not exist")
    with tempfile.TemporaryDirectory() as scratch:
        model_path = untrained_model(Path(scratch), args.image_size) if args.untrained else None
        return run(args, Path(model_path or args.model))


def run(args, model_path: Path) -> int:
    import logging

    from werkzeug.serving import make_server

    from realfake.app.webapp import EXTENSION, create_app

    if not model_path.is_file():
        raise PipelineError(f"no model at {model_path}: pass --model PATH or --untrained")
    app = create_app({"MODEL_PATH": str(model_path)})
    predictor = app.extensions[EXTENSION].get()
    model = predictor.model
    client = app.test_client()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_port

    def baseline(data: bytes, name: str):
        return predictor.predict_arrays(load_rgb(data, predictor.image_size)[None])[0]

    def test_client(data: bytes, name: str):
        response = client.post("/api/predict", data={"file": (io.BytesIO(data), name)})
        if response.status_code != 200:
            raise PipelineError(f"test client got {response.status_code}: {response.get_json()}")
        return response

    def http_server(data: bytes, name: str):
        return post_http(port, *multipart(data, name))

    def keras_predict(data: bytes, name: str):
        pixels = load_rgb(data, predictor.image_size)[None].astype("float32")
        return model.predict(pixels, verbose=0)

    measures = {
        "decode + compiled forward (baseline)": baseline,
        "POST /api/predict, Flask test client": test_client,
        "POST /api/predict, HTTP to local server": http_server,
        "decode + model.predict (reference)": keras_predict,
    }
    uploads = sample_uploads(args.archive)
    rows = []
    failed = False
    try:
        for kind, bodies in uploads.items():
            times: dict[str, list[float]] = {name: [] for name in measures}
            for data in bodies[:2]:  # warm-up: first calls trace and fill caches
                for measure in measures.values():
                    measure(data, "warm.jpg")
            names = list(measures)
            for index in progress(range(args.rounds), description=kind, quiet=args.quiet):
                data = bodies[index % len(bodies)]
                # Rotating the order spreads any drift in machine load over every measure.
                for name in names[index % len(names) :] + names[: index % len(names)]:
                    start = time.perf_counter()
                    measures[name](data, "upload.jpg")
                    times[name].append(time.perf_counter() - start)
            base = statistics.median(times[names[0]])
            for name in names:
                median = statistics.median(times[name])
                p90 = statistics.quantiles(times[name], n=10)[-1]
                rows.append((kind, name, median, p90, median / base))
                if name == names[1] and median / base > args.max_ratio:
                    failed = True
    finally:
        server.shutdown()
        thread.join(timeout=10)

    print(
        f"model {model_path.name}: input {predictor.image_size}x{predictor.image_size}, "
        f"{args.rounds:,} rounds per measure and image kind, single-image requests"
    )
    print(f"| {'upload':<24} | {'measure':<40} | median ms | p90 ms | x baseline |")
    print(f"|{'-' * 26}|{'-' * 42}|-----------|--------|------------|")
    for kind, name, median, p90, ratio in rows:
        print(
            f"| {kind:<24} | {name:<40} | {median * 1e3:9.1f} | {p90 * 1e3:6.1f} | {ratio:10.2f} |"
        )
    if failed:
        print(
            f"error: a test-client request costs more than {args.max_ratio}x the baseline",
            file=sys.stderr,
        )
        return 1
    print(f"ok: every test-client median is within {args.max_ratio}x of decode + forward pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
