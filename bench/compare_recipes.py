"""Short training runs of candidate recipes on the same data, one after another: validation
accuracy against CPU time, to choose the recipe of a long run.

Each recipe is `model_training.py` with the shared flags below plus its own, in a fresh
subprocess, on at most --limit-per-class training images per class (the full validation split
is scored, with batch-norm statistics re-estimated as in any run). The schedule of each run
spans its own short run, so a row says what a recipe reaches on that many images.

Reads:  --data (the merged layout, e.g. after `make cifake-data`: cifake/data).
Writes: each run's model, card and plots under --work-dir (a temporary folder unless given);
        prints a Markdown table: validation accuracy at the 0.5 threshold and AUC, training
        seconds (epochs with their validation, as the model card counts them), images/s and
        validation accuracy points above chance per training minute.

Example (the README's table, about 20 minutes on 2 cores):
    .venv/bin/python bench/compare_recipes.py --data cifake/data --limit-per-class 12000
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import realfake  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow is imported)
from realfake.cli import report_errors, require_at_least_one
from realfake.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent

SHARED = ["--weights", "none", "--epochs", "1", "--quiet"]
FAST_START = [
    "--batch-size", "64", "--learning-rate", "2e-3", "--end-learning-rate", "0",
    "--decay-power", "1", "--warmup-fraction", "0.1", "--zero-init-residual",
]  # fmt: skip
RECIPES = {
    "defaults": [],
    "warmup-zero-init": FAST_START,
    "warmup-zero-init-augment": [*FAST_START, "--augment"],
    "warmup-zero-init-flip": [*FAST_START, "--augment", "flip"],
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="folder with train/, validation/, test/")
    parser.add_argument(
        "--limit-per-class", type=int, default=12000, help="training images per class"
    )
    parser.add_argument(
        "--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES), help="to run"
    )
    parser.add_argument(
        "--work-dir",
        help="keep each run's outputs here; a re-run reads the runs that finished instead of "
        "training them again (default: a temporary folder)",
    )
    return parser


def run_recipe(name: str, args, work: Path) -> dict:
    """Train one recipe in a subprocess; its validation metrics, time and CPU time."""
    out = work / name
    command = [
        sys.executable, str(ROOT / "model_training.py"), *SHARED, *RECIPES[name],
        "--data", args.data, "--limit-per-class", str(args.limit_per_class),
        "--model-path", str(out / "model.h5"), "--metrics-dir", str(out / "metrics"),
        "--checkpoint-dir", str(out / "checkpoint"),
    ]  # fmt: skip
    if (out / "model.json").is_file():
        print(f"{name}: finished earlier in {out}, reading it", file=sys.stderr)
    else:
        print(f"{name}: training ...", file=sys.stderr, flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
            raise PipelineError(f"recipe {name} failed: {tail[0]}")
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    with open(out / "metrics" / "training_log.csv", newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    return {
        "recipe": name,
        "flags": " ".join(RECIPES[name]) or "(defaults)",
        "val_accuracy": float(last["val_accuracy"]),
        "val_auc": float(last["val_auc"]),
        "training_seconds": card["training_seconds"],
        "images_per_second": card["images_per_second"],
        "train_images": sum(card["training_data"]["train"].values()),
    }


def print_table(rows: list[dict]) -> None:
    images = rows[0]["train_images"]
    print(f"\n{images:,} training images per run, one epoch; validation at threshold 0.5\n")
    print(
        "| recipe | val accuracy | val AUC | training s | images/s | "
        "points over 50% per training minute | flags |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        rate = 100 * (row["val_accuracy"] - 0.5) / (row["training_seconds"] / 60)
        print(
            f"| {row['recipe']} | {row['val_accuracy']:.1%} | {row['val_auc']:.3f} | "
            f"{row['training_seconds']:.0f} | {row['images_per_second']:.1f} | {rate:.2f} | "
            f"`{row['flags']}` |"
        )


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "limit_per_class")
    if not Path(args.data, "train").is_dir():
        raise PipelineError(f"no train/ folder in {args.data}: run `make cifake-data` first")
    with tempfile.TemporaryDirectory(prefix="recipes-") as scratch:
        work = Path(args.work_dir or scratch)
        rows = []
        for name in args.recipes:
            rows.append(run_recipe(name, args, work))
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
