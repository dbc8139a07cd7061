"""Scoring a classifier's P(Fake) against labels, choosing its decision threshold, and the plots:
training curves, confusion matrix, ROC curve and the architecture diagram."""

import csv
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve  # noqa: E402

from realfake.core.config import CLASS_NAMES, POSITIVE_CLASS  # noqa: E402
from realfake.inference.classifier import FAKE_INDEX  # noqa: E402

CURVE_METRICS = ("loss", "accuracy", "precision", "recall", "auc", "f1")
CURVE_TITLES = {
    "loss": "Loss (binary cross-entropy + L2)",
    "accuracy": "Accuracy",
    "precision": "Precision (Fake positive)",
    "recall": "Recall (Fake positive)",
    "auc": "ROC AUC",
    "f1": "F1 (Fake positive)",
}


def predicted_fake(probability_fake: np.ndarray, threshold: float) -> np.ndarray:
    """True where the model says Fake: P(Fake) at or above the threshold."""
    return np.asarray(probability_fake) >= threshold


def balanced_accuracy(labels: np.ndarray, probability_fake: np.ndarray, threshold: float) -> float:
    """Mean of the per-class accuracies at this threshold."""
    is_fake = np.asarray(labels) == FAKE_INDEX
    says_fake = predicted_fake(probability_fake, threshold)
    # A class without images has no accuracy of its own (and no mean to warn about).
    rates = [np.mean(right) for right in (says_fake[is_fake], ~says_fake[~is_fake]) if right.size]
    return float(np.mean(rates))


def choose_threshold(labels: np.ndarray, probability_fake: np.ndarray) -> float:
    """The P(Fake) threshold that maximises balanced accuracy; among ties, the one nearest 0.5.

    Balanced accuracy rather than accuracy, so an imbalanced validation split does not push the
    threshold towards its majority class. Candidates are midpoints between sorted distinct scores.
    """
    scores = np.unique(np.asarray(probability_fake, dtype=np.float64))
    candidates = np.concatenate([[0.5], (scores[:-1] + scores[1:]) / 2, [scores[0], 1.0]])
    best_score, best = -1.0, 0.5
    for candidate in candidates:
        score = balanced_accuracy(labels, probability_fake, candidate)
        if score > best_score + 1e-12 or (
            abs(score - best_score) <= 1e-12 and abs(candidate - 0.5) < abs(best - 0.5)
        ):
            best_score, best = score, float(candidate)
    return best


def uncertain_band(
    labels: np.ndarray,
    probability_fake: np.ndarray,
    threshold: float,
    error_rate: float = 0.1,
    min_images: int = 10,
    window_share: float = 0.05,
) -> dict:
    """The band of P(Fake) around the threshold inside which answers are often wrong.

    Each side of the threshold is read on its own: the validation images the model calls Real
    (below it) set the band's low end, those it calls Fake its high end. On a side, images are
    ranked by their distance from the threshold and read in runs of `window` neighbours (5% of
    that side's images, at least `min_images`); the band reaches as far as the farthest run in
    which at least `error_rate` were misclassified: beyond it, every run of neighbours was right
    more often than that. The error is measured locally, not from the threshold outwards, so that
    a model wrong on 15% of all images still gives its confident answers as verdicts; and per
    side, so that confident mistakes on one side do not take the other side's verdicts away. A
    side with too few images, or no such run, adds nothing to the band.
    """
    probability = np.asarray(probability_fake, dtype=np.float64)
    says_fake = predicted_fake(probability, threshold)
    wrong = says_fake != (np.asarray(labels) == FAKE_INDEX)
    distance = np.abs(probability - threshold)
    reach, windows = {}, {}
    for side, on_side in (("low", ~says_fake), ("high", says_fake)):
        windows[side] = max(min_images, math.ceil(window_share * int(on_side.sum())))
        reach[side] = farthest_error_run(
            distance[on_side], wrong[on_side], windows[side], error_rate
        )
    low = max(0.0, threshold - reach["low"])
    high = min(1.0, threshold + reach["high"])
    return {
        "low": low,
        "high": high,
        "rule": (
            f"P(Fake) from {low:.3f} to {high:.3f}: on each side of the threshold, the farthest "
            f"point where, of {windows['low']:,} (below) or {windows['high']:,} (above) "
            f"validation images at neighbouring distances from it, at least {error_rate:.0%} "
            "were misclassified"
        ),
    }


