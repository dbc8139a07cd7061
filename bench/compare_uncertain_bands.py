"""How the uncertain band behaves on a real model: the rule training writes into the card (errors
counted in runs of neighbouring validation images, each side of the threshold apart) against the
rules it replaced (the same runs over both sides at once, as one distance; errors counted
cumulatively from the threshold outwards).

Scores a seeded subset of the validation and test folders with a saved classifier under its
card, chooses each rule's band on the validation images at the card's threshold, and prints, for
each rule: the band, the share of test images it calls "Uncertain", and the accuracy of the
verdicts given outside it (inside it the page gives no verdict).

Reads:  --model, a saved classifier with its card; --data, a folder with validation/ and test/,
        each with Fake/Real (or alias) sub-folders.
Writes: nothing.

Example:
    python bench/compare_uncertain_bands.py --model models/plain.h5 --data data --per-class 2000
"""

import argparse
from pathlib import Path

import numpy as np

import realfake  # noqa: F401  (sets TensorFlow's environment before it is imported)
from realfake.core.config import SEED


def cumulative_band(labels, probability, threshold, error_rate=0.1, min_images=10) -> float:
    """The replaced rule's half-width: the largest distance d such that, of the images at most d
    from the threshold, at least `error_rate` were misclassified."""
    from realfake.evaluation.metrics import predicted_fake
    from realfake.inference.classifier import FAKE_INDEX

    distance = np.abs(probability - threshold)
    order = np.argsort(distance, kind="stable")
    wrong = (predicted_fake(probability, threshold) != (labels == FAKE_INDEX))[order]
    seen = np.arange(1, len(order) + 1)
    qualifying = np.nonzero((np.cumsum(wrong) >= error_rate * seen) & (seen >= min_images))[0]
    return float(distance[order][qualifying[-1]]) if qualifying.size else 0.0


def symmetric_band(labels, probability, threshold, error_rate=0.1, min_images=10) -> float:
    """The replaced rule's half-width: runs of neighbours (5% of all images) over both sides at
    once, ranked by distance alone, so the band is as wide below the threshold as above it."""
    from realfake.evaluation.metrics import farthest_error_run, predicted_fake
    from realfake.inference.classifier import FAKE_INDEX

    wrong = predicted_fake(probability, threshold) != (labels == FAKE_INDEX)
    window = max(min_images, int(np.ceil(0.05 * len(labels))))
    return farthest_error_run(np.abs(probability - threshold), wrong, window, error_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="folder with validation/, test/")
    parser.add_argument("--per-class", type=int, default=2000, help="images per class and split")
    args = parser.parse_args()

    from realfake.evaluation.metrics import predicted_fake, uncertain_band
    from realfake.evaluation.robustness import subset_indices
    from realfake.inference.classifier import FAKE_INDEX, load_classifier
    from realfake.training.pipeline import load_split

    classifier = load_classifier(args.model)
    threshold = classifier.threshold
    scored = {}
    for name in ("validation", "test"):
        split = load_split(args.data / name, classifier.image_size, quiet=True)
        chosen = subset_indices(split.labels, args.per_class, SEED)
        labels = split.labels[chosen]
        scored[name] = (labels, classifier.probability_fake(split.images[chosen]))

    labels, probability = scored["validation"]
    test_labels, test_probability = scored["test"]
    right = predicted_fake(test_probability, threshold) == (test_labels == FAKE_INDEX)
    per_side = uncertain_band(labels, probability, threshold)
    bands = {
        "runs of neighbours, each side apart (training's rule)": (
            per_side["low"],
            per_side["high"],
        ),
        "runs of neighbours, both sides as one distance (replaced)": _around(
            threshold, symmetric_band(labels, probability, threshold)
        ),
        "cumulative from the threshold (replaced)": _around(
            threshold, cumulative_band(labels, probability, threshold)
        ),
        "no band": (threshold, threshold),
    }
    print(f"model {args.model}, threshold {threshold:.3f}, test accuracy {right.mean():.1%}")
    print(f"{len(labels):,} validation and {len(test_labels):,} test images (seed {SEED})\n")
    print(
        "| rule | band | test images Uncertain | verdicts given: Real, AI "
        "| accuracy of the verdicts given |"
    )
    print("|---|---|---|---|---|")
    says_fake = predicted_fake(test_probability, threshold)
    for rule, (low, high) in bands.items():
        inside = (test_probability >= low) & (test_probability <= high) & (high > low)
        given = right[~inside]
        accuracy = f"{given.mean():.1%} of {given.size:,}" if given.size else "none given"
        verdicts = f"{np.sum(~inside & ~says_fake):,}, {np.sum(~inside & says_fake):,}"
        band = f"{low:.3f}-{high:.3f}" if high > low else "none"
        print(f"| {rule} | {band} | {inside.mean():.1%} | {verdicts} | {accuracy} |")


def _around(threshold: float, half: float) -> tuple[float, float]:
    return max(0.0, threshold - half), min(1.0, threshold + half)


if __name__ == "__main__":
    main()
