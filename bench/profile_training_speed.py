"""Where a training step's time goes: TensorFlow's profiler over a few `fit` steps, per op type.

Reads:  nothing; the model is `build_model` compiled as training compiles it, fed random pixels.
Writes: the profiler trace under --logdir (viewable in TensorBoard's profile plugin) and prints
        a Markdown table of op types, split into forward, backward (gradient) and optimizer
        ops, with their share of the op time. The profiler itself slows every op, so read the
        shares, not the absolute milliseconds.

Example:
    .venv/bin/python bench/profile_training_speed.py --fast-path
"""

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import realfake  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow is imported)
from realfake.core.cli import add_quiet_argument, report_errors, require_at_least_one
from realfake.core.config import IMAGE_SIZE, SEED
from realfake.core.errors import PipelineError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="model input side")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size")
    parser.add_argument("--steps", type=int, default=4, help="profiled training steps")
    parser.add_argument("--top", type=int, default=15, help="op types listed")
    parser.add_argument(
        "--fast-path",
        action="store_true",
        help="profile with realfake.training.speed's fast path on",
    )
    parser.add_argument(
        "--logdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "realfake-profile",
        help="where the profiler writes its trace",
    )
    add_quiet_argument(parser)
    return parser


def phase(node_name: str) -> str:
    """forward, backward or optimizer, from a node name inside the training step."""
    lowered = node_name.lower()
    if "adam" in lowered or "sgd" in lowered or "/optimizer" in lowered:
        return "optimizer"
    return "backward" if "gradient_tape" in lowered else "forward"


def op_times(trace: Path) -> collections.Counter:
    """Picoseconds per (phase, op type) on the host's compute threads of one XPlane trace."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(trace.read_bytes())
    totals = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # Kernels inside the compiled step are named "<node path>:<op type>".
                if "StatefulPartitionedCall/" not in name or ":" not in name:
                    continue
                node, op_type = name.rsplit(":", 1)
                totals[(phase(node), op_type)] += event.duration_ps
    return totals


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "steps", "batch_size")

    import keras
    import numpy as np
    import tensorflow as tf

    from realfake.model import build_model
    from realfake.training import speed
    from realfake.training.pipeline import one_hot
    from realfake.training.run import compile_model

    keras.utils.set_random_seed(SEED)
    model = build_model(image_size=args.image_size)
    compile_model(model, 1e-4, 1e-5, 2.0, decay_steps=10_000)
    if args.fast_path:
        speed.apply_fast_path(model)
    count = args.steps * args.batch_size
    rng = np.random.default_rng(SEED)
    images = rng.integers(0, 256, (count, args.image_size, args.image_size, 3)).astype("float32")
    labels = one_hot(rng.integers(0, 2, count))
    model.fit(images, labels, batch_size=args.batch_size, verbose=0)  # trace outside the profile

    args.logdir.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=args.logdir))
    tf.profiler.experimental.start(str(run_dir))
    model.fit(images, labels, batch_size=args.batch_size, verbose=0)
    tf.profiler.experimental.stop()
    traces = sorted(run_dir.glob("plugins/profile/*/*.xplane.pb"))
    if not traces:
        raise PipelineError(f"the profiler wrote no trace under {run_dir}")
    totals = op_times(traces[-1])
    total = sum(totals.values())
    if not total:
        raise PipelineError("the trace holds no kernels of the training step")

    by_phase = collections.Counter()
    for (step_phase, _), picoseconds in totals.items():
        by_phase[step_phase] += picoseconds
    print("| phase | op type | share of op time |")
    print("|---|---|---|")
    for (step_phase, op_type), picoseconds in totals.most_common(args.top):
        print(f"| {step_phase} | {op_type} | {100 * picoseconds / total:.1f}% |")
    print(
        "by phase: "
        + ", ".join(f"{name} {100 * value / total:.0f}%" for name, value in by_phase.most_common())
    )
    print(
        f"profiled {args.steps:,} steps of {args.batch_size:,} images at "
        f"{args.image_size}x{args.image_size} ({'fast path' if args.fast_path else 'stock'}); "
        f"trace in {run_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
