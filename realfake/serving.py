"""Serving the saved classifier: checked uploads in, probabilities and heatmaps out.

The model is loaded once per process and called through `tf.function`s with fixed input
signatures, so a request costs one decode and one compiled forward pass, never a per-call
`model.predict` set-up. Every image is decoded by `realfake.images.load_rgb`, exactly as training
and evaluation decode it, so the app's probabilities equal theirs for the same file.
"""

import base64
import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from realfake.errors import PipelineError
from realfake.images import load_rgb
from realfake.inference import FAKE_INDEX, Prediction, load_classifier
from realfake.model import BASE_NAME

# Pillow's readers tried on uploads; its JPEG reader also opens camera JPEGs (MPO).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
ALLOWED_DESCRIPTION = "JPEG, PNG, WebP, BMP, GIF or TIFF"
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# Grad-CAM on a coarser map than this paints a few blocks that say nothing about where to look.
GRAD_CAM_MIN_SIDE = 7
# The model card's test metrics as the page shows them: (key, label, format).
METRIC_FORMATS = (
    ("accuracy", "accuracy", "{:.1%}"),
    ("precision", "precision", "{:.1%}"),
    ("recall", "recall", "{:.1%}"),
    ("f1", "F1", "{:.3f}"),
    ("auc", "AUC", "{:.3f}"),
    ("loss", "loss", "{:.3f}"),
)
SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}


class UploadError(PipelineError):
    """An upload the app refuses, with the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_upload(
    data: bytes, image_size: int | None, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> np.ndarray:
    """Check an upload by its content and decode it with `load_rgb`; raise UploadError if bad.

    The header is read first, so the format and the pixel count are checked before any pixel
    is decoded: a small file that would expand to gigabytes is refused without expanding it.
    """
    if not data:
        raise UploadError("the file is empty")
    try:
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as image:
            width, height = image.size
    except Image.DecompressionBombError:
        raise UploadError(_too_many_pixels_message(None, max_pixels), 413) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise _unidentified(data) from None
    if width * height > max_pixels:
        raise UploadError(_too_many_pixels_message((width, height), max_pixels), 413)
    try:
        return load_rgb(data, image_size)
    except Image.DecompressionBombError:
        raise UploadError(_too_many_pixels_message((width, height), max_pixels), 413) from None
    except ValueError as error:  # Pillow's "conversion from X to RGB not supported"
        raise UploadError(f"unsupported image mode: {error}", 415) from None
    except Exception:  # truncated and corrupt files fail in many ways inside Pillow's decoders
        raise UploadError("the image is truncated or corrupt and cannot be decoded") from None


def _unidentified(data: bytes) -> UploadError:
    """415 for an image in a format the app does not take, 400 for anything that is no image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            other_format = image.format
    except Exception:  # not an image in any format Pillow knows
        return UploadError(f"not an image: upload a {ALLOWED_DESCRIPTION} file")
    return UploadError(
        f"unsupported image type {other_format}: upload a {ALLOWED_DESCRIPTION} file", 415
    )


def _too_many_pixels_message(size: tuple[int, int] | None, max_pixels: int) -> str:
    stated = (
        f"{size[0]:,} x {size[1]:,} = {size[0] * size[1]:,} pixels"
        if size
        else "far too many pixels"
    )
    return f"the image has {stated}; the limit is {max_pixels:,} pixels"


@dataclass(frozen=True)
class Heatmap:
    """Where the decision came from: a map in [0, 1] of the model's input size and its method."""

    values: np.ndarray
    method: str