def farthest_error_run(
    distance: np.ndarray, wrong: np.ndarray, window: int, error_rate: float
) -> float:
    """The distance at which the farthest run of `window` neighbours, ranked by distance, with
    at least `error_rate` of them wrong ends; 0.0 where there is no such run."""
    if len(distance) < window:
        return 0.0
    order = np.argsort(distance, kind="stable")
    errors = np.convolve(wrong[order].astype(np.int64), np.ones(window, np.int64), mode="valid")
    qualifying = np.nonzero(errors >= error_rate * window)[0]
    if not qualifying.size:
        return 0.0
    return float(distance[order][qualifying[-1] + window - 1])


def classification_metrics(
    labels: np.ndarray, probability_fake: np.ndarray, threshold: float = 0.5
) -> dict:
    """Loss, accuracy, precision, recall, AUC and F1 with Fake as the positive class.

    The loss is binary cross-entropy of P(Fake) (equal to Keras's on one-hot labels and a two-way
    softmax), without the L2 term.
    """
    labels = np.asarray(labels)
    probability = np.clip(np.asarray(probability_fake, dtype=np.float64), 1e-7, 1 - 1e-7)
    is_fake = labels == FAKE_INDEX
    says_fake = predicted_fake(probability_fake, threshold)
    true_positive = int(np.sum(says_fake & is_fake))
    false_positive = int(np.sum(says_fake & ~is_fake))
    false_negative = int(np.sum(~says_fake & is_fake))
    precision = true_positive / max(1, true_positive + false_positive)
    recall = true_positive / max(1, true_positive + false_negative)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    loss = -np.mean(np.where(is_fake, np.log(probability), np.log(1 - probability)))
    auc = roc_auc_score(is_fake, probability) if 0 < is_fake.sum() < len(labels) else float("nan")
    return {
        "loss": float(loss),
        "accuracy": float(np.mean(says_fake == is_fake)),
        "precision": float(precision),
        "recall": float(recall),
        "auc": float(auc),
        "f1": float(f1),
        "balanced_accuracy": balanced_accuracy(labels, probability_fake, threshold),
        "threshold": float(threshold),
        "positive_class": POSITIVE_CLASS,
        "images": int(len(labels)),
    }


def format_metrics(metrics: dict) -> str:
    """One human line of the main metrics."""
    return (
        f"loss {metrics['loss']:.4f}, accuracy {metrics['accuracy']:.4f}, "
        f"precision {metrics['precision']:.4f}, recall {metrics['recall']:.4f}, "
        f"AUC {metrics['auc']:.4f}, F1 {metrics['f1']:.4f} "
        f"(positive class {metrics['positive_class']}, threshold {metrics['threshold']:.4f}, "
        f"{metrics['images']:,} images)"
    )


