"""Score a saved classifier on a folder of Fake/Real images (aliases such as FAKE/REAL work).

Reads the model (.h5) and its model card beside it (image size, decision threshold and whether each
image is averaged with its mirror image; without a card the model's input size, threshold 0.5 and
the image alone are used), decodes every image the same way training and the app do, and writes to
the output folder:
    metrics.json           loss, accuracy, precision, recall, AUC, F1 (Fake positive)
    confusion_matrix.png   true against predicted class at the card's threshold
    roc_curve.png          ROC curve of P(Fake)
    robustness.png         with --robustness: accuracy under JPEG re-encoding, blur, noise and
                           down-scaling, at the same threshold (metrics.json gains `robustness`)
With --robustness --update-card the robustness rows and their summary are also written into the
model card, where the app's "About this model" shows them. With --choose-band (on the validation
split, as training does) the uncertain band is chosen again with training's rule, at the card's
threshold, and written into the card: for a card written before the rule changed.
The metrics are printed; the last line of stdout is them as one JSON object.

Example:
    python evaluate_model.py --model models/ai_real_image_classifier_resnet101.h5 --data data/test
    python evaluate_model.py --data data/test --robustness --robustness-per-class 500
    python evaluate_model.py --data data/test --robustness --robustness-per-class 1000 --update-card
    python evaluate_model.py --data data/validation --choose-band
"""

import argparse
import json
import sys
from pathlib import Path

import realfake  # noqa: F401  (sets TensorFlow's environment before it is imported)
from realfake.core import config
from realfake.core.cli import (
    add_quiet_argument,
    add_verbose_argument,
    report_errors,
    require_at_least_one,
    stage_parser,
)
from realfake.core.fileops import atomic_write_text


def _add_input_output_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the model, the labelled folder, the output folder and how images are scored."""
    parser.add_argument(
        "--model",
        type=Path,
        default=config.MODEL_PATH,
        help="the saved model (.h5) (default: %(default)s)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=config.DATA_DIR / "test",
        help="folder with Fake/ and Real/ sub-folders (or aliases such as FAKE/REAL) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=config.METRICS_DIR / "evaluation",
        help="folder for metrics.json, confusion_matrix.png and roc_curve.png "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=config.INFERENCE_BATCH_SIZE,
        help="images per prediction batch (default: %(default)s)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="P(Fake) at or above which an image is called Fake (default: the model card's)",
    )


def _add_robustness_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for re-scoring under perturbations and recording the rows in the model card."""
    parser.add_argument(
        "--robustness",
        action="store_true",
        help="also re-score under JPEG re-encoding (quality 95-10), Gaussian blur (sigma 0.5-2), "
        "Gaussian noise (sigma 2-16 of 255) and down-scaling (to 24, 16, 12 pixels and back), "
        "at the same threshold; writes robustness.png and a `robustness` list in metrics.json",
    )
    parser.add_argument(
        "--robustness-per-class",
        type=int,
        default=None,
        metavar="N",
        help="score the robustness rows on a seeded random subset of N images per class, to "
        "keep it quick; implies --robustness (default: every image)",
    )
    parser.add_argument(
        "--update-card",
        action="store_true",
        help="write the robustness rows and their summary into the model card (needs "
        "--robustness; refused with --threshold, since the card's threshold is the one it states)",
    )
    parser.add_argument(
        "--choose-band",
        action="store_true",
        help="choose the uncertain band on --data with training's rule, at the card's threshold, "
        "and write it into the model card; give it the validation split, as training does",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        __doc__,
        "Evaluate a saved real-or-AI-generated image classifier on a labelled folder.",
    )
    _add_input_output_flags(parser)
    _add_robustness_flags(parser)
    add_quiet_argument(parser)
    add_verbose_argument(parser)
    return parser


