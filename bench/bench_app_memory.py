"""Memory of the app under large uploads: peak resident memory, and whether /health keeps answering.

Starts `python app.py` (Werkzeug's threaded server) as a child process on a free 127.0.0.1 port,
waits for /health, notes its idle resident memory, then sends --clients concurrent page uploads
(POST /) of one --side x --side PNG each, while one thread samples the server's resident memory
every 20 ms and another asks /health every 250 ms. Then it sends one request holding --files of
those PNGs at once. PNG cannot be decoded at reduced size, so each upload costs a full decode:
what bounds memory is how many are decoded at once and how early they are shrunk.

Reads:  the model (--model, default models/ai_real_image_classifier_resnet101.h5, or --untrained
        for a random model of --image-size); the PNG is generated.
Writes: nothing kept (an untrained model and the server's log go to a temporary folder).

Example:
    python bench/bench_app_memory.py --untrained --clients 8 --side 7000 --files 16
"""

import argparse
import http.client
import io
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The package comes from the installed project; bench/ is on sys.path as this script's folder.

from bench_app_latency import add_model_arguments, untrained_model  # noqa: E402
from bench_app_load import free_port, wait_until_healthy  # noqa: E402

import realfake  # noqa: E402, F401  (before TensorFlow: sets its defaults)
from realfake.core.cli import add_quiet_argument, report_errors, require_at_least_one  # noqa: E402
from realfake.core.errors import PipelineError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser, "serve a randomly initialised model of --image-size instead")
    parser.add_argument(
        "--clients", type=int, default=8, help="concurrent page uploads (default: 8)"
    )
    parser.add_argument(
        "--side", type=int, default=7000, help="side of the square PNG uploaded (default: 7000)"
    )
    parser.add_argument(
        "--files",
        type=int,
        default=16,
        help="PNGs in the one request sent last; 0 skips it (default: 16)",
    )
    add_quiet_argument(parser)
    return parser


def large_png(side: int) -> bytes:
    """A side x side RGB PNG of smooth gradients: large in pixels, small on the wire."""
    import numpy as np
    from PIL import Image

    ramp = np.linspace(0, 255, side, dtype=np.float32)
    pixels = np.empty((side, side, 3), np.uint8)
    pixels[..., 0] = ramp[None, :]
    pixels[..., 1] = ramp[:, None]
    pixels[..., 2] = 128
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def multipart_files(files: list[tuple[bytes, str]]) -> tuple[bytes, str]:
    """A multipart body with one `file` field per (bytes, name)."""
    boundary = uuid.uuid4().hex
    parts = [
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        + data
        + b"\r\n"
        for data, name in files
    ]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


def resident_megabytes(pid: int) -> float:
    """The process's resident memory (VmRSS) in MB, 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def post(port: int, body: bytes, content_type: str, timeout: float = 600) -> tuple[int, float]:
    """(status, seconds) of one POST / with `body`."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request("POST", "/", body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response.status, time.perf_counter() - started


class Watch:
    """Samples resident memory and asks /health in the background until stopped."""

    def __init__(self, pid: int, port: int):
        self.pid, self.port = pid, port
        self.start = resident_megabytes(pid)  # glibc keeps freed memory: later cases start higher
        self.peak = self.start
        self.health_answered = 0
        self.health_failed = 0
        self.slowest_health = 0.0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._ask_health, daemon=True),
        ]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _sample(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, resident_megabytes(self.pid))
            time.sleep(0.02)

    def _ask_health(self):
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/health")
                ok = connection.getresponse().status == 200
                connection.close()
            except OSError:
                ok = False
            if ok:
                self.health_answered += 1
                self.slowest_health = max(self.slowest_health, time.perf_counter() - started)
            else:
                self.health_failed += 1
            self._stop.wait(0.25)


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "clients", "side")
    if args.files < 0:
        parser.error("--files must be 0 or more")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        model_path = untrained_model(scratch, args.image_size) if args.untrained else None
        model_path = Path(model_path or args.model).resolve()
        if not model_path.is_file():
            raise PipelineError(f"no model at {model_path}: pass --model PATH or --untrained")
        return run(args, model_path, scratch)


def run(args, model_path: Path, scratch: Path) -> int:
    png = large_png(args.side)
    port = free_port()
    log = scratch / "server.log"
    command = [sys.executable, str(ROOT / "app.py"), "--model", str(model_path)]
    command += ["--port", str(port)]
    with open(log, "wb") as output:
        server = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(port, server, log, timeout=300)
        time.sleep(2)  # let start-up allocations settle before the idle reading
        idle = resident_megabytes(server.pid)
        statuses: list[int] = []
        seconds: list[float] = []
        body, content_type = multipart_files([(png, "large.png")])

        def upload():
            status, elapsed = post(port, body, content_type)
            statuses.append(status)
            seconds.append(elapsed)

        with Watch(server.pid, port) as concurrent:
            clients = [threading.Thread(target=upload) for _ in range(args.clients)]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
        many = None
        if args.files:
            body, content_type = multipart_files(
                [(png, f"large_{index}.png") for index in range(args.files)]
            )
            with Watch(server.pid, port) as together:
                many = post(port, body, content_type)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    counts = ", ".join(f"{statuses.count(code)} x {code}" for code in sorted(set(statuses)))
    print(
        f"model {model_path.name}; {args.side:,}x{args.side:,} PNG of {len(png) / 1024:,.0f} kB; "
        f"werkzeug threaded (app.py) on 127.0.0.1"
    )
    print(f"server resident memory when idle: {idle:,.0f} MB")
    print("| case | answers | slowest s | MB before | peak MB | rise MB | /health ok / failed |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.clients} concurrent page uploads | {counts} | {max(seconds):.1f} | "
        f"{concurrent.start:,.0f} | {concurrent.peak:,.0f} | {concurrent.peak - idle:,.0f} | "
        f"{concurrent.health_answered} / {concurrent.health_failed} "
        f"(slowest {concurrent.slowest_health:.2f} s) |"
    )
    if many is not None:
        print(
            f"| {args.files} PNGs in one page request | 1 x {many[0]} | {many[1]:.1f} | "
            f"{together.start:,.0f} | {together.peak:,.0f} | "
            f"{together.peak - together.start:,.0f} | "
            f"{together.health_answered} / {together.health_failed} "
            f"(slowest {together.slowest_health:.2f} s) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
