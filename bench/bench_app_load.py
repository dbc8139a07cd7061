"""Load test of the app on loopback: throughput, p50 and p99 latency, errors, wrong answers.

Starts each server in turn as a child process on a free 127.0.0.1 port, waits for /health,
then sends a bounded number of single-image POST /api/predict requests from --clients concurrent
client threads for at most --duration seconds. Every answer is checked against the probability
the model gives for that image in this process, so a thread-safety bug shows as a wrong answer.

Servers: Werkzeug's threaded server (`python app.py`), and gunicorn with 2 worker processes
(`gunicorn -w 2 "app:create_app()"`) when gunicorn is installed.

Reads:  the model (--model, default models/ai_real_image_classifier_resnet101.h5, or --untrained
        for a random model of --image-size); CIFAKE JPEGs from --archive (default:
        $CIFAKE_SAMPLE_ARCHIVE) or generated images.
Writes: nothing kept (an untrained model and the servers' logs go to a temporary folder).

Example:
    python bench/bench_app_load.py --untrained --clients 4 --requests 200 --duration 20
"""

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# bench/ is on sys.path as the folder of the script being run.
from bench_app_latency import add_model_arguments, multipart, sample_uploads, untrained_model

import realfake  # noqa: F401  (before TensorFlow: sets its defaults)
from realfake.core.cli import add_quiet_argument, report_errors, require_at_least_one
from realfake.core.errors import PipelineError
from realfake.core.images import load_rgb

ROOT = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, "serve a randomly initialised model of --image-size instead")
    parser.add_argument(
        "--clients", type=int, default=4, help="concurrent client threads (default: 4)"
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="most requests per server (default: 200)"
    )
    parser.add_argument(
        "--duration", type=float, default=20.0, help="most seconds per server (default: 20)"
    )
    parser.add_argument(
        "--servers",
        default="werkzeug,gunicorn",
        help="comma-separated servers to test (default: werkzeug,gunicorn)",
    )
    add_quiet_argument(parser)
    return parser


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


SERVER_LABELS = {"werkzeug": "werkzeug threaded (app.py)", "gunicorn": "gunicorn, 2 sync workers"}


def server_commands(model_path: Path, port: int) -> dict[str, list[str]]:
    commands = {
        "werkzeug": [
            sys.executable,
            str(ROOT / "app.py"),
            "--model",
            str(model_path),
            "--port",
            str(port),
        ],
    }
    if importlib.util.find_spec("gunicorn") is not None:
        commands["gunicorn"] = [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "2",
            "--bind",
            f"127.0.0.1:{port}",
            "--timeout",
            "120",
            "app:create_app()",
        ]
    return commands


def wait_until_healthy(port: int, process: subprocess.Popen, log: Path, timeout: float) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            raise PipelineError(f"the server exited with status {process.returncode}:\n{tail}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            status = connection.getresponse().status
            connection.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise PipelineError(f"the server did not become healthy within {timeout:.0f} s:\n{tail}")


def load(port: int, bodies: list[tuple[bytes, str, float]], args) -> dict:
    """Send requests from --clients threads until --requests are done or --duration is up."""
    import http.client

    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    errors: list[str] = []
    wrong: list[str] = []
    deadline = time.monotonic() + args.duration

    def client() -> None:
        nonlocal issued
        while True:
            with lock:
                if issued >= args.requests or time.monotonic() >= deadline:
                    return
                index = issued
                issued += 1
            body, content_type, expected = bodies[index % len(bodies)]
            start = time.perf_counter()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                connection.request(
                    "POST", "/api/predict", body=body, headers={"Content-Type": content_type}
                )
                response = connection.getresponse()
                payload = response.read()
                connection.close()
            except OSError as error:
                with lock:
                    errors.append(type(error).__name__)
                continue
            elapsed = time.perf_counter() - start
            with lock:
                if response.status != 200:
                    errors.append(str(response.status))
                    continue
                latencies.append(elapsed)
                answer = json.loads(payload)["predictions"][0]["probability_fake"]
                if abs(answer - expected) > 1e-6:
                    wrong.append(f"{answer} != {expected}")

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": issued,
        "errors": len(errors),
        "wrong": len(wrong),
        "throughput": len(latencies) / wall,
        "p50": statistics.median(ordered) if ordered else float("nan"),
        "p99": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        if ordered
        else float("nan"),
    }


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "clients", "requests")
    if args.duration <= 0:
        parser.error("--duration must be positive")
    if args.archive and not Path(args.archive).is_file():
        parser.error(f"--archive {args.archive} does not exist")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_path = untrained_model(scratch, args.image_size) if args.untrained else None
        return run(args, Path(model_path or args.model).resolve(), scratch)


def run(args, model_path: Path, scratch: Path) -> int:
    from realfake.app.serving import Predictor

    if not model_path.is_file():
        raise PipelineError(f"no model at {model_path}: pass --model PATH or --untrained")
    predictor = Predictor(model_path)
    uploads = next(iter(sample_uploads(args.archive).values()))
    bodies = []
    for index, data in enumerate(uploads):
        expected = predictor.predict_arrays(load_rgb(data, predictor.image_size)[None])[0]
        bodies.append((*multipart(data, f"image_{index}.jpg"), expected.probability_fake))

    rows = []
    environment = {**os.environ, "REALFAKE_MODEL_PATH": str(model_path)}
    names = args.servers.split(",")
    available = list(server_commands(model_path, 0))
    for name in names:
        if name not in available:
            raise PipelineError(f"server {name!r} is not available here; choose from {available}")
    for name in names:
        port = free_port()
        command = server_commands(model_path, port)[name]
        log = scratch / f"server_{len(rows)}.log"
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command, cwd=ROOT, env=environment, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            started = time.monotonic()
            wait_until_healthy(port, process, log, timeout=180)
            if not args.quiet:
                print(f"{name}: healthy after {time.monotonic() - started:.0f} s", file=sys.stderr)
            rows.append((SERVER_LABELS[name], load(port, bodies, args)))
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    print(
        f"model {model_path.name}: input {predictor.image_size}x{predictor.image_size}; "
        f"{args.clients} concurrent clients, at most {args.requests:,} requests or "
        f"{args.duration:g} s per server; single-image POST /api/predict on 127.0.0.1"
    )
    print("| server                     | requests | errors | wrong | req/s | p50 ms | p99 ms |")
    print("|----------------------------|----------|--------|-------|-------|--------|--------|")
    for name, result in rows:
        print(
            f"| {name:<26} | {result['requests']:8,} | {result['errors']:6,} | "
            f"{result['wrong']:5,} | {result['throughput']:5.1f} | {result['p50'] * 1e3:6.1f} | "
            f"{result['p99'] * 1e3:6.1f} |"
        )
    failures = sum(result["errors"] + result["wrong"] for _, result in rows)
    if failures:
        print(f"error: {failures:,} failed or wrong answers under load", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