@report_errors
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "batch_size", "robustness_per_class")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        parser.error("--threshold must be between 0 and 1")
    robustness = args.robustness or args.robustness_per_class is not None
    if args.update_card and not robustness:
        parser.error("--update-card writes the robustness rows: add --robustness")
    writes_card = args.update_card or args.choose_band
    if writes_card and args.threshold is not None:
        parser.error("the card's rows and band are at the card's threshold: leave out --threshold")

    from realfake.evaluation.metrics import classification_metrics
    from realfake.inference.classifier import load_classifier
    from realfake.training.pipeline import load_split

    classifier = load_classifier(args.model, threshold=args.threshold)
    identity = loaded_identity(args.model, classifier.card) if writes_card else None
    threshold = classifier.threshold
    split = load_split(args.data, classifier.image_size, quiet=args.quiet, description="decode")
    probability_fake = classifier.probability_fake(split.images, args.batch_size)
    metrics = classification_metrics(split.labels, probability_fake, threshold)
    flip = classifier.test_time_flip
    metrics.update(
        model=str(args.model), data=str(args.data), counts=split.counts(), test_time_flip=flip
    )

    args.output.mkdir(parents=True, exist_ok=True)
    robustness_table = None
    if robustness:
        robustness_table = add_robustness(args, classifier, split, metrics)
    atomic_write_text(args.output / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    changes = {}
    if args.choose_band:
        changes.update(band_change(split.labels, probability_fake, threshold, metrics))
    if args.update_card:
        changes.update(
            robustness=metrics["robustness"],
            robustness_summary=metrics["robustness_summary"],
            robustness_data=str(args.data),
        )
    if changes:
        write_card_changes(args.model, classifier.card, identity, changes)
    report(args, split, probability_fake, threshold, flip, metrics, robustness_table)
    return 0


def add_robustness(args, classifier, split, metrics: dict) -> str:
    """Score the (subset of the) split under every perturbation at the classifier's threshold,
    add the rows and their summary to `metrics`, draw robustness.png; returns the table."""
    from realfake.evaluation.robustness import (
        format_table,
        plot_robustness,
        robustness_report,
        subset_indices,
        summary_lines,
    )

    chosen = subset_indices(split.labels, args.robustness_per_class, config.SEED)
    rows = robustness_report(
        classifier,
        split.images[chosen],
        split.labels[chosen],
        args.batch_size,
        seed=config.SEED,
        quiet=args.quiet,
    )
    metrics.update(robustness=rows, robustness_summary=summary_lines(rows))
    title = (
        f"Robustness on {args.data.resolve().name} (n = {len(chosen):,}, "
        f"fixed threshold {classifier.threshold:.3f})"
    )
    plot_robustness(rows, args.output / "robustness.png", title)
    return format_table(rows)


def loaded_identity(model: Path, card: dict) -> dict:
    """What was loaded (its card was checked against the file as it was read), to check before
    the card is rewritten that it is still what is there."""
    from realfake.inference.modelcard import IDENTITY_KEYS, model_identity

    if "model_sha256" in card:
        return {key: card[key] for key in IDENTITY_KEYS}
    return model_identity(model)


def band_change(labels, probability_fake, threshold: float, metrics: dict) -> dict:
    """The uncertain band chosen on these images with training's rule, also put in `metrics`."""
    from realfake.evaluation.metrics import uncertain_band

    band = uncertain_band(labels, probability_fake, threshold)
    metrics["uncertain_band"] = band
    return {"uncertain_band": band}


def write_card_changes(model: Path, card: dict, identity: dict, changes: dict) -> None:
    """Write the robustness rows, the band or both into the card of the model `identity` names."""
    from realfake.inference.modelcard import update_card

    written = update_card(model, card, identity, changes)
    what = " and ".join(
        name
        for key, name in (("robustness", "the robustness rows"), ("uncertain_band", "the band"))
        if key in changes
    )
    print(f"wrote {what} into the model card {written}")


def report(args, split, probability_fake, threshold: float, flip: bool, metrics, table) -> None:
    """Draw the confusion matrix and ROC curve, then print the summary, the metrics, the
    robustness table when there is one, and the metrics as one JSON line last."""
    from realfake.evaluation.metrics import format_metrics, plot_confusion_matrix, plot_roc

    plot_confusion_matrix(
        split.labels, probability_fake, threshold, args.output / "confusion_matrix.png"
    )
    plot_roc(split.labels, probability_fake, args.output / "roc_curve.png")
    counts = ", ".join(f"{name} {count:,}" for name, count in split.counts().items())
    views = " with their mirror images" if flip else ""
    print(
        f"evaluated {len(split):,} images ({counts}) from {args.data}{views}; "
        f"plots in {args.output}"
    )
    print(format_metrics(metrics))
    if table is not None:
        print(table)
        print("\n".join(metrics["robustness_summary"]))
    print(json.dumps(metrics, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