class Predictor:
    """A loaded model with its card, answering batches of decoded images."""

    def __init__(self, model_path: Path, smoothgrad_samples: int = 16):
        import tensorflow as tf

        self.classifier = load_classifier(model_path)
        self.model_path = self.classifier.path
        self.model = model = self.classifier.model
        self.card = self.classifier.card
        self.image_size = side = self.classifier.image_size
        self.threshold = self.classifier.threshold
        self.test_time_flip = self.classifier.test_time_flip
        self.smoothgrad_samples = smoothgrad_samples

        self._front, self._base, self._head = _split_at_base(model)
        self.feature_side = self._feature_side()
        self.heatmap_method = (
            f"Grad-CAM on the {self.feature_side}x{self.feature_side} map of {BASE_NAME}'s "
            "last block"
            if self.feature_side >= GRAD_CAM_MIN_SIDE
            else f"SmoothGrad saliency ({smoothgrad_samples} noisy copies, gradient at the input)"
        )
        spec = tf.TensorSpec([None, side, side, 3], tf.float32)
        self._saliency = tf.function(self._saliency_graph, input_signature=[spec])
        self._grad_cam = tf.function(self._grad_cam_graph, input_signature=[spec])
        # Trace now, once, so concurrent first requests never race to build the graph.
        self.predict_arrays(np.zeros((1, side, side, 3), np.uint8))
        self._noise_lock = threading.Lock()
        self._rng = np.random.default_rng(0)

    def predict_arrays(self, images: np.ndarray) -> list[Prediction]:
        """Predictions for a batch of uint8 images of shape (n, side, side, 3), in one batch."""
        return self.classifier.predictions(images, batch_size=max(1, len(images)))

    def heatmap(self, image: np.ndarray) -> Heatmap:
        """A map of which input regions drove the verdict for one uint8 image."""
        pixels = image.astype(np.float32)[None]
        if self.feature_side >= GRAD_CAM_MIN_SIDE:
            values = self._grad_cam(pixels).numpy()[0]
        else:
            with self._noise_lock:
                noise = self._rng.normal(
                    0.0, 0.15 * 255.0, size=(self.smoothgrad_samples, *image.shape)
                ).astype(np.float32)
            values = self._saliency(pixels + noise).numpy()
            values = values.mean(axis=0)
        return Heatmap(_normalise(values), self.heatmap_method)

    def card_summary(self) -> dict:
        """What the page's "about this model" section shows."""
        metrics = self.card.get("test_metrics") or {}
        shown_metrics = [
            f"{label} {template.format(metrics[key])}"
            for key, label, template in METRIC_FORMATS
            if isinstance(metrics.get(key), int | float)
        ]
        training_data = self.card.get("training_data") or {}
        ordered_splits = sorted(training_data, key=lambda split: SPLIT_ORDER.get(split, 99))
        return {
            "model_file": self.model_path.name,
            "image_size": self.image_size,
            "threshold": self.threshold,
            "test_time_flip": self.test_time_flip,
            "training_data": {split: training_data[split] for split in ordered_splits},
            "test_metrics": shown_metrics,
            "test_images": metrics.get("images"),
            "weights": self.card.get("weights"),
            "preprocessing": self.card.get("preprocessing"),
            "created": self.card.get("created"),
            "has_card": bool(self.card),
        }

    def _feature_side(self) -> int:
        if self._base is None:
            return 0
        return int(self._base.output_shape[1])

    def _decision_score(self, probabilities):
        """Log-odds of the predicted class: unlike the probability it does not saturate."""
        import tensorflow as tf

        fake = probabilities[:, FAKE_INDEX]
        log_odds = tf.math.log(tf.maximum(fake, 1e-7)) - tf.math.log(tf.maximum(1 - fake, 1e-7))
        sign = tf.where(tf.stop_gradient(fake) >= self.threshold, 1.0, -1.0)
        return sign * log_odds

    def _saliency_graph(self, images):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(images)
            score = self._decision_score(self.model(images, training=False))
        gradient = tape.gradient(score, images)
        return tf.reduce_max(tf.abs(gradient), axis=-1)

    def _grad_cam_graph(self, images):
        import tensorflow as tf

        features = self._base(self._front(images), training=False)
        with tf.GradientTape() as tape:
            tape.watch(features)
            score = self._decision_score(self._head(features))
        gradient = tape.gradient(score, features)
        weights = tf.reduce_mean(gradient, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
        side = self.image_size
        return tf.image.resize(cam, (side, side), method="bilinear")[..., 0]


def _split_at_base(model):
    """The model as front (preprocessing), base and head callables, or (None, None, None).

    Grad-CAM needs the base's feature map inside the graph; the saved model is a straight chain
    around the nested base, so its outer layers are replayed in order on either side of it.
    """
    layer_names = [layer.name for layer in model.layers]
    if BASE_NAME not in layer_names:
        return None, None, None
    position = layer_names.index(BASE_NAME)
    front_layers = [layer for layer in model.layers[1:position]]
    head_layers = list(model.layers[position + 1 :])

    def chain(layers):
        def call(tensor):
            for layer in layers:
                tensor = layer(tensor, training=False)
            return tensor

        return call

    return chain(front_layers), model.layers[position], chain(head_layers)


def _normalise(values: np.ndarray) -> np.ndarray:
    """Scale a map to [0, 1], clipping the top percent so one hot pixel does not wash it out."""
    values = np.nan_to_num(values.astype(np.float32))
    values = values - values.min()
    top = float(np.percentile(values, 99))
    if top <= 0:
        return np.zeros_like(values)
    return np.clip(values / top, 0.0, 1.0)


def png_data_uri(pixels: np.ndarray) -> str:
    """A uint8 RGB array as a PNG data URI, so nothing is written to disk."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail(pixels: np.ndarray, max_side: int = 256) -> np.ndarray:
    """A copy for display: large images shrunk to `max_side`, tiny ones enlarged pixel by pixel."""
    image = Image.fromarray(pixels)
    factor = max_side // max(image.size)
    if factor > 1:
        # Square pixels show what a 32x32 image really holds; smoothing would invent detail.
        return np.asarray(
            image.resize((image.width * factor, image.height * factor), Image.NEAREST)
        )
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return np.asarray(image)


def overlay(model_view: np.ndarray, heatmap: np.ndarray, side: int = 256) -> np.ndarray:
    """The model's view of the image, enlarged to `side`, under the heatmap in colour."""
    from matplotlib import colormaps

    base = Image.fromarray(model_view).resize((side, side), Image.Resampling.BILINEAR)
    heat = Image.fromarray((heatmap * 255).astype(np.uint8)).resize(
        (side, side), Image.Resampling.BILINEAR
    )
    heat_values = np.asarray(heat, dtype=np.float32) / 255.0
    colours = colormaps["inferno"](heat_values)[..., :3] * 255.0
    alpha = 0.25 + 0.5 * heat_values[..., None]
    blended = (1 - alpha) * np.asarray(base, dtype=np.float32) + alpha * colours
    return np.clip(blended, 0, 255).astype(np.uint8)
