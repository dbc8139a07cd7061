"""Serving the saved classifier: checked uploads in, probabilities and heatmaps out.

Nothing here knows HTTP or HTML: an upload that cannot be used raises UploadError with a `kind`
(empty, not_image, unsupported, corrupt, too_large) that the web app turns into a status code.
The model is loaded once per process and called through `tf.function`s with fixed input
signatures, so a request costs one decode and one compiled forward pass, never a per-call
`model.predict` set-up. Every image is decoded by `realfake.core.images.load_rgb`, exactly as
training and evaluation decode it, so the app's probabilities equal theirs for the same file.
"""

import io
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from realfake.core.config import DEFAULT_MAX_IMAGE_PIXELS
from realfake.core.errors import PipelineError
from realfake.core.fileops import file_digest
from realfake.core.images import load_rgb, without_text_chunks
from realfake.inference.classifier import (
    FAKE_INDEX,
    Prediction,
    averaged_output,
    load_classifier,
    mirror,
)

# Pillow's readers tried on uploads; its JPEG reader also opens camera JPEGs (MPO).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
ALLOWED_DESCRIPTION = "JPEG, PNG, WebP, BMP, GIF or TIFF"
# Grad-CAM on a coarser map than this paints a few blocks that say nothing about where to look.
GRAD_CAM_MIN_SIDE = 7
# The first bytes of each allowed format: a file that starts like one but does not open is a
# damaged image, not something else.
SIGNATURES = (
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
)
UPLOAD_ERROR_KINDS = ("empty", "not_image", "unsupported", "corrupt", "too_large")


class UploadError(PipelineError):
    """An upload that cannot be used, with the `kind` of problem (one of UPLOAD_ERROR_KINDS)."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        if kind not in UPLOAD_ERROR_KINDS:
            raise ValueError(f"unknown upload error kind {kind!r}")
        self.kind = kind


@dataclass(frozen=True)
class DecodedUpload:
    """One upload decoded once: the model's square input, a copy for display, its own size."""

    model_view: np.ndarray
    display: np.ndarray | None
    width: int
    height: int