def read_log(path: Path) -> dict[str, list[float]]:
    """The CSV training log as columns of floats."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    return columns


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def history_figures(
    log: dict[str, list[float]], restored_epoch: int | None = None
) -> dict[str, "plt.Figure"]:
    """One training-vs-validation figure per metric, the restored epoch (1-based) marked."""
    epochs = [int(epoch) + 1 for epoch in log.get("epoch", [])]
    figures = {}
    for name in CURVE_METRICS:
        figure, axes = plt.subplots(figsize=(6, 4))
        for key, label in ((name, "training"), (f"val_{name}", "validation")):
            if key in log:
                axes.plot(epochs, log[key], marker="o", label=label)
        if restored_epoch is not None:
            axes.axvline(
                restored_epoch,
                color="grey",
                linestyle=":",
                label=f"epoch {restored_epoch}: weights kept (lowest validation loss)",
            )
        axes.set_xlabel("epoch")
        axes.set_ylabel(CURVE_TITLES[name])
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_title(f"{CURVE_TITLES[name]} per epoch")
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
        figure.tight_layout()
        figures[name] = figure
    return figures


def plot_history(
    log: dict[str, list[float]], output_dir: Path, restored_epoch: int | None = None
) -> list[Path]:
    """One training-vs-validation plot per metric: training_<metric>.png."""
    return [
        _save(figure, Path(output_dir) / f"training_{name}.png")
        for name, figure in history_figures(log, restored_epoch).items()
    ]


def confusion_matrix_figure(
    labels: np.ndarray, probability_fake: np.ndarray, threshold: float, split: str = "test"
) -> "plt.Figure":
    """Counts and row percentages of true class (rows) against predicted class (columns)."""
    predicted = np.where(predicted_fake(probability_fake, threshold), FAKE_INDEX, 1 - FAKE_INDEX)
    matrix = confusion_matrix(labels, predicted, labels=list(range(len(CLASS_NAMES))))
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axes = plt.subplots(figsize=(5, 4.4))
    colours = plt.get_cmap("Blues")
    axes.imshow(rates, cmap=colours, vmin=0.0, vmax=1.0)
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            red, green, blue, _ = colours(rates[row, column])
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            axes.text(
                column,
                row,
                f"{matrix[row, column]:,}\n{rates[row, column]:.1%} of {CLASS_NAMES[row]}",
                ha="center",
                va="center",
                color="white" if dark else "black",
                fontsize="medium",
            )
    axes.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    axes.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(
        f"Confusion matrix, {split} split (n = {int(matrix.sum()):,})\n"
        f"P(Fake) threshold {threshold:.3f}"
    )
    figure.tight_layout()
    return figure


def plot_confusion_matrix(
    labels: np.ndarray,
    probability_fake: np.ndarray,
    threshold: float,
    path: Path,
    split: str = "test",
) -> Path:
    """Save `confusion_matrix_figure` to `path`."""
    return _save(confusion_matrix_figure(labels, probability_fake, threshold, split), path)


def roc_figure(
    labels: np.ndarray,
    probability_fake: np.ndarray,
    threshold: float | None = None,
    split: str = "test",
) -> "plt.Figure":
    """ROC curve of P(Fake), Fake positive, with the operating point of `threshold` marked."""
    is_fake = np.asarray(labels) == FAKE_INDEX
    probability = np.asarray(probability_fake)
    figure, axes = plt.subplots(figsize=(5, 4.4))
    if 0 < is_fake.sum() < len(is_fake):
        false_rate, true_rate, _ = roc_curve(is_fake, probability)
        auc = roc_auc_score(is_fake, probability)
        axes.plot(false_rate, true_rate, label=f"AUC {auc:.3f}")
        if threshold is not None:
            says_fake = predicted_fake(probability, threshold)
            point = (float(np.mean(says_fake[~is_fake])), float(np.mean(says_fake[is_fake])))
            axes.plot(*point, "o", color="crimson", label=f"threshold {threshold:.3f}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    axes.set_xlabel("false positive rate (Real called Fake)")
    axes.set_ylabel("true positive rate (Fake called Fake)")
    axes.set_title(f"ROC curve, {split} split (n = {len(is_fake):,})")
    axes.legend(loc="lower right")
    figure.tight_layout()
    return figure


def plot_roc(
    labels: np.ndarray,
    probability_fake: np.ndarray,
    path: Path,
    threshold: float | None = None,
    split: str = "test",
) -> Path:
    """Save `roc_figure` to `path`."""
    return _save(roc_figure(labels, probability_fake, threshold, split), path)


def plot_architecture(model, path: Path) -> Path | None:
    """Draw the model with keras.utils.plot_model; warn and return None without Graphviz."""
    import keras

    try:
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True, show_layer_names=True)
    except (ImportError, OSError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(
            f"warning: {path.name} not drawn: plot_model needs pydot and Graphviz's `dot` "
            f"(apt-get install graphviz): {first_line}",
            file=sys.stderr,
        )
        return None
    return path
