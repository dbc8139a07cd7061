"""The model card: a JSON file beside the saved model that says what it is and how well it does.

Keys written by training (readers tolerate missing optional ones, and ignore keys they do not know):
    class_names       ["Fake", "Real"], the order of the model's two outputs
    positive_class    "Fake"
    image_size        side of the square input, in pixels
    preprocessing     how raw pixels are mapped inside the model
    backbone          the base network: "resnet101" (the reference; assumed when absent),
                      "resnet50", "resnet152" or "tiny"
    weights           "none", "imagenet" or the weights file used to initialise the base
    threshold         the model says Fake when probability_fake >= threshold (chosen on validation)
    uncertain_band    {"low", "high", "rule"}: P(Fake) in [low, high] is shown as uncertain
    test_time_flip    true: probability_fake is the mean of the model's outputs for the image and
                      its horizontal mirror image (absent or false: the image alone)
    training_data     {"train": {"Fake": n, "Real": n}, "validation": {...}, "test": {...}}
    test_metrics      {"loss", "accuracy", "precision", "recall", "auc", "f1", ...} on test
    model_file, model_bytes, model_sha256
                      the model file this card describes (required beside a model file); a
                      reader refuses a card without them, or whose model file has another size
                      or hash (a card left from an earlier run)
    training_seconds, images_per_second, epochs_run, created, tensorflow_version, keras_version

Keys an export adds (export_model.py; the identity keys then describe the exported file, or the
SavedModel folder: its files' total size and a SHA-256 over their names and hashes):
    format            "savedmodel", "onnx" or "tflite"
    flip_in_graph     true: the mirror average of test_time_flip is inside the exported graph,
                      so a reader must not average again
    quantization      "none", "dynamic-range" or "float16"
    source_model      {"model_file", "model_bytes", "model_sha256"} of the .h5 it came from
    signatures        the SavedModel's signatures: their inputs and outputs, names and dtypes

Every reader goes through `load_card`, which validates the types and ranges of the keys readers
use, so a damaged card is refused with one line instead of failing somewhere downstream. A key
given twice is refused; a UTF-8 byte-order mark at the start is accepted.
"""

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path

from realfake.core.config import BACKBONES, CLASS_NAMES, DEFAULT_BACKBONE, POSITIVE_CLASS
from realfake.core.errors import PipelineError
from realfake.core.fileops import atomic_write_text, file_digest, read_regular_file

IDENTITY_KEYS = ("model_file", "model_bytes", "model_sha256")
# The formats a model is exported to, and the quantizations of a TFLite export.
EXPORT_FORMATS = ("savedmodel", "onnx", "tflite")
QUANTIZATIONS = ("none", "dynamic-range", "float16")


class CardError(PipelineError):
    """A model card that is unreadable, malformed, or not the card of the model beside it."""


def card_path(model_path: Path) -> Path:
    """The card's path: the model's path with a .json suffix."""
    return Path(model_path).with_suffix(".json")


def size_and_digest(path: Path) -> tuple[int, str]:
    """A model's size in bytes and SHA-256; for a folder (a SavedModel), its files' total size
    and the SHA-256 of their relative names and hashes, in name order."""
    path = Path(path)
    if not path.is_dir():
        return path.stat().st_size, file_digest(path)
    files = sorted(item for item in path.rglob("*") if item.is_file())
    digest = hashlib.sha256()
    for item in files:
        digest.update(f"{item.relative_to(path).as_posix()}\0{file_digest(item)}\n".encode())
    return sum(item.stat().st_size for item in files), digest.hexdigest()


def model_identity(model_file: Path, name: str | None = None) -> dict:
    """What identifies a saved model: its file (or folder) name, size in bytes and SHA-256."""
    model_file = Path(model_file)
    size, digest = size_and_digest(model_file)
    return {"model_file": name or model_file.name, "model_bytes": size, "model_sha256": digest}


def training_card(
    *,
    image_size: int,
    backbone: str,
    preprocessing: str,
    weights: str,
    threshold: float,
    uncertain_band: dict,
    test_time_flip: bool,
    training_data: dict,
    trained_on: dict,
    test_metrics: dict,
    validation_metrics: dict,
    training_seconds: float,
    images_per_second: float,
    epochs_run: int,
    best_epoch: int | None,
    settings: dict,
    fast_path: bool,
    tensorflow_version: str,
    keras_version: str,
) -> dict:
    """The card training writes beside a new model, the keys as the module docstring lists them
    (the identity keys are added when it is saved); `created` is now, in UTC."""
    return {
        "class_names": list(CLASS_NAMES),
        "positive_class": POSITIVE_CLASS,
        "image_size": image_size,
        "backbone": backbone,
        "preprocessing": preprocessing,
        "weights": weights,
        "threshold": threshold,
        "threshold_rule": "maximises balanced accuracy on the validation split",
        "uncertain_band": uncertain_band,
        "test_time_flip": test_time_flip,
        "training_data": training_data,
        "trained_on": trained_on,
        "test_metrics": test_metrics,
        "validation_metrics": validation_metrics,
        "training_seconds": training_seconds,
        "images_per_second": images_per_second,
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "settings": settings,
        "fast_path": fast_path,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tensorflow_version": tensorflow_version,
        "keras_version": keras_version,
    }


