"""How the uncertain band behaves on a real model: the rule training writes into the card (errors
counted in runs of neighbouring validation images) against the rule it replaced (errors counted
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
    halves = {
        "runs of neighbours (training's rule)": uncertain_band(labels, probability, threshold)[
            "high"
        ]
        - threshold,
        "cumulative from the threshold (replaced)": cumulative_band(labels, probability, threshold),
        "no band": 0.0,
    }
    print(f"model {args.model}, threshold {threshold:.3f}, test accuracy {right.mean():.1%}")
    print(f"{len(labels):,} validation and {len(test_labels):,} test images (seed {SEED})\n")
    print("| rule | band | test images Uncertain | accuracy of the verdicts given |")
    print("|---|---|---|---|")
    for rule, half in halves.items():
        inside = np.abs(test_probability - threshold) <= half if half > 0 else np.zeros_like(right)
        given = right[~inside]
        accuracy = f"{given.mean():.1%} of {given.size:,}" if given.size else "none given"
        band = f"{max(0.0, threshold - half):.3f}-{min(1.0, threshold + half):.3f}"
        print(f"| {rule} | {band if half > 0 else 'none'} | {inside.mean():.1%} | {accuracy} |")


if __name__ == "__main__":
    main()
