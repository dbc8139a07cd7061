"""What reading provenance adds to an upload, per kind of file, side by side in one run.

Five uploads made at run time from one photo-like picture: a plain JPEG, a plain PNG, the PNG
with AUTOMATIC1111 generation settings in a text chunk, and the JPEG and the PNG signed with a
C2PA manifest by a throwaway test CA. Each round times `read_provenance` on every upload, in a
rotating order so that load from other processes hits all alike, next to the decode the app does
anyway (`load_rgb`). The table shows median and p90 per upload; the script fails when a median
exceeds its budget: --plain-budget-ms for files without a manifest, --manifest-budget-ms for
signed ones. The one-off cost of importing the C2PA library (paid by the first upload a process
reads) is measured in a fresh interpreter and shown separately.

Reads:  nothing.
Writes: nothing.

Example (from the repository root):
    PYTHONPATH=. .venv/bin/python bench/bench_provenance.py --rounds 200
"""

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

from realfake.core.cli import add_quiet_argument, progress, report_errors, require_at_least_one
from realfake.core.images import load_rgb
from realfake.inference.provenance import read_provenance


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rounds", type=int, default=200, help="timed reads per upload (default: 200)"
    )
    parser.add_argument(
        "--width", type=int, default=1600, help="picture width in pixels (default: 1600)"
    )
    parser.add_argument(
        "--height", type=int, default=1200, help="picture height in pixels (default: 1200)"
    )
    parser.add_argument(
        "--plain-budget-ms",
        type=float,
        default=5.0,
        help="largest allowed median for uploads without a manifest (default: 5)",
    )
    parser.add_argument(
        "--manifest-budget-ms",
        type=float,
        default=50.0,
        help="largest allowed median for uploads with a manifest (default: 50)",
    )
    add_quiet_argument(parser)
    return parser


def photo_like(width: int, height: int) -> np.ndarray:
    """A smooth picture with some texture, which compresses like a photograph, not like noise."""
    rng = np.random.default_rng(0)
    rows = np.linspace(0, 255, height)[:, None, None]
    columns = np.linspace(0, 255, width)[None, :, None]
    picture = (rows * [0.6, 0.3, 0.1] + columns * [0.2, 0.5, 0.3]).astype(np.float32)
    picture += rng.normal(0, 12, picture.shape)
    return np.clip(picture, 0, 255).astype(np.uint8)


def make_uploads(width: int, height: int) -> dict[str, tuple[bytes, bool]]:
    """Upload bytes by name, each with whether it carries a manifest."""
    from tests.provenance_fixtures import (
        encode_as_editor,
        make_signer,
        manifest,
        png_with_text,
        sign,
    )

    pixels = photo_like(width, height)
    jpeg, png = encode_as_editor(pixels, "JPEG"), encode_as_editor(pixels, "PNG")
    parameters = (
        "a photo of a valley\nNegative prompt: blurry\nSteps: 30, Sampler: Euler a, "
        "CFG scale: 7, Seed: 1, Size: 1600x1200, Model: sd_xl_base_1.0, Version: v1.10.1"
    )
    signer = make_signer()
    definition = manifest("trainedAlgorithmicMedia", "Example Image Service", "Example Diffusion")
    return {
        "plain JPEG": (jpeg, False),
        "plain PNG": (png, False),
        "PNG with parameters chunk": (png_with_text(pixels, {"parameters": parameters}), False),
        "signed JPEG": (sign(jpeg, "image/jpeg", definition, signer), True),
        "signed PNG": (sign(png, "image/png", definition, signer), True),
    }


def c2pa_import_seconds() -> float:
    """Seconds to import the C2PA library in a fresh interpreter (paid once per process)."""
    code = "import time; s = time.perf_counter(); import c2pa; print(time.perf_counter() - s)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip())


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "width", "height")
    if args.rounds < 10:
        parser.error("--rounds must be at least 10")
    import_seconds = c2pa_import_seconds()
    uploads = make_uploads(args.width, args.height)
    names = list(uploads)

    for data, _ in uploads.values():  # warm-up: caches and lazily built objects
        read_provenance(data)
        load_rgb(data)

    reads: dict[str, list[float]] = {name: [] for name in names}
    decodes: dict[str, list[float]] = {name: [] for name in names}
    for index in progress(range(args.rounds), description="rounds", quiet=args.quiet):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            data = uploads[name][0]
            start = time.perf_counter()
            read_provenance(data)
            middle = time.perf_counter()
            load_rgb(data)
            reads[name].append(middle - start)
            decodes[name].append(time.perf_counter() - middle)

    print(
        f"{args.width}x{args.height} picture, {args.rounds:,} rounds; importing c2pa "
        f"{import_seconds * 1e3:.0f} ms once per process, not in the table"
    )
    print(f"| {'upload':<25} | size kB | median ms | p90 ms | budget ms | decode ms | found |")
    print(f"|{'-' * 27}|--------:|----------:|-------:|----------:|----------:|-------|")
    failures = []
    for name in names:
        data, has_manifest = uploads[name]
        median = statistics.median(reads[name]) * 1e3
        p90 = statistics.quantiles(reads[name], n=10)[-1] * 1e3
        budget = args.manifest_budget_ms if has_manifest else args.plain_budget_ms
        decode = statistics.median(decodes[name]) * 1e3
        found = read_provenance(data).source or "nothing"
        print(
            f"| {name:<25} | {len(data) / 1024:7.0f} | {median:9.2f} | {p90:6.2f} | "
            f"{budget:9.0f} | {decode:9.1f} | {found} |"
        )
        if median > budget:
            failures.append(f"{name} median {median:.2f} ms > {budget:.0f} ms")
    if failures:
        print(f"error: over budget: {'; '.join(failures)}", file=sys.stderr)
        return 1
    print("ok: every median is within its budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
