"""The one inference contract: a saved classifier loaded with its validated card, and P(Fake) for a
batch of decoded images under that card.

Evaluation, training's final scoring, the app, batch prediction and the robustness report all
come here, so the Fake output index, the test-time flip, the image-size policy and the decision
rule exist once. A forward pass is one compiled `tf.function` per model and flip setting, fed in
batches, so a caller pays no per-call `model.predict` set-up.

A model exported to ONNX (export_model.py) loads here too, with its card, and runs on
onnxruntime: nothing on that path imports TensorFlow, so prediction and the app work in an
environment without it (`pip install '.[onnx]'`).
"""

import os
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realfake.core.config import (
    CLASS_NAMES,
    DEFAULT_BACKBONE,
    INFERENCE_BATCH_SIZE,
    POSITIVE_CLASS,
)
from realfake.core.errors import PipelineError
from realfake.inference.modelcard import (
    CardError,
    backbone_of,
    card_path,
    load_card,
    model_identity,
    save_card,
    uses_test_time_flip,
)

FAKE_INDEX = CLASS_NAMES.index(POSITIVE_CLASS)
REAL_INDEX = 1 - FAKE_INDEX
DEFAULT_THRESHOLD = 0.5
TRAIN_COMMAND = "python model_training.py --recipe cifake"
UNCERTAIN = "Uncertain"
# An image with a side beyond this multiple of the model's input side is seen only after heavy
# down-scaling, which removes much of the fine texture the model learned to read; down-scaling is
# where its accuracy falls furthest (README "Robustness").
FAR_FROM_TRAINING_FACTOR = 2


class ModelUnavailable(PipelineError):
    """No usable model: missing, unreadable, or at odds with its card."""


class OnnxModel:
    """An exported classifier run by onnxruntime: float32 pixels (n, side, side, 3) in, class
    probabilities (n, 2) out, with the card's mirror average already inside its graph."""

    def __init__(self, path: Path, flip_in_graph: bool):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # warnings about unused initialisers are not faults
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        (self.input,) = self.session.get_inputs()
        self.output_names = [output.name for output in self.session.get_outputs()]
        self.input_shape = tuple(self.input.shape)
        self.flip_in_graph = flip_in_graph

    def class_probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (n, 2) of one batch of float32 pixels."""
        return self.session.run(self.output_names[:1], {self.input.name: pixels})[0]


def label_for(probability_fake: float, threshold: float) -> str:
    """'Fake' when P(Fake) reaches the threshold, else 'Real'."""
    return POSITIVE_CLASS if probability_fake >= threshold else "Real"


def size_notice(width: int, height: int, image_size: int) -> str | None:
    """A plain sentence for an image whose longer side exceeds FAR_FROM_TRAINING_FACTOR times
    the model's input side, saying how far it is shrunk; None for images close to that size."""
    side = max(width, height)
    if side <= FAR_FROM_TRAINING_FACTOR * image_size:
        return None
    return (
        f"This image is {width:,} x {height:,} pixels; the model learned from {image_size} x "
        f"{image_size} images and sees this one only after shrinking it {side / image_size:.0f} "
        "times, so this verdict is less reliable"
    )


@dataclass(frozen=True)
class Prediction:
    """One image's result under a card: P(Fake), P(Real), the threshold and the uncertain band."""

    probability_fake: float
    probability_real: float
    threshold: float
    uncertain_band: tuple[float, float] | None = None

    @property
    def label(self) -> str:
        """'Fake' when probability_fake reaches the threshold, else 'Real'."""
        return label_for(self.probability_fake, self.threshold)

    @property
    def uncertain(self) -> bool:
        """Whether P(Fake) lies in the card's band around the threshold, where answers often err."""
        if self.uncertain_band is None:
            return False
        low, high = self.uncertain_band
        return low <= self.probability_fake <= high

    @property
    def verdict(self) -> str:
        """The label, or 'Uncertain' inside the uncertain band."""
        return UNCERTAIN if self.uncertain else self.label


