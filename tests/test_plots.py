"""The plots people read: labelled axes, titles with split and n, the kept epoch, percentages in
readable contrast, and the operating point on the ROC curve."""

import numpy as np
import pytest
from matplotlib.colors import to_rgb

from realfake.evaluation.metrics import confusion_matrix_figure, history_figures, roc_figure

# Fake = 0, Real = 1. At threshold 0.5: Fake 3 right, 1 wrong; Real 5 right, 1 wrong.
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
SCORES = np.array([0.9, 0.8, 0.7, 0.2, 0.1, 0.3, 0.4, 0.6, 0.05, 0.15])


def _relative_luminance(colour) -> float:
    channels = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in colour]
    return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]


def _contrast(first, second) -> float:
    lighter, darker = sorted((_relative_luminance(first), _relative_luminance(second)))[::-1]
    return (lighter + 0.05) / (darker + 0.05)


def test_confusion_matrix_shows_counts_percentages_split_and_n_in_readable_contrast():
    figure = confusion_matrix_figure(LABELS, SCORES, 0.5, split="validation")
    axes = figure.axes[0]
    texts = {text.get_text(): text for text in axes.texts}
    assert set(texts) == {
        "3\n75.0% of Fake",
        "1\n25.0% of Fake",
        "1\n16.7% of Real",
        "5\n83.3% of Real",
    }
    assert "validation split (n = 10)" in axes.get_title()
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("predicted class", "true class")
    image = axes.images[0]
    for text in axes.texts:
        column, row = (round(v) for v in text.get_position())
        cell = to_rgb(image.cmap(image.norm(image.get_array()[row, column])))
        assert _contrast(to_rgb(text.get_color()), cell) >= 4.5, text.get_text()


def test_roc_marks_the_operating_point_of_the_threshold():
    figure = roc_figure(LABELS, SCORES, threshold=0.5, split="test")
    axes = figure.axes[0]
    (point,) = [line for line in axes.lines if line.get_label().startswith("threshold")]
    # Real called Fake: 1 of 6; Fake called Fake: 3 of 4.
    assert point.get_xdata()[0] == pytest.approx(1 / 6)
    assert point.get_ydata()[0] == pytest.approx(3 / 4)
    assert "test split (n = 10)" in axes.get_title()


def test_training_curves_have_axis_labels_and_mark_the_kept_epoch():
    log = {
        "epoch": [0, 1, 2, 3],
        "loss": [0.9, 0.6, 0.5, 0.4],
        "val_loss": [0.8, 0.55, 0.5, 0.52],
        "accuracy": [0.5, 0.7, 0.8, 0.85],
        "val_accuracy": [0.55, 0.72, 0.79, 0.78],
    }
    figures = history_figures(log, restored_epoch=3)
    for name, figure in figures.items():
        axes = figure.axes[0]
        assert axes.get_xlabel() == "epoch" and axes.get_ylabel(), name
        marks = [line for line in axes.lines if "weights kept" in line.get_label()]
        assert len(marks) == 1 and list(marks[0].get_xdata()) == [3, 3], name
    unmarked = history_figures(log)["loss"].axes[0]
    assert not [line for line in unmarked.lines if "weights kept" in line.get_label()]
