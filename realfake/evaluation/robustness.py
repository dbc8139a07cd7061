"""Robustness: how a classifier's answers hold up when its images are re-encoded as JPEG, blurred,
made noisy or down-scaled (`realfake.evaluation.perturbations`), as a report, a table and a plot.

The report scores every perturbed copy of a labelled set at the model card's threshold, which is
never re-chosen per perturbation (the fixed-threshold protocol: a deployed model does not know
which damage an upload suffered).
"""

import math
from pathlib import Path

import numpy as np

from realfake.core.config import SEED
from realfake.core.progress import progress
from realfake.evaluation.perturbations import (
    CLEAN,
    FAMILIES,
    Perturbation,
    format_level,
    perturbations,
    perturbed_sets,
)
from realfake.inference.classifier import FAKE_INDEX


def subset_indices(labels: np.ndarray, per_class: int | None, seed: int = SEED) -> np.ndarray:
    """Sorted indices of a seeded random subset of at most `per_class` images of each class."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) > per_class:
            members = rng.choice(members, size=per_class, replace=False)
        chosen.append(members)
    return np.sort(np.concatenate(chosen))


def robustness_row(
    perturbation: Perturbation,
    labels: np.ndarray,
    probability_fake: np.ndarray,
    threshold: float,
) -> dict:
    """Accuracy, AUC and both error rates of one perturbed set at the given (card's) threshold."""
    # Here, not at the top: the app reads FAMILIES without loading matplotlib and scikit-learn.
    from realfake.evaluation.metrics import classification_metrics, predicted_fake

    labels = np.asarray(labels)
    is_fake = labels == FAKE_INDEX
    says_fake = predicted_fake(probability_fake, threshold)
    metrics = classification_metrics(labels, probability_fake, threshold)
    return {
        "family": perturbation.family,
        "level": perturbation.level,
        "perturbation": perturbation.describe(),
        "accuracy": metrics["accuracy"],
        "auc": metrics["auc"],
        "real_called_fake": float(np.mean(says_fake[~is_fake])) if (~is_fake).any() else math.nan,
        "fake_called_real": float(np.mean(~says_fake[is_fake])) if is_fake.any() else math.nan,
        "images": int(len(labels)),
    }


def robustness_report(
    classifier,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 64,
    seed: int = SEED,
    quiet: bool = False,
) -> list[dict]:
    """One row per perturbation (clean first), scored through the classifier at its threshold."""
    rows = perturbations(classifier.image_size)
    report = []
    for perturbation, perturbed in progress(
        perturbed_sets(images, rows, seed),
        total=len(rows),
        description="robustness",
        unit="row",
        quiet=quiet,
    ):
        probability_fake = classifier.probability_fake(perturbed, batch_size)
        report.append(robustness_row(perturbation, labels, probability_fake, classifier.threshold))
    return report


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table, percentages for the rates."""
    header = ("perturbation", "accuracy", "AUC", "Real called Fake", "Fake called Real")
    lines = [f"{header[0]:<22}{header[1]:>9}{header[2]:>8}{header[3]:>18}{header[4]:>18}"]
    for row in rows:
        lines.append(
            f"{row['perturbation']:<22}{row['accuracy']:>9.1%}{row['auc']:>8.3f}"
            f"{row['real_called_fake']:>18.1%}{row['fake_called_real']:>18.1%}"
        )
    return "\n".join(lines)


def summary_lines(rows: list[dict]) -> list[str]:
    """One line per family for the model card: 'JPEG: 96% clean -> 51% at quality 10'."""
    clean = next((row for row in rows if row["family"] == CLEAN), None)
    lines = []
    for family, (title, _, level_text, _) in FAMILIES.items():
        family_rows = [row for row in rows if row["family"] == family]
        if not family_rows:
            continue
        severest = family_rows[-1]
        start = f"{clean['accuracy']:.0%} clean -> " if clean else ""
        level = level_text.format(format_level(severest["level"]))
        lines.append(f"{title}: {start}{severest['accuracy']:.0%} at {level}")
    return lines


def plot_robustness(rows: list[dict], path: Path, title: str) -> Path:
    """Accuracy against severity step, one line per family starting from the clean accuracy (its
    levels in order in the legend), and the 50% chance line."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    clean = next((row for row in rows if row["family"] == CLEAN), None)
    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    markers = iter("osD^v<>")
    for family, (family_title, _, level_text, _) in FAMILIES.items():
        family_rows = [row for row in rows if row["family"] == family]
        if not family_rows:
            continue
        levels = ", ".join(format_level(row["level"]) for row in family_rows)
        points = [(0, clean["accuracy"])] if clean is not None else []
        points += [(step, row["accuracy"]) for step, row in enumerate(family_rows, start=1)]
        steps, accuracies = zip(*points, strict=True)
        axes.plot(
            steps,
            [100 * accuracy for accuracy in accuracies],
            marker=next(markers),
            label=f"{family_title} ({level_text.format(levels)})",
        )
    axes.axhline(50, linestyle="--", color="grey", label="chance (50%)")
    axes.set_xlabel("severity step (0 = clean images, then each family's levels in legend order)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("accuracy at the card's threshold (%)")
    axes.set_ylim(0, 105)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