@dataclass(frozen=True)
class Classifier:
    """A loaded model with the settings of its card (defaults where it has none)."""

    model: object
    path: Path
    card: dict
    image_size: int
    threshold: float
    test_time_flip: bool
    uncertain_band: tuple[float, float] | None
    backbone: str = DEFAULT_BACKBONE

    @property
    def is_keras(self) -> bool:
        """Whether the model is the Keras model itself (which has gradients, so heatmaps), not
        an export run by another runtime."""
        return not isinstance(self.model, OnnxModel)

    def class_probabilities(
        self, images: np.ndarray, batch_size: int = INFERENCE_BATCH_SIZE
    ) -> np.ndarray:
        """(n, 2) class probabilities in CLASS_NAMES order under this card (see `forward`)."""
        return class_probabilities(self.model, images, self.test_time_flip, batch_size)

    def probability_fake(
        self, images: np.ndarray, batch_size: int = INFERENCE_BATCH_SIZE
    ) -> np.ndarray:
        """P(Fake) for a batch of decoded (n, side, side, 3) images, under this card."""
        return self.class_probabilities(images, batch_size)[:, FAKE_INDEX]

    def predictions(
        self, images: np.ndarray, batch_size: int = INFERENCE_BATCH_SIZE
    ) -> list[Prediction]:
        """One Prediction per image."""
        return [
            Prediction(
                float(row[FAKE_INDEX]), float(row[REAL_INDEX]), self.threshold, self.uncertain_band
            )
            for row in self.class_probabilities(images, batch_size)
        ]


def load_classifier(model_path: Path, threshold: float | None = None) -> Classifier:
    """Load a saved classifier and its validated card, or raise ModelUnavailable in one line.

    The model's input size is the truth; a card that says otherwise, lists other classes, or
    records another model file is refused. Without a card: threshold 0.5, the image alone. The
    card's `backbone` (ResNet101 where it has none) names the base layer inside the model.
    `threshold` overrides the card's. An `.onnx` model (export_model.py) needs its card, which
    says whether the mirror average is inside its graph; it runs without TensorFlow.
    """
    model_path = Path(model_path)
    if model_path.is_dir():
        raise ModelUnavailable(f"{model_path} is a folder, not a model file (.h5 or .onnx)")
    if not model_path.is_file():
        raise ModelUnavailable(f"no model at {model_path} yet: train one with `{TRAIN_COMMAND}`")
    try:
        card = load_card(model_path) or {}
    except CardError as error:
        raise ModelUnavailable(str(error)) from None
    try:
        model = _load_model(model_path, card)
    except ModelUnavailable:
        raise
    except Exception as error:  # h5py, Keras and onnxruntime raise many types for a broken file
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ModelUnavailable(
            f"the model at {model_path} cannot be loaded: {first_line}"
        ) from None
    shape = model.input_shape
    if len(shape) != 4 or shape[1] != shape[2] or shape[1] is None or shape[3] != 3:
        raise ModelUnavailable(f"the model at {model_path} does not take square RGB images")
    image_size = int(shape[1])
    if card.get("image_size", image_size) != image_size:
        raise ModelUnavailable(
            f"the model card {card_path(model_path)} says image size {card['image_size']} but the "
            f"model {model_path} takes {image_size}"
        )
    if not isinstance(model, OnnxModel) and int(model.output_shape[-1]) != len(CLASS_NAMES):
        raise ModelUnavailable(
            f"the model at {model_path} does not have {len(CLASS_NAMES)} outputs"
        )
    band = card.get("uncertain_band")
    if threshold is None:
        threshold = card.get("threshold", DEFAULT_THRESHOLD)
        band = (band["low"], band["high"]) if band else None
    else:
        band = None  # the band belongs to the card's threshold, not to one given instead
    return Classifier(
        model=model,
        path=model_path,
        card=card,
        image_size=image_size,
        threshold=float(threshold),
        test_time_flip=uses_test_time_flip(card),
        uncertain_band=band,
        backbone=backbone_of(card),
    )


