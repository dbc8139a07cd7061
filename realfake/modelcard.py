"""The model card: a JSON file beside the saved model that says what it is and how well it does.

Keys written by training (readers tolerate missing optional ones, and ignore keys they do not know):
    class_names       ["Fake", "Real"], the order of the model's two outputs
    positive_class    "Fake"
    image_size        side of the square input, in pixels
    preprocessing     how raw pixels are mapped inside the model
    weights           "none", "imagenet" or the weights file used to initialise the base
    threshold         the model says Fake when probability_fake >= threshold (chosen on validation)
    uncertain_band    {"low", "high", "rule"}: P(Fake) in [low, high] is shown as uncertain
    test_time_flip    true: probability_fake is the mean of the model's outputs for the image and
                      its horizontal mirror image (absent or false: the image alone)
    training_data     {"train": {"Fake": n, "Real": n}, "validation": {...}, "test": {...}}
    test_metrics      {"loss", "accuracy", "precision", "recall", "auc", "f1", ...} on test
    model_file, model_bytes, model_sha256
                      the model file this card describes; a reader refuses a card whose model
                      file has another size or hash (a card left from an earlier run)
    training_seconds, images_per_second, epochs_run, created, tensorflow_version, keras_version

Every reader goes through `load_card`, which validates the types and ranges of the keys readers
use, so a damaged card is refused with one line instead of failing somewhere downstream.
"""

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from realfake.config import CLASS_NAMES, POSITIVE_CLASS
from realfake.errors import PipelineError
from realfake.fileops import atomic_write_text, file_digest

IDENTITY_KEYS = ("model_file", "model_bytes", "model_sha256")


class CardError(PipelineError):
    """A model card that is unreadable, malformed, or not the card of the model beside it."""


def card_path(model_path: Path) -> Path:
    """The card's path: the model's path with a .json suffix."""
    return Path(model_path).with_suffix(".json")


def model_identity(model_file: Path, name: str | None = None) -> dict:
    """What identifies a saved model: its file name, size in bytes and SHA-256."""
    model_file = Path(model_file)
    return {
        "model_file": name or model_file.name,
        "model_bytes": model_file.stat().st_size,
        "model_sha256": file_digest(model_file),
    }