def save_card(model_path: Path, card: dict, identity: dict | None = None) -> Path:
    """Validate the card, add the identity of its model, and write it beside the model atomically.

    `identity` defaults to that of the file at `model_path`; pass it when the model was written
    under a temporary name that is about to be renamed to `model_path`.
    """
    model_path = Path(model_path)
    if identity is None:
        identity = model_identity(model_path) if model_path.exists() else {}
    card = {**{k: v for k, v in card.items() if k not in IDENTITY_KEYS}, **identity}
    path = card_path(model_path)
    validate_card(card, path)
    atomic_write_text(path, json.dumps(card, indent=2, sort_keys=True) + "\n")
    return path


def update_card(model_path: Path, loaded_card: dict, identity: dict, changes: dict) -> Path:
    """Write `changes` into the card of the model that was loaded with `loaded_card` and had
    `identity`, refusing with CardError when the model file or its card was replaced meanwhile.

    A long job (a robustness run) reads the model, works for minutes, then records its results;
    if another model and card were put in place meanwhile, writing would put the first model's
    numbers under the second model's hash and lose the second model's own card.
    """
    model_path = Path(model_path)
    path = card_path(model_path)
    try:
        now = model_identity(model_path)
    except OSError as error:
        raise CardError(f"cannot read the model {model_path}: {error.strerror}") from None
    on_disk = load_card(model_path, check_model=False) or {}
    if now["model_sha256"] != identity["model_sha256"] or on_disk != loaded_card:
        replaced = "model file" if now["model_sha256"] != identity["model_sha256"] else "card"
        raise CardError(
            f"the {replaced} of {model_path} was replaced while it was being evaluated: "
            f"{path} is left as it is; evaluate the model now in place to update its card"
        )
    return save_card(model_path, {**loaded_card, **changes}, identity)


def uses_test_time_flip(card: dict | None) -> bool:
    """Whether predictions under this card average each image with its mirror image."""
    return bool((card or {}).get("test_time_flip", False))


def backbone_of(card: dict | None) -> str:
    """The base network a card names; cards written before it was recorded are ResNet101's."""
    return (card or {}).get("backbone", DEFAULT_BACKBONE)


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
        # utf-8-sig: a card saved by an editor that starts files with a byte-order mark
        text = read_regular_file(path).decode("utf-8-sig")
    except OSError as error:  # a named pipe would block every reader: refused as not a file
        raise CardError(f"cannot read the model card {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise CardError(f"cannot read the model card {path}: {error}") from None
    try:
        card = json.loads(text, object_pairs_hook=without_duplicate_keys)
    except DuplicateKey as error:
        raise CardError(
            f"the model card {path} gives the key {error} twice: which one holds is anyone's "
            "guess, so neither is used"
        ) from None
    except ValueError as error:
        raise CardError(
            f"the model card {path} is not valid JSON ({error}); it may be truncated"
        ) from None
    validate_card(card, path)
    if check_model and model_path.exists():
        check_card_matches(card, model_path, path)
    return card


class DuplicateKey(ValueError):
    """A JSON object that gives one key twice; the message is the key, as JSON."""


def without_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object as a dict, refusing a key given twice (json keeps the last silently)."""
    result = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(json.dumps(key))
        result[key] = value
    return result


def check_card_matches(card: dict, model_path: Path, path: Path) -> None:
    """Raise CardError when the card does not say which model file it describes, or records a
    model file other than the one at `model_path`."""
    missing = [key for key in IDENTITY_KEYS if key not in card]
    if missing:
        raise CardError(
            f"the model card {path} does not say which model file it describes (no "
            f"{', '.join(missing)}), so it could be any model's: train again, or remove the "
            "card to use the model without one"
        )
    size, digest = size_and_digest(model_path)
    if card["model_bytes"] != size or card["model_sha256"] != digest:
        raise CardError(
            f"the model card {path} does not belong to the model {model_path}: it describes a "
            f"model file of {card['model_bytes']:,} bytes with SHA-256 "
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
    "backbone": (lambda v: v in BACKBONES, "one of " + ", ".join(BACKBONES)),
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
    "format": (lambda v: v in EXPORT_FORMATS, f"one of {', '.join(EXPORT_FORMATS)}"),
    "flip_in_graph": (lambda v: isinstance(v, bool), "true or false"),
    "quantization": (lambda v: v in QUANTIZATIONS, f"one of {', '.join(QUANTIZATIONS)}"),
    "source_model": (
        lambda v: (
            isinstance(v, dict)
            and all(isinstance(v.get(key), str) for key in ("model_file", "model_sha256"))
            and _is_int(v.get("model_bytes"))
        ),
        "an object with model_file, model_bytes and model_sha256",
    ),
    "signatures": (lambda v: isinstance(v, dict), "an object"),
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
