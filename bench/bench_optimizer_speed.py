"""Time one optimizer update of the project's model: stock Adam, FusedAdam (the fast path), SGD.

Reads:  nothing; the update is applied to `build_model`'s trainable weights with fixed random
        gradients, inside a tf.function as `fit` runs it.
Writes: nothing; prints milliseconds per update (median and range over --repeats rounds, the
        variants alternating within each round) and what removing the difference from a
        training step predicts, given a measured step time (--step-ms).

Example:
    .venv/bin/python bench/bench_optimizer_speed.py --repeats 5
"""

import argparse
import statistics
import sys
import time

import realfake  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow is imported)
from realfake.core.cli import (
    add_quiet_argument,
    progress,
    report_errors,
    require_at_least_one,
)
from realfake.core.config import IMAGE_SIZE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="model input side")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; medians reported")
    parser.add_argument("--updates", type=int, default=5, help="timed updates per round")
    parser.add_argument(
        "--step-ms",
        type=float,
        default=0.0,
        help="a measured stock training step in ms, to predict the fast path's gain (0: skip)",
    )
    add_quiet_argument(parser)
    return parser


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "repeats", "updates")

    import keras
    import numpy as np
    import tensorflow as tf

    from realfake.model import build_model
    from realfake.training import speed

    model = build_model(image_size=args.image_size)
    variables = model.trainable_variables
    parameters = sum(int(np.prod(variable.shape)) for variable in variables)
    gradients = [tf.random.normal(variable.shape, stddev=1e-3) for variable in variables]
    optimizers = {
        "stock Adam": keras.optimizers.Adam(1e-4),
        "FusedAdam": speed.FusedAdam(1e-4),
        "SGD": keras.optimizers.SGD(1e-4),
    }
    pairs = list(zip(gradients, variables, strict=True))

    def compiled_update(optimizer):
        """One update as `fit` runs it: inside a tf.function."""
        return tf.function(lambda: optimizer.apply_gradients(pairs))

    updates = {}
    for name, optimizer in optimizers.items():
        optimizer.build(variables)
        updates[name] = compiled_update(optimizer)
        updates[name]()  # trace

    times = {name: [] for name in optimizers}
    for _ in progress(range(args.repeats), description="rounds", quiet=args.quiet):
        for name, update in updates.items():
            start = time.perf_counter()
            for _ in range(args.updates):
                update()
            float(optimizers[name].iterations.numpy())  # wait for the last update
            times[name].append(1000 * (time.perf_counter() - start) / args.updates)

    print(f"| optimizer | ms per update of {parameters:,} weights |")
    print("|---|---|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} ({min(values):.1f}-{max(values):.1f}) |")
    saved = statistics.median(times["stock Adam"]) - statistics.median(times["FusedAdam"])
    if args.step_ms:
        predicted = args.step_ms / (args.step_ms - saved)
        print(
            f"a {args.step_ms:.0f} ms stock step would lose {saved:.0f} ms: "
            f"predicted fast-path speed-up {predicted:.2f}x"
        )
    print(f"timed {args.repeats * args.updates * len(updates):,} updates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
