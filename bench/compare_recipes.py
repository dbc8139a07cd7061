"""Short training runs of candidate recipes on the same data, one after another: validation
accuracy against CPU time, and how each holds under damage, to choose the recipe of a long run.

Each recipe is `model_training.py` with the shared flags below plus its own, in a fresh
subprocess, on at most --limit-per-class training images per class (and as many validation
images per class, scored with batch-norm statistics re-estimated as in any run). The schedule
of each run spans its own short run (--epochs), so a row says what a recipe reaches on that
many images. With --robustness-per-class N each model is then scored by
`evaluate_model.py --robustness` on N images per class of the **validation** split, at its
card's threshold (chosen on that same split, alike for every recipe); the test split is never
read.

Reads:  --data (the merged layout, e.g. after `make cifake-data`: cifake/data).
Writes: each run's model, card, plots and evaluation under --work-dir (a temporary folder unless
        given); prints a Markdown table: validation accuracy (at the 0.5 threshold, or at the
        card's threshold when robustness is scored) and AUC, training seconds (epochs with their
        validation, as the model card counts them), images/s, and the robustness rows.
An interrupted comparison continues where it stopped when run again with the same --work-dir:
finished runs are read, and an interrupted run resumes from its last finished epoch.

Examples:
    # the one-epoch optimizer table of docs/results.md (about 20 minutes on 2 cores)
    .venv/bin/python bench/compare_recipes.py --data cifake/data --limit-per-class 12000 \
        --recipes defaults warmup-zero-init warmup-zero-init-augment warmup-zero-init-flip
    # the robustness proxies of docs/robustness.md (two epochs on 12,000 images each)
    .venv/bin/python bench/compare_recipes.py --data cifake/data --limit-per-class 6000 \
        --epochs 2 --robustness-per-class 500 --work-dir runs/proxies
"""

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import realfake  # noqa: F401  (sets TF_ENABLE_ONEDNN_OPTS before TensorFlow is imported)
from realfake.core.cli import report_errors, require_at_least_one
from realfake.core.errors import PipelineError

ROOT = Path(__file__).resolve().parent.parent

SHARED = ["--weights", "none", "--quiet"]
FAST_START = [
    "--batch-size", "64", "--learning-rate", "2e-3", "--end-learning-rate", "0",
    "--decay-power", "1", "--warmup-fraction", "0.1", "--zero-init-residual",
]  # fmt: skip
# The robustness candidates start from the first reference recipe (flips only) and add one
# lever at a time; the damage families each take this share of the training images.
V1 = ["--recipe", "cifake-v1"]
DAMAGE = "jpeg:{p},blur:{p},downscale:{p}"
ROBUST = [*V1, "--augment", "flip," + DAMAGE.format(p=0.3)]
ROBUST_CROP = [*V1, "--augment", "flip,crop," + DAMAGE.format(p=0.3)]
RECIPES = {
    "defaults": [],
    "warmup-zero-init": FAST_START,
    "warmup-zero-init-augment": [*FAST_START, "--augment"],
    "warmup-zero-init-flip": [*FAST_START, "--augment", "flip"],
    "cifake-v1": V1,
    "cifake-v1-seed43": [*V1, "--seed", "43"],
    "damage-0.3": ROBUST,
    "damage-0.5": [*V1, "--augment", "flip," + DAMAGE.format(p=0.5)],
    "damage-0.3-smooth": [*ROBUST, "--label-smoothing", "0.1"],
    "damage-0.3-adamw": [*ROBUST, "--weight-decay", "0.05"],
    "damage-0.3-lr4e-3": [*ROBUST, "--learning-rate", "4e-3"],
    "damage-0.3-average": [*ROBUST, "--ema-momentum", "0.99"],
    "damage-0.3-crop": ROBUST_CROP,
}
# The proxy table of docs/robustness.md, in its order; damage-0.5 is there to be run by name.
DEFAULT_RECIPES = [
    "cifake-v1", "damage-0.3", "damage-0.3-average", "damage-0.3-adamw", "damage-0.3-smooth",
    "damage-0.3-lr4e-3", "damage-0.3-crop", "cifake-v1-seed43",
]  # fmt: skip
# The battery rows the table shows (all rows are in each run's eval/metrics.json).
SHOWN_ROWS = (
    "JPEG quality 25", "blur sigma 0.5", "blur sigma 1", "noise sigma 8", "down-scale to 24 px",
    "down-scale to 16 px", "blur sigma 2", "down-scale to 12 px",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="folder with train/, validation/, test/")
    parser.add_argument(
        "--limit-per-class", type=int, default=12000, help="training images per class"
    )
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each run")
    parser.add_argument(
        "--recipes", nargs="+", choices=list(RECIPES), default=DEFAULT_RECIPES, help="to run"
    )
    parser.add_argument(
        "--robustness-per-class",
        type=int,
        default=0,
        help="score the robustness battery on N validation images per class (0: not scored)",
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
        "--epochs", str(args.epochs), "--data", args.data,
        "--limit-per-class", str(args.limit_per_class),
        "--model-path", str(out / "model.h5"), "--metrics-dir", str(out / "metrics"),
        "--checkpoint-dir", str(out / "checkpoint"),
    ]  # fmt: skip
    if (out / "model.json").is_file():
        print(f"{name}: finished earlier in {out}, reading it", file=sys.stderr)
    else:
        if any((out / "checkpoint").glob("epoch-*")):
            command.append("--resume")
        print(f"{name}: training ...", file=sys.stderr, flush=True)
        run_quietly(command, name)
    card = json.loads((out / "model.json").read_text(encoding="utf-8"))
    with open(out / "metrics" / "training_log.csv", newline="") as handle:
        last = list(csv.DictReader(handle))[-1]
    row = {
        "recipe": name,
        "flags": " ".join(RECIPES[name]) or "(defaults)",
        "val_accuracy": float(last["val_accuracy"]),
        "val_auc": float(last["val_auc"]),
        "training_seconds": card["training_seconds"],
        "images_per_second": card["images_per_second"],
        "train_images": sum(card["training_data"]["train"].values()),
        "epochs": card["epochs_run"],
    }
    if args.robustness_per_class:
        row.update(score_robustness(args, out, name))
    return row


