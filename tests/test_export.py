"""Exports for other runtimes: each format answers as the .h5 does (the mirror average inside its
graph), the SavedModel's signatures and a TF Serving REST body fit each other, every reader
refuses a card that describes another file, and batch prediction and the app answer on the ONNX
export in a process where TensorFlow cannot be imported."""

import base64
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
from conftest import make_tree
from PIL import Image

import export_model
import predict
from realfake.core.errors import PipelineError
from realfake.inference.classifier import ModelUnavailable, load_classifier
from realfake.inference.export import (
    BYTES_INPUT,
    BYTES_SIGNATURE,
    OUTPUTS,
    PIXELS_INPUT,
    PIXELS_SIGNATURE,
    ExportedModel,
    default_output,
    rest_request,
)
from realfake.inference.modelcard import CardError, card_path, load_card

PROJECT = Path(__file__).resolve().parent.parent
CARD = {
    "class_names": ["Fake", "Real"],
    "positive_class": "Fake",
    "image_size": 32,
    "threshold": 0.45,
    "uncertain_band": {"low": 0.4, "high": 0.5, "rule": "test"},
    "test_time_flip": True,
}
# Formats whose answers must equal the .h5's, and the quantized TFLite variants.
EXACT = [("savedmodel", "none"), ("onnx", "none"), ("tflite", "none")]
QUANTIZED = [("tflite", "dynamic-range"), ("tflite", "float16")]


def save_small_classifier(path: Path, seed: int = 0, card: dict = CARD) -> Path:
    """A classifier of under a thousand parameters in the project's contract: raw 0-255 RGB in,
    the rescaling inside, a 2-way softmax out; saved with its card as training saves one."""
    import keras

    from realfake.inference.classifier import save_classifier

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess")(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    return save_classifier(keras.Model(inputs, outputs), card, path)