def _load_model(model_path: Path, card: dict):
    """The Keras model of an .h5 file, or an OnnxModel for an .onnx file with its card."""
    if model_path.suffix.lower() != ".onnx":
        try:
            import keras
        except ImportError:
            raise ModelUnavailable(
                f"the Keras model {model_path} needs TensorFlow: pip install '.[tensorflow]', "
                "or serve its ONNX export (export_model.py --format onnx)"
            ) from None
        return keras.models.load_model(model_path, compile=False)
    if card.get("format") != "onnx" or "flip_in_graph" not in card:
        raise ModelUnavailable(
            f"the ONNX model {model_path} needs the card export_model.py writes beside it "
            f"({card_path(model_path)}, format onnx), which says what its graph holds"
        )
    if card["flip_in_graph"] != uses_test_time_flip(card):
        raise ModelUnavailable(
            f"the model card {card_path(model_path)} asks for test_time_flip "
            f"{uses_test_time_flip(card)} but the graph of {model_path} has flip_in_graph "
            f"{card['flip_in_graph']}"
        )
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ModelUnavailable(
            f"the ONNX model {model_path} needs onnxruntime: pip install '.[onnx]'"
        ) from None
    return OnnxModel(model_path, card["flip_in_graph"])


def save_classifier(model, card: dict, model_path: Path) -> Path:
    """Write the model and then its card, each under a temporary name renamed into place.

    The card records the model file's size and hash, so a kill between the two renames leaves
    a new model beside an old card that every reader refuses, never a silent mismatch; a kill
    while the model is written leaves the previous model untouched.
    """
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    # Keras picks the format from the suffix, so the temporary name keeps it.
    partial = model_path.with_name(f".{model_path.stem}.partial{model_path.suffix}")
    model.save(partial, include_optimizer=False)
    identity = model_identity(partial, name=model_path.name)
    os.replace(partial, model_path)
    save_card(model_path, card, identity)
    return model_path


# One compiled forward pass per (model, flip), kept as long as the model lives.
_FORWARD: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def mirror(pixels):
    """The horizontal mirror images of a batch of images (n, rows, columns, 3) or of maps
    (n, rows, columns): the test-time flip's second view, for the forward pass and for the
    heatmaps that explain it."""
    import tensorflow as tf

    return tf.reverse(pixels, axis=[2])


def averaged_output(model, pixels, test_time_flip: bool):
    """The model's class probabilities for a batch of float32 pixels, uncompiled so that it can
    be differentiated: with `test_time_flip`, the mean over each image and its mirror image."""
    output = model(pixels, training=False)
    if test_time_flip:
        output = (output + model(mirror(pixels), training=False)) / 2
    return output


def forward(model, test_time_flip: bool):
    """The compiled forward pass: float32 pixels (n, side, side, 3) to class probabilities (n, 2).

    With `test_time_flip`, the mean of the outputs for each image and its horizontal mirror
    image: the model card's `test_time_flip`.
    """
    import tensorflow as tf

    compiled = _FORWARD.setdefault(model, {})
    if test_time_flip not in compiled:
        spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)

        @tf.function(input_signature=[spec])
        def probabilities(pixels):
            return averaged_output(model, pixels, test_time_flip)

        compiled[test_time_flip] = probabilities
    return compiled[test_time_flip]


def class_probabilities(
    model, images: np.ndarray, test_time_flip: bool = False, batch_size: int = INFERENCE_BATCH_SIZE
) -> np.ndarray:
    """(n, 2) class probabilities (float64) of a batch of raw RGB pixels, `batch_size` at a time."""
    images = np.asarray(images)
    if isinstance(model, OnnxModel):
        if test_time_flip != model.flip_in_graph:
            raise PipelineError(
                f"this ONNX model's graph has flip_in_graph {model.flip_in_graph}: it cannot "
                f"answer with test_time_flip {test_time_flip}"
            )
        function = model.class_probabilities
    else:
        function = forward(model, test_time_flip)
    outputs = [
        np.asarray(function(np.asarray(images[start : start + batch_size], dtype=np.float32)))
        for start in range(0, len(images), batch_size)
    ]
    if not outputs:
        return np.empty((0, len(CLASS_NAMES)), dtype=np.float64)
    return np.concatenate(outputs).astype(np.float64)


def probability_fake(
    model, images: np.ndarray, test_time_flip: bool = False, batch_size: int = INFERENCE_BATCH_SIZE
) -> np.ndarray:
    """P(Fake) of a batch of raw RGB pixels (uint8 or float), with the card's test-time flip."""
    return class_probabilities(model, images, test_time_flip, batch_size)[:, FAKE_INDEX]