def run_quietly(command: list[str], name: str) -> None:
    """Run one step of a recipe; its last line of stderr becomes the error if it fails."""
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
        raise PipelineError(f"recipe {name} failed: {tail[0]}")


def score_robustness(args, out: Path, name: str) -> dict:
    """The battery on the validation split at the card's threshold: clean accuracy and AUC, and
    each row's accuracy by its name (evaluated once; a re-run reads eval/metrics.json)."""
    evaluation = out / "eval"
    if not (evaluation / "metrics.json").is_file():
        print(f"{name}: scoring the robustness battery ...", file=sys.stderr, flush=True)
        run_quietly(
            [
                sys.executable,
                str(ROOT / "evaluate_model.py"),
                "--model",
                str(out / "model.h5"),
                "--data",
                str(Path(args.data) / "validation"),
                "--robustness",
                "--robustness-per-class",
                str(args.robustness_per_class),
                "--output",
                str(evaluation),
                "--quiet",
            ],  # fmt: skip
            name,
        )
    metrics = json.loads((evaluation / "metrics.json").read_text(encoding="utf-8"))
    return {
        "clean_accuracy": metrics["accuracy"],
        "clean_auc": metrics["auc"],
        "threshold": metrics["threshold"],
        "battery": {row["perturbation"]: row["accuracy"] for row in metrics["robustness"]},
    }


def print_table(rows: list[dict]) -> None:
    if "battery" in rows[0]:
        print_robustness_table(rows)
        return
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


def print_robustness_table(rows: list[dict]) -> None:
    first = rows[0]
    print(
        f"\n{first['train_images']:,} training images per run, {first['epochs']} epochs; "
        "validation images, each model at its card's threshold\n"
    )
    shown = [name for name in SHOWN_ROWS if name in first["battery"]]
    print("| recipe | val accuracy | val AUC | " + " | ".join(shown) + " | training s | flags |")
    print("|---|---|---|" + "---|" * len(shown) + "---|---|")
    for row in rows:
        cells = " | ".join(f"{row['battery'].get(name, float('nan')):.1%}" for name in shown)
        flags = RECIPES[row["recipe"]]
        flags = " ".join(flags[len(V1) :] if flags[: len(V1)] == V1 else flags)
        print(
            f"| {row['recipe']} | {row['clean_accuracy']:.1%} | {row['clean_auc']:.4f} | "
            f"{cells} | {row['training_seconds']:.0f} | `{flags}` |"
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