def images(count: int, seed: int = 1) -> np.ndarray:
    """Random uint8 images with a left-right gradient, so that mirror images differ."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 120, 32, dtype=np.float32)[None, None, :, None]
    noise = rng.integers(0, 136, size=(count, 32, 32, 3))
    return (noise + ramp * rng.random((count, 1, 1, 1))).astype(np.uint8)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return save_small_classifier(tmp_path_factory.mktemp("export") / "small.h5")


@pytest.fixture(scope="module")
def exports(source) -> dict:
    """Every format exported once through the script: (format, quantization) -> path."""
    written = {}
    for export_format, quantization in EXACT + QUANTIZED:
        argv = ["--model", str(source), "--format", export_format]
        assert export_model.main([*argv, "--quantization", quantization]) == 0
        written[export_format, quantization] = default_output(source, export_format, quantization)
    return written


@pytest.fixture(scope="module")
def reference(source) -> tuple[np.ndarray, np.ndarray]:
    """300 images and the .h5's class probabilities for them through the project's own path."""
    pixels = images(300)
    return pixels, load_classifier(source).class_probabilities(pixels)


def exported_probabilities(path: Path, pixels: np.ndarray) -> np.ndarray:
    if path.suffix == ".onnx":
        return load_classifier(path).class_probabilities(pixels)
    return ExportedModel(path).class_probabilities(pixels)


@pytest.mark.parametrize(("export_format", "quantization"), EXACT)
def test_every_float32_export_answers_as_the_h5_on_300_images(
    export_format, quantization, exports, reference, source
):
    pixels, expected = reference
    got = exported_probabilities(exports[export_format, quantization], pixels)
    assert got.shape == (300, 2)
    assert np.abs(got - expected).max() < 1e-5
    # The mirror average is inside the graph: without it this model's answers differ.
    from realfake.inference.classifier import class_probabilities

    alone = class_probabilities(load_classifier(source).model, pixels, test_time_flip=False)
    assert np.abs(got - alone).max() > 1e-3


@pytest.mark.parametrize(("export_format", "quantization"), QUANTIZED)
def test_quantized_tflite_stays_close_and_keeps_the_labels(
    export_format, quantization, exports, reference
):
    pixels, expected = reference
    got = exported_probabilities(exports[export_format, quantization], pixels)
    assert np.abs(got - expected).max() < 1e-3
    threshold = CARD["threshold"]
    assert np.mean((got[:, 0] >= threshold) == (expected[:, 0] >= threshold)) >= 0.99


def test_each_card_names_its_format_its_file_and_the_source(exports, source):
    source_card = load_card(source)
    for (export_format, quantization), path in exports.items():
        card = load_card(path)  # also checks the export's size and hash against the card
        assert card["format"] == export_format and card["quantization"] == quantization
        assert card["model_file"] == path.name
        assert card["source_model"] == {
            key: source_card[key] for key in ("model_file", "model_bytes", "model_sha256")
        }
        for key in ("threshold", "uncertain_band", "class_names", "image_size", "test_time_flip"):
            assert card[key] == CARD[key], key
        assert card["flip_in_graph"] is True
    # The source's own card is untouched by the exports beside it.
    assert load_card(source)["model_sha256"] == source_card["model_sha256"]


def test_savedmodel_signatures_have_the_documented_names_and_dtypes(exports):
    import tensorflow as tf

    path = exports["savedmodel", "none"]
    signatures = tf.saved_model.load(str(path)).signatures
    assert set(signatures) == {PIXELS_SIGNATURE, BYTES_SIGNATURE}
    for name, input_name, dtype, shape in (
        (PIXELS_SIGNATURE, PIXELS_INPUT, tf.uint8, [None, 32, 32, 3]),
        (BYTES_SIGNATURE, BYTES_INPUT, tf.string, [None]),
    ):
        _, inputs = signatures[name].structured_input_signature
        assert list(inputs) == [input_name]
        assert inputs[input_name].dtype == dtype and inputs[input_name].shape.as_list() == shape
        outputs = signatures[name].structured_outputs
        assert set(outputs) == set(OUTPUTS)
        assert all(spec.dtype == tf.float32 for spec in outputs.values())
        assert outputs["probabilities"].shape.as_list() == [None, 2]
    assert set(load_card(path)["signatures"]) == {PIXELS_SIGNATURE, BYTES_SIGNATURE}


def encode(pixels: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, quality=90)
    return buffer.getvalue()


def parse_rest_body(body: str, signature) -> dict:
    """The tensors TF Serving builds from a row-format REST body: each named input stacked over
    the instances, {"b64": ...} decoded for inputs named *_bytes, cast to the signature's dtype;
    ValueError where the body does not fit the signature."""
    import tensorflow as tf

    payload = json.loads(body)
    _, specs = signature.structured_input_signature
    rows = payload["instances"]
    if any(set(row) != set(specs) for row in rows):
        raise ValueError(f"instances must have exactly the inputs {sorted(specs)}")
    tensors = {}
    for name, spec in specs.items():
        values = [row[name] for row in rows]
        if name.endswith("_bytes"):
            values = [base64.b64decode(value["b64"]) for value in values]
        tensor = tf.constant(values, dtype=spec.dtype)
        if not spec.shape.is_compatible_with(tensor.shape):
            raise ValueError(f"{name} has shape {tensor.shape}, the signature {spec.shape}")
        tensors[name] = tensor
    return tensors


def test_a_rest_body_fits_its_signature_and_answers_as_the_h5(exports, reference):
    import tensorflow as tf

    pixels, expected = reference
    signatures = tf.saved_model.load(str(exports["savedmodel", "none"])).signatures
    body = json.dumps(rest_request(images=pixels[:8]))
    assert json.loads(body)["signature_name"] == PIXELS_SIGNATURE
    answer = signatures[PIXELS_SIGNATURE](**parse_rest_body(body, signatures[PIXELS_SIGNATURE]))
    assert np.abs(answer["probability_fake"].numpy() - expected[:8, 0]).max() < 1e-5
    # The body of one signature does not fit the other.
    with pytest.raises(ValueError, match="exactly the inputs"):
        parse_rest_body(body, signatures[BYTES_SIGNATURE])

    files = [encode(image, "PNG") for image in pixels[:8]]
    body = json.dumps(rest_request(encoded=files))
    assert json.loads(body)["signature_name"] == BYTES_SIGNATURE
    answer = signatures[BYTES_SIGNATURE](**parse_rest_body(body, signatures[BYTES_SIGNATURE]))
    # PNG is lossless and the images already have the input size: the same pixels, same answer.
    assert np.abs(answer["probability_fake"].numpy() - expected[:8, 0]).max() < 1e-5


def test_the_bytes_signature_decodes_close_to_the_project(exports, source):
    """JPEGs at the input size, and larger PNGs resized inside the graph, against load_rgb."""
    import tensorflow as tf

    from realfake.core.images import load_rgb

    signature = tf.saved_model.load(str(exports["savedmodel", "none"])).signatures[BYTES_SIGNATURE]
    classifier = load_classifier(source)
    rng = np.random.default_rng(5)
    smooth = np.asarray(
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).resize((96, 96))
    )
    files = [encode(image, "JPEG") for image in images(20, seed=3)] + [encode(smooth, "PNG")]
    ours = classifier.probability_fake(np.stack([load_rgb(data, 32) for data in files]))
    graph = signature(**{BYTES_INPUT: tf.constant(files)})["probability_fake"].numpy()
    assert np.abs(graph[:20] - ours[:20]).max() < 1e-5  # the same libjpeg decode
    assert np.abs(graph[20] - ours[20]) < 0.02  # TensorFlow's resize is not Pillow's


def test_export_refuses_a_model_whose_card_describes_another(source, tmp_path, capsys):
    other = save_small_classifier(tmp_path / "other.h5", seed=1)
    shutil.copy(card_path(source), card_path(other))
    assert export_model.main(["--model", str(other), "--format", "onnx"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the model card") and "does not belong" in err
    assert err.count("\n") == 1
    assert not default_output(other, "onnx").exists()


@pytest.mark.parametrize(("export_format", "quantization"), EXACT)
def test_every_reader_refuses_an_export_whose_card_names_another_file(
    export_format, quantization, exports, tmp_path, capsys
):
    original = exports[export_format, quantization]
    path = tmp_path / original.name
    (shutil.copytree if original.is_dir() else shutil.copy)(original, path)
    card = load_card(original)
    card["model_sha256"] = "0" * 64  # the card of another file of the same size
    card_path(path).write_text(json.dumps(card))
    if export_format == "onnx":
        with pytest.raises(ModelUnavailable, match="does not belong") as caught:
            load_classifier(path)
        assert "\n" not in str(caught.value)
        images_folder = make_tree(tmp_path / "photos", {"a": 1})
        assert predict.main([str(images_folder), "--model", str(path), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: the model card") and err.count("\n") == 1
    else:
        with pytest.raises(CardError, match="does not belong") as caught:
            ExportedModel(path)
        assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "onnx", "--output", "{dir}/m.tflite"], "a onnx export is a .onnx file"),
        (["--format", "tflite", "--output", "{dir}/small.tflite"], "would replace the card"),
    ],
)
def test_export_usage_errors_in_one_line(argv, message, source, capsys):
    argv = [part.replace("{dir}", str(source.parent)) for part in argv]
    assert export_model.main(["--model", str(source), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_quantization_is_for_tflite_only(source, capsys):
    with pytest.raises(SystemExit) as caught:
        export_model.main(["--model", str(source), "--format", "onnx", "--quantization", "float16"])
    assert caught.value.code == 2
    assert "--quantization applies to --format tflite only" in capsys.readouterr().err


def test_an_export_of_an_export_is_refused(exports):
    from realfake.inference.export import ExportSettings
    from realfake.inference.export import export_model as export

    onnx = exports["onnx", "none"]
    with pytest.raises(PipelineError, match="already an export: export the .h5 it came from"):
        export(ExportSettings(onnx, "tflite", onnx.with_name("again.tflite")))


# The ONNX model where TensorFlow is not installed: simulated by an import hook that makes every
# import of tensorflow, keras or tf2onnx fail in a fresh process.
WITHOUT_TENSORFLOW = """
import importlib.abc, runpy, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("tensorflow", "keras", "tf2onnx"):
            raise ModuleNotFoundError(f"No module named {name!r} (not installed)")