def upload_size(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) from the header alone; UploadError for anything that is no usable image.

    No pixel is decoded, so a small file that would expand to gigabytes is refused cheaply.
    """
    return _without_refused_text(_upload_size, data, max_pixels)


def _upload_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    with _open_upload(data, max_pixels) as image:
        return image.size


def decode_upload(
    data: bytes,
    image_size: int | None,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    display_side: int | None = None,
) -> DecodedUpload:
    """Check an upload by its content and decode it once with `load_rgb`; UploadError if bad.

    With `display_side`, the display copy (at most that side, its own shape) comes from the
    same decoded pixels as the model's view.
    """
    return _without_refused_text(_decode_upload, data, image_size, max_pixels, display_side)


def _without_refused_text(read, data: bytes, *arguments):
    """`read(data, *arguments)`, or, for a PNG that fails to decode and holds text chunks, the
    same on its bytes without them: Pillow refuses a text chunk that expands past its limit (at
    open before the pixels, as a ValueError at load after them), and that text is provenance
    (which the provenance reader reports unreadable), not pixels."""
    try:
        return read(data, *arguments)
    except UploadError as error:
        failed = error.kind in ("corrupt", "unsupported")
        pixels_only = without_text_chunks(data) if failed else None
        if pixels_only is None:
            raise
    return read(pixels_only, *arguments)


def _decode_upload(
    data: bytes, image_size: int | None, max_pixels: int, display_side: int | None
) -> DecodedUpload:
    with _open_upload(data, max_pixels) as image:
        width, height = image.size
        try:
            # Quarter turns swap the sides the viewer sees; read before load_rgb removes the tag.
            if image.getexif().get(ExifTags.Base.Orientation) in (5, 6, 7, 8):
                width, height = height, width
            model_view = load_rgb(image, image_size)
            display = None if display_side is None else _display_copy(image, display_side)
        except Image.DecompressionBombError:
            raise UploadError(
                _too_many_pixels_message((width, height), max_pixels), "too_large"
            ) from None
        except ValueError as error:  # Pillow's "conversion from X to RGB not supported"
            raise UploadError(f"unsupported image mode: {error}", "unsupported") from None
        except Exception:  # truncated and corrupt files fail in many ways inside Pillow's decoders
            raise UploadError(
                "the image is truncated or corrupt and cannot be decoded", "corrupt"
            ) from None
        return DecodedUpload(model_view, display, width, height)


def _open_upload(data: bytes, max_pixels: int) -> Image.Image:
    """The upload opened by Pillow (header read, no pixels), its format and pixel count checked."""
    if not data:
        raise UploadError("the file is empty", "empty")
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError:
        raise UploadError(_too_many_pixels_message(None, max_pixels), "too_large") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise _unidentified(data) from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise UploadError(_too_many_pixels_message((width, height), max_pixels), "too_large")
    return image


def _display_copy(image: Image.Image, side: int) -> np.ndarray:
    """A display copy of an image `load_rgb` has already decoded (and turned upright) in place."""
    factor = max(image.size) // (2 * side)  # keep twice the side for a sharp final resize
    if factor > 1 and image.mode not in ("1", "P", "PA") and not image.mode.startswith("I;16"):
        image = image.reduce(factor)
    return thumbnail(load_rgb(image, None), side)


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


def _unidentified(data: bytes) -> UploadError:
    """A damaged file of an allowed format, a format the app does not take, or no image at all."""
    if data.startswith(SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return UploadError("the image is truncated or corrupt and cannot be decoded", "corrupt")
    try:
        with Image.open(io.BytesIO(data)) as image:
            other_format = image.format
    except Exception:  # not an image in any format Pillow knows
        return UploadError(f"not an image: upload a {ALLOWED_DESCRIPTION} file", "not_image")
    return UploadError(
        f"unsupported image type {other_format}: upload a {ALLOWED_DESCRIPTION} file",
        "unsupported",
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
        self.classifier = load_classifier(model_path)
        self.model_path = self.classifier.path
        # A card records its model's hash, checked against the file as it was read.
        self.model_sha256 = self.classifier.card.get("model_sha256") or file_digest(model_path)
        self.model = model = self.classifier.model
        self.card = self.classifier.card
        self.image_size = side = self.classifier.image_size
        self.threshold = self.classifier.threshold
        self.test_time_flip = self.classifier.test_time_flip
        self.smoothgrad_samples = smoothgrad_samples
        # Heatmaps need gradients, which only the Keras model gives; an export answers alone.
        self.no_heatmap = None if self.classifier.is_keras else no_heatmap_reason(self.card)
        if self.no_heatmap is not None:
            self.heatmap_method = None
            self.predict_arrays(np.zeros((1, side, side, 3), np.uint8))
            return

        import tensorflow as tf

        self._front, self._base, self._head = _split_at_base(model, self.classifier.backbone)
        self.feature_side = self._feature_side()
        cells, base = self.feature_side, self.classifier.backbone
        self.heatmap_method = (
            f"Grad-CAM on the {cells}x{cells} map of {base}'s last block"
            if self.feature_side >= GRAD_CAM_MIN_SIDE
            else f"SmoothGrad saliency ({smoothgrad_samples} noisy copies, gradient at the input)"
        )
        spec = tf.TensorSpec([None, side, side, 3], tf.float32)
        self._saliency = tf.function(self._saliency_graph, input_signature=[spec])
        self._grad_cam = tf.function(self._grad_cam_graph, input_signature=[spec])
        self._noise_lock = threading.Lock()
        # Trace both graphs now, once: concurrent first requests never race to build them, and
        # the first visitor does not wait many seconds for the gradient graph.
        blank = np.zeros((1, side, side, 3), np.uint8)
        self.predict_arrays(blank)
        self._rng = np.random.default_rng(0)
        self.heatmap(blank[0])
        self._rng = np.random.default_rng(0)  # the same noise as if nothing had been traced

    def predict_arrays(self, images: np.ndarray) -> list[Prediction]:
        """Predictions for a batch of uint8 images of shape (n, side, side, 3), in one batch."""
        return self.classifier.predictions(images, batch_size=max(1, len(images)))

    def heatmap(self, image: np.ndarray) -> Heatmap:
        """A map of which input regions drove the verdict for one uint8 image."""
        if self.no_heatmap is not None:
            raise PipelineError(self.no_heatmap)
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

    # Both maps explain the answer the page shows: under the card's test_time_flip that is the
    # mean of the outputs for the image and its mirror image, so the mirror's part is drawn too.

    def _saliency_graph(self, images):
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(images)
            probabilities = averaged_output(self.model, images, self.test_time_flip)
            score = self._decision_score(probabilities)
        gradient = tape.gradient(score, images)
        return tf.reduce_max(tf.abs(gradient), axis=-1)

    def _grad_cam_graph(self, images):
        import tensorflow as tf

        views = [images, mirror(images)] if self.test_time_flip else [images]
        features = [self._base(self._front(view), training=False) for view in views]
        with tf.GradientTape() as tape:
            tape.watch(features)
            probabilities = tf.add_n([self._head(f) for f in features]) / len(features)
            score = self._decision_score(probabilities)
        gradients = tape.gradient(score, features)
        side = self.image_size
        cams = []
        for view_features, gradient in zip(features, gradients, strict=True):
            weights = tf.reduce_mean(gradient, axis=(1, 2), keepdims=True)
            cam = tf.nn.relu(tf.reduce_sum(weights * view_features, axis=-1, keepdims=True))
            cams.append(tf.image.resize(cam, (side, side), method="bilinear")[..., 0])
        if self.test_time_flip:
            cams[1] = mirror(cams[1])  # the mirror's map, back onto the image
        return tf.add_n(cams) / len(cams)


def no_heatmap_reason(card: dict) -> str:
    """One line on why a model exported to another runtime shows no heatmap."""
    source = (card.get("source_model") or {}).get("model_file", "the Keras model (.h5)")
    return (
        f"No heatmap: this model runs as {card.get('format', 'an export')}, without the "
        f"gradients a heatmap is drawn from; serve {source} to see one."
    )


def _split_at_base(model, base_name: str):
    """The model as front (preprocessing), base and head callables, or (None, None, None).

    Grad-CAM needs the base's feature map inside the graph; the saved model is a straight chain
    around the nested base (the layer named after the card's backbone), so its outer layers are
    replayed in order on either side of it.
    """
    layer_names = [layer.name for layer in model.layers]
    if base_name not in layer_names:
        return None, None, None
    position = layer_names.index(base_name)
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