def save_card(model_path: Path, card: dict, identity: dict | None = None) -> Path:
    """Validate the card, add the identity of its model, and write it beside the model atomically.

    `identity` defaults to that of the file at `model_path`; pass it when the model was written
    under a temporary name that is about to be renamed to `model_path`.
    """
    model_path = Path(model_path)
    if identity is None:
        identity = model_identity(model_path) if model_path.is_file() else {}
    card = {**{k: v for k, v in card.items() if k not in IDENTITY_KEYS}, **identity}
    path = card_path(model_path)
    validate_card(card, path)
    atomic_write_text(path, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return path


def uses_test_time_flip(card: dict | None) -> bool:
    """Whether predictions under this card average each image with its mirror image."""
    return bool((card or {}).get("test_time_flip", False))


def load_card(model_path: Path, *, check_model: bool = True) -> dict | None:
    """The validated card beside the model, or None where there is no card file.

    Raises CardError, with one line naming the card, for a card that cannot be read or parsed,
    that breaks the schema, or (with `check_model`, when the model file exists) that records
    another model file's size or hash.
    """
    model_path = Path(model_path)
    path = card_path(model_path)
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CardError(f"cannot read the model card {path}: {error}") from None
    try:
        card = json.loads(text)
    except ValueError as error:
        raise CardError(
            f"the model card {path} is not valid JSON ({error}); it may be truncated"
        ) from None
    validate_card(card, path)
    if check_model and model_path.is_file():
        check_card_matches(card, model_path, path)
    return card


def check_card_matches(card: dict, model_path: Path, path: Path) -> None:
    """Raise CardError when the card records a model file other than the one at `model_path`."""
    if "model_sha256" not in card:
        return  # cards written before identities were recorded cannot be checked
    size = model_path.stat().st_size
    recorded = card.get("model_bytes")
    if recorded not in (None, size) or card["model_sha256"] != file_digest(model_path):
        described = "an unrecorded number of" if recorded is None else f"{recorded:,}"
        raise CardError(
            f"the model card {path} does not belong to the model {model_path}: it describes a "
            f"model file of {described} bytes with SHA-256 "
            f"{card['model_sha256'][:12]}..., this one has {size:,} bytes and another hash "
            "(train again, or remove the card to use the model without one)"
        )


# The schema: each known key and the check its value must pass, as (test, what it must be).
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_probability(value) -> bool:
    return _is_number(value) and 0.0 <= value <= 1.0


def _is_count_table(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(split, str)
        and isinstance(counts, dict)
        and all(isinstance(k, str) and _is_int(n) and n >= 0 for k, n in counts.items())
        for split, counts in value.items()
    )


def _is_metrics(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(key, str) and (_is_number(item) or isinstance(item, str) or item is None)
        for key, item in value.items()
    )


def _is_band(value) -> bool:
    return (
        isinstance(value, dict)
        and _is_probability(value.get("low"))
        and _is_probability(value.get("high"))
        and value["low"] <= value["high"]
    )


SCHEMA: dict[str, tuple[Callable[[object], bool], str]] = {
    "class_names": (lambda v: v == list(CLASS_NAMES), f"the list {list(CLASS_NAMES)}"),
    "positive_class": (lambda v: v == POSITIVE_CLASS, f'"{POSITIVE_CLASS}"'),
    "image_size": (lambda v: _is_int(v) and 1 <= v <= 8192, "a whole number of pixels, 1-8192"),
    "threshold": (_is_probability, "a number from 0 to 1"),
    "uncertain_band": (_is_band, 'an object {"low": p, "high": q} with 0 <= p <= q <= 1'),
    "test_time_flip": (lambda v: isinstance(v, bool), "true or false"),
    "training_data": (_is_count_table, 'an object of counts, e.g. {"train": {"Fake": 10}}'),
    "test_metrics": (_is_metrics, "an object of numbers"),
    "validation_metrics": (_is_metrics, "an object of numbers"),
    "weights": (lambda v: isinstance(v, str), "a string"),
    "preprocessing": (lambda v: isinstance(v, str), "a string"),
    "created": (lambda v: isinstance(v, str), "a string"),
    "model_file": (lambda v: isinstance(v, str), "a string"),
    "model_bytes": (lambda v: _is_int(v) and v >= 0, "a whole number of bytes"),
    "model_sha256": (
        lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None,
        "64 hexadecimal digits",
    ),
    "training_seconds": (lambda v: _is_number(v) and v >= 0, "a number of seconds"),
    "images_per_second": (lambda v: _is_number(v) and v >= 0, "a number"),
    "epochs_run": (lambda v: _is_int(v) and v >= 0, "a whole number"),
    "best_epoch": (lambda v: v is None or (_is_int(v) and v >= 1), "a whole number or null"),
    "trained_on": (lambda v: isinstance(v, dict), "an object"),
    "robustness": (
        lambda v: isinstance(v, list) and all(isinstance(row, dict) for row in v),
        "a list of objects",
    ),
    "robustness_summary": (
        lambda v: isinstance(v, list) and all(isinstance(line, str) for line in v),
        "a list of strings",
    ),
    "robustness_data": (lambda v: isinstance(v, str), "a string"),
}


def validate_card(card: object, path: Path | str = "model card") -> dict:
    """Return the card if every known key has a value of its type and range; else CardError."""
    if not isinstance(card, dict):
        raise CardError(f"the model card {path} must be a JSON object, not {type(card).__name__}")
    for key, (check, expected) in SCHEMA.items():
        if key in card and not check(card[key]):
            shown = json.dumps(card[key], default=str)
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise CardError(f"the model card {path}: {key} must be {expected}, not {shown}")
    band, threshold = card.get("uncertain_band"), card.get("threshold")
    if band is not None and threshold is not None and not band["low"] <= threshold <= band["high"]:
        raise CardError(
            f"the model card {path}: uncertain_band [{band['low']}, {band['high']}] must contain "
            f"the threshold {threshold}"
        )
    for key in ("test_metrics", "validation_metrics"):
        for name, value in (card.get(key) or {}).items():
            if isinstance(value, float) and math.isinf(value):
                raise CardError(f"the model card {path}: {key}.{name} is infinite")
    return card
