"""Export the classifier where other runtimes serve it: a TensorFlow SavedModel (TF Serving,
KServe), ONNX (onnxruntime, no TensorFlow) and TFLite (phones), each with a card beside it.

Every export starts from the one loader (`inference.load_classifier`, so a model whose card does
not match it is refused) and traces the one forward pass (`inference.averaged_output`): raw
0-255 RGB pixels in, the preprocessing inside the model, the mirror average of the card's
`test_time_flip` inside the exported graph, class probabilities out. The card beside the export
keeps the source card's threshold, uncertain band, classes and input size, names the format,
records the export's own size and SHA-256 (read by the same identity check as the .h5's) and the
source model's, so every reader refuses an export whose card describes another file.

Example:
    result = export_model(ExportSettings(Path("models/m.h5"), "onnx"))
    print(result.line())
"""

import base64
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realfake.core.errors import PipelineError
from realfake.inference.classifier import FAKE_INDEX, averaged_output, load_classifier
from realfake.inference.modelcard import (
    EXPORT_FORMATS,
    IDENTITY_KEYS,
    QUANTIZATIONS,
    card_path,
    load_card,
    model_identity,
    save_card,
)

# The SavedModel's signatures: decoded pixels (the serving default) and encoded image files.
PIXELS_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "predict_image_bytes"
# TF Serving's REST API decodes {"b64": ...} values only for inputs whose names end in _bytes.
PIXELS_INPUT = "images"
BYTES_INPUT = "image_bytes"
OUTPUTS = ("probability_fake", "probabilities")
ONNX_OPSET = 17
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite"}


@dataclass(frozen=True)
class ExportSettings:
    """What to export: the source .h5 (its card beside it), the format, where to write it
    (None: beside the source) and, for TFLite, the quantization."""

    model: Path
    format: str
    output: Path | None = None
    quantization: str = "none"


@dataclass(frozen=True)
class ExportResult:
    """The written export, its card, and the card's contents."""

    path: Path
    card_path: Path
    card: dict

    def line(self) -> str:
        quantized = f", {self.card['quantization']}" if self.card["format"] == "tflite" else ""
        return (
            f"exported {self.card['source_model']['model_file']} as {self.card['format']}"
            f"{quantized} to {self.path} ({self.card['model_bytes']:,} bytes, SHA-256 "
            f"{self.card['model_sha256'][:12]}...), card {self.card_path}"
        )


def default_output(model: Path, export_format: str, quantization: str = "none") -> Path:
    """Beside the source, named so that no two cards meet: M_onnx.onnx, M_tflite.tflite,
    M_tflite_float16.tflite, ..., or the folder M_savedmodel/1 (TF Serving reads numbered
    versions under a model's base path)."""
    model = Path(model)
    if export_format == "savedmodel":
        return model.with_name(f"{model.stem}_savedmodel") / "1"
    stem = f"{model.stem}_{export_format}"
    stem = stem if quantization == "none" else f"{stem}_{quantization.replace('-', '_')}"
    return model.with_name(stem + SUFFIXES[export_format])


def export_model(settings: ExportSettings) -> ExportResult:
    """Write the export and then its card; raise PipelineError in one line for bad input."""
    if settings.format not in EXPORT_FORMATS:
        raise PipelineError(f"unknown format {settings.format!r}: one of {EXPORT_FORMATS}")
    if settings.quantization not in QUANTIZATIONS:
        raise PipelineError(f"unknown quantization {settings.quantization!r}: {QUANTIZATIONS}")
    if settings.quantization != "none" and settings.format != "tflite":
        raise PipelineError("quantization applies to the tflite format only")
    output = Path(
        settings.output or default_output(settings.model, settings.format, settings.quantization)
    )
    suffix = SUFFIXES.get(settings.format)
    if suffix and output.suffix.lower() != suffix:
        raise PipelineError(f"a {settings.format} export is a {suffix} file, not {output.name}")
    if settings.format == "savedmodel" and output.is_file():
        raise PipelineError(f"a SavedModel is a folder, and {output} is a file")
    if card_path(output).resolve() == card_path(settings.model).resolve():
        raise PipelineError(
            f"the export's card {card_path(output)} would replace the card of {settings.model}: "
            "give an --output with another name"
        )
    classifier = load_classifier(settings.model)  # the identity check refuses a foreign card
    if not classifier.is_keras:
        raise PipelineError(f"{settings.model} is already an export: export the .h5 it came from")

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as work:
        work = Path(work)
        saved_model = work / "savedmodel"
        signatures = write_saved_model(classifier.model, classifier.test_time_flip, saved_model)
        if settings.format == "savedmodel":
            written = saved_model
        elif settings.format == "onnx":
            written = write_onnx(classifier.model, classifier.test_time_flip, work / "m.onnx")
        else:
            written = write_tflite(saved_model, work / "m.tflite", settings.quantization)
        identity = model_identity(written, name=output.name)
        if output.is_dir():
            shutil.rmtree(output)
        os.replace(written, output)

    card = {key: value for key, value in classifier.card.items() if key not in IDENTITY_KEYS}
    card.update(
        class_names=["Fake", "Real"],
        positive_class="Fake",
        image_size=classifier.image_size,
        threshold=classifier.threshold,
        test_time_flip=classifier.test_time_flip,
        format=settings.format,
        flip_in_graph=classifier.test_time_flip,
        quantization=settings.quantization,
        source_model=model_identity(classifier.path),
    )
    if classifier.uncertain_band is not None:
        low, high = classifier.uncertain_band
        card["uncertain_band"] = {**card.get("uncertain_band", {}), "low": low, "high": high}
    if settings.format == "savedmodel":
        card["signatures"] = signatures
    written_card = save_card(output, card, identity)
    return ExportResult(output, written_card, load_card(output))