sys.meta_path.insert(0, NoTensorFlow())
"""

RUN_SCRIPT = """
sys.argv = ["{script}", *sys.argv[1:]]
runpy.run_path("{script}", run_name="__main__")
"""

APP_REQUESTS = """
import io, json
from realfake.app.webapp import create_app

client = create_app({"MODEL_PATH": sys.argv[1]}).test_client()
data = open(sys.argv[2], "rb").read()
page = client.post("/", data={"file": (io.BytesIO(data), "one.png")})
api = client.post("/api/predict?heatmap=1", data={"file": (io.BytesIO(data), "one.png")})
print(json.dumps({
    "page_status": page.status_code, "page": page.get_data(as_text=True),
    "api_status": api.status_code, "api": api.get_json(),
    "tensorflow": "tensorflow" in sys.modules or "keras" in sys.modules,
}))
"""


def run_without_tensorflow(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW + code, *args],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_hook_really_keeps_tensorflow_out(source):
    completed = run_without_tensorflow(
        "from realfake.inference.classifier import load_classifier\nload_classifier(sys.argv[1])",
        str(source),
    )
    assert completed.returncode != 0
    assert "needs TensorFlow: pip install '.[tensorflow]'" in completed.stderr


def test_predict_answers_on_the_onnx_export_without_tensorflow(exports, source, tmp_path):
    folder = make_tree(tmp_path / "photos", {"a": 4, "b": 4}, extension=".png")
    output = tmp_path / "scores.jsonl"
    script = RUN_SCRIPT.format(script="predict.py")
    completed = run_without_tensorflow(
        script, str(folder), "--model", str(exports["onnx", "none"]), "--output", str(output)
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 8 and all(row["error"] is None for row in rows)

    from realfake.core.images import load_rgb

    expected = load_classifier(source).probability_fake(
        np.stack([load_rgb(Path(row["path"]), 32) for row in rows])
    )
    got = np.array([row["probability_fake"] for row in rows])
    assert np.abs(got - expected).max() < 1e-5


def test_the_app_answers_on_the_onnx_export_without_tensorflow(exports, tmp_path):
    upload = tmp_path / "one.png"
    upload.write_bytes(encode(images(1, seed=9)[0], "PNG"))
    completed = run_without_tensorflow(APP_REQUESTS, str(exports["onnx", "none"]), str(upload))
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.splitlines()[-1])
    assert result["tensorflow"] is False
    assert result["page_status"] == 200 and result["api_status"] == 200
    answer = result["api"]["predictions"][0]
    assert answer["verdict"] in ("Fake", "Real", "Uncertain") and answer["heatmap"] is None
    assert answer["heatmap_method"].startswith("No heatmap: this model runs as onnx")
    assert "provenance" in answer
    page = result["page"]
    assert "No heatmap: this model runs as onnx" in page and 'class="heatmap"' not in page
    assert "Provenance" in page and "Exported as onnx from small.h5" in page


def test_the_base_install_leaves_tensorflow_to_an_extra():
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    names = [requirement.split(">")[0].split("<")[0] for requirement in project["dependencies"]]
    assert not {"tensorflow", "keras", "tf2onnx"} & set(names)
    assert any(item.startswith("onnxruntime") for item in project["optional-dependencies"]["onnx"])
    assert "realfake[tensorflow,onnx,export]" in project["optional-dependencies"]["dev"]
