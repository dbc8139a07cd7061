"""The model card: a JSON file beside the saved model that says what it is and how well it does.

Keys written by training (readers should tolerate missing optional ones):
    class_names       ["Fake", "Real"], the order of the model's two outputs
    positive_class    "Fake"
    image_size        side of the square input, in pixels
    preprocessing     how raw pixels are mapped inside the model
    weights           "none", "imagenet" or the weights file used to initialise the base
    threshold         the model says Fake when probability_fake >= threshold (chosen on validation)
    test_time_flip    true: probability_fake is the mean of the model's outputs for the image and
                      its horizontal mirror image (absent or false: the image alone)
    training_data     {"train": {"Fake": n, "Real": n}, "validation": {...}, "test": {...}}
    test_metrics      {"loss", "accuracy", "precision", "recall", "auc", "f1"} on the test split
    training_seconds, images_per_second, epochs_run, created, tensorflow_version, keras_version
"""

import json
from pathlib import Path

from realfake.fileops import atomic_write_text


def card_path(model_path: Path) -> Path:
    """The card's path: the model's path with a .json suffix."""
    return Path(model_path).with_suffix(".json")


def save_card(model_path: Path, card: dict) -> Path:
    """Write the card beside the model, atomically."""
    path = card_path(model_path)
    atomic_write_text(path, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return path


def uses_test_time_flip(card: dict | None) -> bool:
    """Whether predictions under this card average each image with its mirror image."""
    return bool((card or {}).get("test_time_flip", False))


def load_card(model_path: Path) -> dict | None:
    """Read the card beside the model, or None where there is none."""
    try:
        return json.loads(card_path(model_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