def write_saved_model(model, test_time_flip: bool, path: Path) -> dict:
    """A SavedModel with the pixel and the encoded-bytes signatures; returns their description.

    serving_default: uint8 `images` (n, side, side, 3) -> `probability_fake` (n,) and
    `probabilities` (n, 2). predict_image_bytes: string `image_bytes` (n,), each a JPEG, PNG,
    GIF or BMP file, decoded (first frame, RGB) and resized bilinearly to the input side inside
    the graph, then the same outputs.
    """
    import keras
    import tensorflow as tf

    side = int(model.input_shape[1])

    def outputs(pixels):
        probabilities = averaged_output(model, pixels, test_time_flip)
        return {OUTPUTS[0]: probabilities[:, FAKE_INDEX], OUTPUTS[1]: probabilities}

    def decode(data):
        # Pillow decodes JPEGs with libjpeg's accurate integer transform; TensorFlow's default
        # is the fast one, which moves pixel values by a step or two.
        image = tf.cond(
            tf.io.is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
        )
        image = tf.image.resize(image, (side, side), method="bilinear", antialias=True)
        # The project's decoder hands the model whole 0-255 values; so does this one.
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    pixels_spec = tf.TensorSpec([None, side, side, 3], tf.uint8, name=PIXELS_INPUT)
    bytes_spec = tf.TensorSpec([None], tf.string, name=BYTES_INPUT)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        PIXELS_SIGNATURE, lambda images: outputs(tf.cast(images, tf.float32)), [pixels_spec]
    )
    archive.add_endpoint(
        BYTES_SIGNATURE,
        lambda image_bytes: outputs(
            tf.cast(
                tf.map_fn(
                    decode,
                    image_bytes,
                    fn_output_signature=tf.TensorSpec([side, side, 3], tf.uint8),
                ),
                tf.float32,
            )
        ),
        [bytes_spec],
    )
    archive.write_out(str(path), verbose=False)
    output_specs = {OUTPUTS[0]: ["float32", [None]], OUTPUTS[1]: ["float32", [None, 2]]}
    return {
        PIXELS_SIGNATURE: {
            "inputs": {PIXELS_INPUT: ["uint8", [None, side, side, 3]]},
            "outputs": output_specs,
        },
        BYTES_SIGNATURE: {"inputs": {BYTES_INPUT: ["string", [None]]}, "outputs": output_specs},
    }


def write_onnx(model, test_time_flip: bool, path: Path) -> Path:
    """The forward pass as ONNX (tf2onnx, opset ONNX_OPSET): float32 `pixels` (n, side, side, 3),
    raw 0-255, in; class probabilities (n, 2) out."""
    import tensorflow as tf
    import tf2onnx

    side = int(model.input_shape[1])
    spec = tf.TensorSpec([None, side, side, 3], tf.float32, name="pixels")

    @tf.function(input_signature=[spec])
    def probabilities(pixels):
        return tf.identity(averaged_output(model, pixels, test_time_flip), name="probabilities")

    tf2onnx.convert.from_function(
        probabilities, input_signature=[spec], opset=ONNX_OPSET, output_path=str(path)
    )
    return path


def write_tflite(saved_model: Path, path: Path, quantization: str) -> Path:
    """The SavedModel's pixel signature as TFLite: float32 weights, dynamic-range int8 weights,
    or float16 weights."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model), signature_keys=[PIXELS_SIGNATURE]
    )
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    path.write_bytes(converter.convert())
    return path


class ExportedModel:
    """A SavedModel or TFLite export loaded after its card's identity check, answering class
    probabilities for uint8 images through its pixel signature (the mirror average inside)."""

    def __init__(self, path: Path):
        path = Path(path)
        if not path.exists():
            raise PipelineError(f"no exported model at {path}")
        self.path = path
        self.card = load_card(path)  # CardError for a card that describes another file
        if self.card is None or self.card.get("format") not in ("savedmodel", "tflite"):
            raise PipelineError(
                f"{path} needs the card export_model.py writes beside it ({card_path(path)})"
            )
        self.format = self.card["format"]
        import tensorflow as tf

        if self.format == "savedmodel":
            self.loaded = tf.saved_model.load(str(path))
            self._run = self.loaded.signatures[PIXELS_SIGNATURE]
        else:
            with warnings.catch_warnings():  # its move to the ai-edge-litert package
                warnings.simplefilter("ignore", UserWarning)
                interpreter = tf.lite.Interpreter(model_path=str(path))
            self._run = interpreter.get_signature_runner(PIXELS_SIGNATURE)

    def class_probabilities(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """(n, 2) class probabilities (float64) of uint8 images, `batch_size` at a time."""
        images = np.asarray(images, dtype=np.uint8)
        outputs = [
            np.asarray(self._run(**{PIXELS_INPUT: images[start : start + batch_size]})[OUTPUTS[1]])
            for start in range(0, len(images), batch_size)
        ]
        return np.concatenate(outputs).astype(np.float64) if outputs else np.empty((0, 2))


def rest_request(images: np.ndarray | None = None, encoded: list[bytes] | None = None) -> dict:
    """The JSON body of a TF Serving (or KServe v1) REST predict request in the row format:
    uint8 images for serving_default, or encoded files (base64) for predict_image_bytes."""
    if (images is None) == (encoded is None):
        raise ValueError("give either images or encoded files")
    if images is not None:
        rows = [{PIXELS_INPUT: image.tolist()} for image in np.asarray(images, dtype=np.uint8)]
        return {"signature_name": PIXELS_SIGNATURE, "instances": rows}
    rows = [{BYTES_INPUT: {"b64": base64.b64encode(data).decode("ascii")}} for data in encoded]
    return {"signature_name": BYTES_SIGNATURE, "instances": rows}
