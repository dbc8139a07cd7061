"""The Flask app through its test client: every route, every error status, each kind of upload."""

import base64
import io
import json
import re
import shutil
import struct
import threading
import zlib

import numpy as np
import pytest
from conftest import mirror
from PIL import Image

from realfake.app.serving import GRAD_CAM_MIN_SIDE, Predictor
from realfake.app.webapp import EXTENSION, create_app
from realfake.core.images import load_rgb
from realfake.inference.modelcard import load_card, save_card


def random_pixels(seed: int, height: int = 32, width: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def encode(image: Image.Image | np.ndarray, image_format: str, **options) -> bytes:
    """An image's file bytes in `image_format`, made in memory."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def model_probability(app, data: bytes) -> float:
    """probability_fake computed directly: the Keras model on load_rgb, no app code involved."""
    predictor = app.extensions[EXTENSION].get()
    pixels = load_rgb(data, predictor.image_size)[None].astype(np.float32)
    return float(predictor.model(pixels, training=False).numpy()[0, 0])


def post_files(client, files: list[tuple[bytes, str]], url: str = "/api/predict"):
    data = {"file": [(io.BytesIO(content), name) for content, name in files]}
    return client.post(url, data=data, content_type="multipart/form-data")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` pixels: a bomb's header, with no pixel data at all."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def bilevel_png_bomb(side: int) -> bytes:
    """A real decompression bomb: a side x side black PNG, a few hundred kB on disk."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    pixels = zlib.compress(row * side, 9)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


# --- routes -------------------------------------------------------------------------------------


def test_index_page_has_the_form_and_the_model_card(client):
    response = client.get("/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert 'enctype="multipart/form-data"' in html
    assert re.search(r'<input[^>]+type="file"[^>]+name="file"[^>]+multiple', html)
    assert "About this model" in html
    assert "resized to 32x32 pixels" in html
    assert "Decision threshold: 50.0%" in html
    assert "other generators" in html  # the caveat
    assert "No test metrics are recorded" in html  # the fixture's card has none


def test_page_loads_nothing_from_other_sites(client):
    html = client.get("/").get_data(as_text=True)
    references = re.findall(r'(?:src|href|action)="([^"]+)"', html)
    assert references and all(reference.startswith("/") for reference in references)
    for reference in references:
        if reference.startswith("/static/"):
            assert client.get(reference).status_code == 200
    policy = client.get("/").headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy


def test_health_reports_the_loaded_model(client, saved_model):
    response = client.get("/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["model"] == saved_model.name  # the file name only, not the server's folders
    assert body["model_sha256"] == load_card(saved_model)["model_sha256"]
    assert body["image_size"] == 32 and body["threshold"] == 0.5
    assert body["heatmap_method"].startswith("SmoothGrad")


def test_api_predicts_one_file_as_the_model_does(app, client):
    data = encode(random_pixels(1), "PNG")
    response = post_files(client, [(data, "photo.png")])
    assert response.status_code == 200
    (answer,) = response.get_json()["predictions"]
    assert set(answer) == {
        "filename",
        "label",
        "verdict",
        "uncertain",
        "probability_fake",
        "probability_real",
        "threshold",
        "notices",
        "provenance",
    }
    assert answer["filename"] == "photo.png"
    assert answer["probability_fake"] == pytest.approx(model_probability(app, data), abs=1e-6)
    assert answer["probability_fake"] + answer["probability_real"] == pytest.approx(1, abs=1e-6)
    assert answer["threshold"] == 0.5
    expected_label = "Fake" if answer["probability_fake"] >= 0.5 else "Real"
    assert answer["label"] == expected_label
    # The fixture's card has no uncertain band, and a 32x32 image is the training size.
    assert answer["verdict"] == expected_label and answer["uncertain"] is False
    assert answer["notices"] == []


def test_api_answers_several_files_in_order(app, client):
    files = [(encode(random_pixels(seed), "PNG"), f"image_{seed}.png") for seed in range(5)]
    response = post_files(client, files)
    assert response.status_code == 200
    answers = response.get_json()["predictions"]
    assert [answer["filename"] for answer in answers] == [name for _, name in files]
    expected = [model_probability(app, data) for data, _ in files]
    assert [answer["probability_fake"] for answer in answers] == pytest.approx(expected, abs=1e-6)
    # Different images get different answers, so the comparison above is not trivially true.
    assert max(expected) - min(expected) > 1e-4


def test_api_returns_a_heatmap_on_request(client):
    response = client.post(
        "/api/predict?heatmap=1",
        data={"file": (io.BytesIO(encode(random_pixels(2), "PNG")), "a.png")},
    )
    assert response.status_code == 200
    (answer,) = response.get_json()["predictions"]
    assert answer["heatmap_method"].startswith("SmoothGrad")
    prefix = "data:image/png;base64,"
    assert answer["heatmap"].startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(answer["heatmap"][len(prefix) :]))) as image:
        assert image.size == (256, 256) and image.mode == "RGB"


def test_upload_page_shows_verdict_probability_threshold_and_heatmap(app, client):
    data = encode(random_pixels(3), "JPEG", quality=95)
    response = post_files(client, [(data, "holiday.jpg")], url="/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    probability = model_probability(app, data)
    verdict = "AI-generated" if probability >= 0.5 else "Real"
    assert f'<p class="verdict">{verdict}</p>' in html
    shown = float(re.search(r'data-probability="([0-9.]+)"', html).group(1))
    assert shown == pytest.approx(probability, abs=1e-6)
    assert f"{100 * probability:.1f}%" in html
    assert "Decision threshold: <span" in html and "50.0%" in html
    assert html.count("data:image/png;base64,") == 2  # the image and its heatmap, inline
    assert "holiday.jpg" in html


def test_upload_page_reports_a_bad_file_beside_good_ones(client):
    files = [(encode(random_pixels(4), "PNG"), "good.png"), (b"hello", "notes.png")]
    response = post_files(client, files, url="/")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert html.count('class="verdict"') == 1
    assert re.search(r'class="error file-error">not an image', html)


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (None, 400, "no file"),
        (b"\x00not an image at all", 400, "not an image"),
    ],
)
def test_upload_page_errors_are_friendly(client, data, status, message):
    files = [] if data is None else [(data, "x.jpg")]
    response = post_files(client, files, url="/")
    assert response.status_code == status
    html = response.get_data(as_text=True)
    assert message in html and "<form" in html and "Traceback" not in html


def test_unknown_routes_and_methods_answer_json_on_the_api(client):
    response = client.get("/api/predict")
    assert response.status_code == 405
    assert response.get_json()["status"] == 405
    response = client.get("/api/nothing")
    assert response.status_code == 404 and "error" in response.get_json()
    response = client.get("/nothing")
    assert response.status_code == 404 and "<form" in response.get_data(as_text=True)


# --- kinds of upload ----------------------------------------------------------------------------


def _gif_first_frame_differs() -> tuple[bytes, bytes]:
    frames = [Image.fromarray(random_pixels(seed)).convert("P") for seed in (10, 11)]
    animated = io.BytesIO()
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    first = encode(frames[0].convert("RGB"), "PNG")
    return animated.getvalue(), first


def _cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(random_pixels(12)).convert("CMYK"), "JPEG", quality=95)


def _sixteen_bit_png() -> bytes:
    values = np.random.default_rng(13).integers(0, 65536, size=(32, 32), dtype=np.uint16)
    return encode(Image.fromarray(values), "PNG")


def _rgba_png() -> bytes:
    pixels = np.random.default_rng(14).integers(0, 256, size=(32, 32, 4), dtype=np.uint8)
    return encode(Image.fromarray(pixels, mode="RGBA"), "PNG")


UPLOADS = {
    "jpeg": lambda: encode(random_pixels(20, 48, 40), "JPEG"),
    "png": lambda: encode(random_pixels(21), "PNG"),
    "webp": lambda: encode(random_pixels(22), "WEBP", lossless=True),
    "bmp": lambda: encode(random_pixels(23), "BMP"),
    "tiff": lambda: encode(random_pixels(24), "TIFF"),
    "gif": lambda: encode(Image.fromarray(random_pixels(25)).convert("P"), "GIF"),
    "rgba": _rgba_png,
    "grayscale": lambda: encode(Image.fromarray(random_pixels(26)).convert("L"), "PNG"),
    "palette": lambda: encode(Image.fromarray(random_pixels(27)).convert("P"), "PNG"),
    "cmyk": _cmyk_jpeg,
    "16-bit": _sixteen_bit_png,
    "large": lambda: encode(random_pixels(28, 900, 1200), "JPEG"),
}


@pytest.mark.parametrize("kind", sorted(UPLOADS))
def test_each_kind_of_upload_is_accepted_and_decoded_as_in_training(app, client, kind):
    data = UPLOADS[kind]()
    response = post_files(client, [(data, "upload.bin")])  # the name says nothing of the type
    assert response.status_code == 200, response.get_json()
    (answer,) = response.get_json()["predictions"]
    assert answer["probability_fake"] == pytest.approx(model_probability(app, data), abs=1e-6)


def test_gif_uses_its_first_frame(client):
    animated, first_frame = _gif_first_frame_differs()
    answers = [
        post_files(client, [(data, "x")]).get_json()["predictions"][0]["probability_fake"]
        for data in (animated, first_frame)
    ]
    assert answers[0] == pytest.approx(answers[1], abs=1e-6)


def test_exif_orientation_is_applied(client):
    pixels = random_pixels(30, 24, 40)
    tagged = Image.fromarray(pixels)
    exif = tagged.getexif()
    exif[0x0112] = 6  # stored sideways: viewers turn it 90 degrees clockwise
    tagged_bytes = encode(tagged, "PNG", exif=exif)
    upright_bytes = encode(np.rot90(pixels, k=-1), "PNG")
    answers = [
        post_files(client, [(data, "x.png")]).get_json()["predictions"][0]["probability_fake"]
        for data in (tagged_bytes, upright_bytes, encode(pixels, "PNG"))
    ]
    assert answers[0] == pytest.approx(answers[1], abs=1e-6)
    assert abs(answers[0] - answers[2]) > 1e-6  # ignoring the tag would give this one


# --- errors -------------------------------------------------------------------------------------


def _truncated_png() -> bytes:
    return encode(random_pixels(40, 64, 64), "PNG")[:-200]


def _truncated_jpeg() -> bytes:
    data = encode(random_pixels(41, 64, 64), "JPEG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("files", "status", "message"),
    [
        ([], 400, "no file"),
        ([(b"", "empty.jpg")], 400, "the file is empty"),
        ([(b"just some text, no pixels", "photo.jpg")], 400, "not an image"),
        ([(b"%PDF-1.4\n%...", "doc.png")], 400, "not an image"),
        ([(_truncated_png(), "cut.png")], 400, "truncated or corrupt"),
        ([(_truncated_jpeg(), "cut.jpg")], 400, "truncated or corrupt"),
        ([(encode(random_pixels(42), "PPM"), "photo.jpg")], 415, "unsupported image type PPM"),
        ([(encode(random_pixels(43), "ICO"), "icon.png")], 415, "unsupported image type ICO"),
        ([(png_header_only(8000, 7000), "wide.png")], 413, "56,000,000 pixels"),
        ([(bilevel_png_bomb(20_000), "bomb.png")], 413, "the limit is 50,000,000 pixels"),
    ],
)
def test_api_rejects_bad_uploads_by_content(client, files, status, message):
    response = post_files(client, files)
    assert response.status_code == status
    body = response.get_json()
    assert body["status"] == status and message in body["error"]


def test_api_names_the_bad_file_among_several(client):
    files = [(encode(random_pixels(44), "PNG"), "fine.png"), (b"nope", "broken.png")]
    response = post_files(client, files)
    assert response.status_code == 400
    assert response.get_json()["filename"] == "broken.png"


def test_api_ignores_fields_with_other_names(client):
    response = client.post("/api/predict", data={"image": (io.BytesIO(b"x"), "a.png")})
    assert response.status_code == 400 and "no file" in response.get_json()["error"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"\x89PNG raw bytes", "image/png"), (json.dumps({"file": "x"}), "application/json")],
)
def test_api_wants_multipart(client, body, content_type):
    response = client.post("/api/predict", data=body, content_type=content_type)
    assert response.status_code == 415
    assert "multipart/form-data" in response.get_json()["error"]


def test_api_rejects_uploads_over_the_size_limit(client):
    too_big = b"\xff\xd8" + bytes(10 * 1024 * 1024)
    response = post_files(client, [(too_big, "huge.jpg")])
    assert response.status_code == 413
    assert "at most 10 MB" in response.get_json()["error"]
    response = post_files(client, [(too_big, "huge.jpg")], url="/")
    assert response.status_code == 413
    assert "at most 10 MB" in response.get_data(as_text=True)


def test_api_rejects_too_many_files(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_FILES", 3)
    files = [(encode(random_pixels(seed), "PNG"), f"{seed}.png") for seed in range(4)]
    response = post_files(client, files)
    assert response.status_code == 413
    assert response.get_json()["error"] == "too many files: 4; at most 3 per request"
    assert post_files(client, files[:3]).status_code == 200


def test_pixel_bound_is_configurable(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_IMAGE_PIXELS", 32 * 32)
    assert post_files(client, [(encode(random_pixels(45), "PNG"), "a.png")]).status_code == 200
    response = post_files(client, [(encode(random_pixels(46, 33, 32), "PNG"), "b.png")])
    assert response.status_code == 413


def test_uploads_are_never_spooled_to_disk(client, monkeypatch):
    import tempfile

    import werkzeug.formparser

    def refuse(*args, **kwargs):
        raise AssertionError("an upload was about to be written to a temporary file")

    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "SpooledTemporaryFile", refuse)
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    big = encode(random_pixels(47, 600, 600), "PNG")  # Werkzeug spools anything over 500 kB
    assert len(big) > 600_000
    assert post_files(client, [(big, "big.png")]).status_code == 200


def test_unexpected_failures_never_show_a_traceback(app, client, monkeypatch):
    predictor = app.extensions[EXTENSION].get()

    def fail(images):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(predictor, "predict_arrays", fail)
    for url in ("/api/predict", "/"):
        response = post_files(client, [(encode(random_pixels(48), "PNG"), "a.png")], url=url)
        assert response.status_code == 500
        text = response.get_data(as_text=True)
        assert "secret" not in text and "Traceback" not in text
    assert response.status_code == 500 and "internal error" in text


def test_concurrent_requests_get_their_own_answers(app):
    images = [encode(random_pixels(60 + index), "PNG") for index in range(8)]
    expected = [model_probability(app, data) for data in images]
    answers: dict[int, list[float]] = {index: [] for index in range(len(images))}
    failures = []

    def worker(index: int) -> None:
        client = app.test_client()
        for _ in range(3):
            response = post_files(client, [(images[index], f"{index}.png")])
            if response.status_code != 200:
                failures.append(response.status_code)
                return
            answers[index].append(response.get_json()["predictions"][0]["probability_fake"])

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures
    for index, values in answers.items():
        assert values == pytest.approx([expected[index]] * 3, abs=1e-6)


# --- the model file: missing, appearing, read once ------------------------------------------------


def test_without_a_model_the_app_says_how_to_train_one(tmp_path):
    missing_app = create_app({"MODEL_PATH": str(tmp_path / "models" / "none.h5")})
    client = missing_app.test_client()
    health = client.get("/health")
    assert health.status_code == 503
    assert "python model_training.py" in health.get_json()["error"]
    response = post_files(client, [(encode(random_pixels(50), "PNG"), "a.png")])
    assert response.status_code == 503
    assert "no model at" in response.get_json()["error"]
    page = client.get("/")
    assert page.status_code == 200
    assert "No model to ask yet" in page.get_data(as_text=True)
    assert post_files(
        client, [(encode(random_pixels(50), "PNG"), "a.png")], url="/"
    ).status_code == (503)


def test_model_is_loaded_once_with_its_card_and_found_once_trained(tmp_path, saved_model):
    model_path = tmp_path / "models" / "classifier.h5"
    late_app = create_app({"MODEL_PATH": str(model_path)})
    client = late_app.test_client()
    assert client.get("/health").status_code == 503
    model_path.parent.mkdir()
    shutil.copy(saved_model, model_path)
    save_card(
        model_path,
        {
            "class_names": ["Fake", "Real"],
            "image_size": 32,
            "threshold": 0.25,
            "training_data": {"train": {"Fake": 1200, "Real": 1300}},
            "test_metrics": {"accuracy": 0.875, "auc": 0.93, "images": 400},
        },
    )
    assert client.get("/health").get_json()["threshold"] == 0.25
    predictor = late_app.extensions[EXTENSION].get()
    response = post_files(client, [(encode(random_pixels(51), "PNG"), "a.png")])
    (answer,) = response.get_json()["predictions"]
    assert answer["threshold"] == 0.25
    assert answer["label"] == ("Fake" if answer["probability_fake"] >= 0.25 else "Real")
    assert late_app.extensions[EXTENSION].get() is predictor
    html = client.get("/").get_data(as_text=True)
    assert (
        "1,200" in html
        and "1,300" in html
        and re.search(r"\(400 images\):\s+accuracy 87.5%, AUC 0.930;", html)
    )
    assert "Decision threshold: 25.0%" in html


def test_broken_model_file_is_a_503_with_its_reason(tmp_path):
    model_path = tmp_path / "broken.h5"
    model_path.write_bytes(b"not hdf5")
    client = create_app({"MODEL_PATH": str(model_path)}).test_client()
    response = client.get("/health")
    assert response.status_code == 503
    assert "cannot be loaded" in response.get_json()["error"]


# --- heatmaps -----------------------------------------------------------------------------------


def test_smoothgrad_saliency_at_small_input(app):
    predictor = app.extensions[EXTENSION].get()
    assert predictor.feature_side < GRAD_CAM_MIN_SIDE
    heatmap = predictor.heatmap(random_pixels(70))
    assert heatmap.values.shape == (32, 32)
    assert heatmap.values.min() >= 0 and heatmap.values.max() == pytest.approx(1.0)
    assert heatmap.values.std() > 0.05  # a map with structure, not a flat field


def test_grad_cam_at_large_input(tmp_path):
    """At 224 pixels the base's map is 7x7 (for the tiny backbone as for ResNet101), found by
    the card's backbone."""
    from realfake.evaluation.benchmarking import save_untrained_classifier

    model_path = save_untrained_classifier(
        tmp_path / "large.h5", image_size=224, dense_units=16, backbone="tiny"
    )
    predictor = Predictor(model_path, smoothgrad_samples=2)
    assert predictor.feature_side == 7
    assert predictor.heatmap_method == "Grad-CAM on the 7x7 map of tiny's last block"
    pixels = random_pixels(71, 224, 224)
    # The replayed chain that Grad-CAM differentiates is the model itself.
    replay = predictor._head(predictor._base(predictor._front(pixels[None].astype(np.float32))))
    direct = predictor.model(pixels[None].astype(np.float32), training=False)
    assert np.allclose(replay.numpy(), direct.numpy(), atol=1e-6)
    heatmap = predictor.heatmap(pixels)
    assert heatmap.values.shape == (224, 224)
    assert heatmap.values.min() >= 0 and heatmap.values.max() <= 1


# --- app.py -------------------------------------------------------------------------------------


def test_app_script_help_and_usage_errors(capsys):
    import app as app_script

    with pytest.raises(SystemExit) as exit_info:
        app_script.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "default: 127.0.0.1" in help_text and "default: 5000" in help_text
    with pytest.raises(SystemExit) as exit_info:
        app_script.main(["--port", "70000"])
    assert exit_info.value.code == 2
    assert "--port must be between" in capsys.readouterr().err


def test_app_script_check_without_a_model_is_one_line(tmp_path, capsys):
    import app as app_script

    assert app_script.main(["--model", str(tmp_path / "none.h5"), "--check"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: no model at") and "model_training.py" in error


def test_app_module_exposes_the_factory_for_flask_and_gunicorn():
    import app as app_script
    from realfake.app import webapp

    assert app_script.create_app is webapp.create_app


def test_app_probabilities_equal_evaluate_model_pipeline(app, client, tmp_path):
    """evaluate_model.py decodes with load_split and predicts with probability_fake: same."""
    from realfake.inference.classifier import probability_fake
    from realfake.training.pipeline import load_split

    kinds = ["jpeg", "png", "webp", "cmyk", "16-bit", "rgba", "large"]
    for index, kind in enumerate(kinds):
        folder = tmp_path / ("FAKE" if index % 2 else "REAL")
        folder.mkdir(exist_ok=True)
        extension = {"jpeg": ".jpg", "cmyk": ".jpg", "large": ".jpg", "webp": ".webp"}
        (folder / f"{kind}{extension.get(kind, '.png')}").write_bytes(UPLOADS[kind]())
    predictor = app.extensions[EXTENSION].get()
    split = load_split(tmp_path, predictor.image_size, quiet=True)
    evaluated = probability_fake(predictor.model, split.images, batch_size=64)
    served = [
        post_files(client, [(path.read_bytes(), path.name)]).get_json()["predictions"][0][
            "probability_fake"
        ]
        for path in split.paths
    ]
    assert len(served) == len(kinds)
    assert served == pytest.approx(list(evaluated), abs=1e-6)


def test_flask_command_line_finds_the_factory_and_env_settings(monkeypatch, tmp_path):
    from flask.cli import ScriptInfo

    missing = str(tmp_path / "none.h5")
    monkeypatch.setenv("REALFAKE_MODEL_PATH", missing)
    monkeypatch.setenv("REALFAKE_MAX_FILES", "3")
    loaded = ScriptInfo(app_import_path="app").load_app()
    assert loaded.config["MODEL_PATH"] == missing and loaded.config["MAX_FILES"] == 3
    assert loaded.test_client().get("/health").status_code == 503


@pytest.mark.end_to_end
def test_gunicorn_serves_the_factory(app, saved_model, tmp_path):
    """The README's production command, on a free loopback port, answers as the model does."""
    import http.client
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    pytest.importorskip("gunicorn", reason="gunicorn is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{port}"]
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [*command, "app:create_app()"],
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "REALFAKE_MODEL_PATH": str(saved_model)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    data = encode(random_pixels(80), "PNG")
    boundary = "realfake-test-boundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    try:
        deadline = time.monotonic() + 120
        answer = None
        while answer is None and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text(errors="replace")[-2000:]
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request(
                    "POST",
                    "/api/predict",
                    body=body,
                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                )
                response = connection.getresponse()
                assert response.status == 200, response.read()
                answer = json.loads(response.read())["predictions"][0]
            except OSError:
                time.sleep(1)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert answer is not None, "gunicorn did not answer within 120 s"
    assert answer["probability_fake"] == pytest.approx(model_probability(app, data), abs=1e-6)


def test_a_card_with_test_time_flip_averages_each_upload_with_its_mirror_image(
    tmp_path, saved_model
):
    from realfake.inference.classifier import probability_fake

    model_path = tmp_path / "flip.h5"
    shutil.copy(saved_model, model_path)
    save_card(model_path, {**load_card(saved_model), "test_time_flip": True})
    flip_app = create_app({"MODEL_PATH": str(model_path)})
    client = flip_app.test_client()
    predictor = flip_app.extensions[EXTENSION].get()
    images = np.stack([random_pixels(seed) for seed in (61, 62, 63)])

    served = [p.probability_fake for p in predictor.predict_arrays(images)]
    plain = probability_fake(predictor.model, images, batch_size=8)
    averaged = probability_fake(predictor.model, images, batch_size=8, test_time_flip=True)
    assert served == pytest.approx(list(averaged), abs=1e-6)
    assert not np.allclose(averaged, plain, rtol=0, atol=1e-6)
    mirrored = [p.probability_fake for p in predictor.predict_arrays(mirror(images))]
    assert mirrored == pytest.approx(served, abs=1e-6)

    data = encode(images[0], "PNG")
    (answer,) = post_files(client, [(data, "a.png")]).get_json()["predictions"]
    assert answer["probability_fake"] == pytest.approx(served[0], abs=1e-6)
    assert client.get("/health").get_json()["test_time_flip"] is True
    html = client.get("/").get_data(as_text=True)
    assert "mean of the model's answers for the image and its mirror image" in html


def test_without_test_time_flip_the_page_does_not_claim_it(client):
    assert client.get("/health").get_json()["test_time_flip"] is False
    assert "mirror image" not in client.get("/").get_data(as_text=True)


# --- decoding toward the model's size, once per upload ------------------------------------------


def decode_before_draft(data: bytes, image_size: int) -> np.ndarray:
    """load_rgb as it decoded every image before large ones were decoded toward the model's
    size: the whole image, turned upright, converted, then resized bilinearly."""
    from PIL import ImageOps

    from realfake.core.images import _to_rgb

    with Image.open(io.BytesIO(data)) as image:
        image.seek(0)
        image = _to_rgb(ImageOps.exif_transpose(image))
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def smooth_pixels(height: int, width: int) -> np.ndarray:
    """A smooth colour field, as photographs mostly are (random noise would alias anything)."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack(
        [
            127 + 120 * np.sin(columns / (width / 6)),
            127 + 120 * np.cos(rows / (height / 5)),
            (rows + columns) * 255 / (height + width),
        ],
        axis=-1,
    ).astype(np.uint8)


SMALL_UPLOADS = {
    **{kind: make for kind, make in UPLOADS.items() if kind != "large"},
    "cifake jpeg": lambda: encode(random_pixels(90), "JPEG", quality=95),
    "64x64 png, twice the side": lambda: encode(random_pixels(91, 64, 64), "PNG"),
    "64x300 jpeg, short side twice": lambda: encode(random_pixels(92, 64, 300), "JPEG"),
    "animated gif": lambda: _gif_first_frame_differs()[0],
}


@pytest.mark.parametrize("kind", sorted(SMALL_UPLOADS))
def test_images_up_to_twice_the_model_side_decode_exactly_as_before(kind):
    data = SMALL_UPLOADS[kind]()
    assert np.array_equal(load_rgb(data, 32), decode_before_draft(data, 32))


@pytest.mark.parametrize("image_format", ["JPEG", "PNG"])
def test_large_images_decode_close_to_the_whole_image_resized(image_format):
    data = encode(smooth_pixels(1500, 2000), image_format, quality=95)
    reduced, whole = load_rgb(data, 32).astype(int), decode_before_draft(data, 32).astype(int)
    assert reduced.shape == whole.shape == (32, 32, 3)
    assert np.abs(reduced - whole).mean() < 2.0  # of 255: the same picture


def test_a_large_jpeg_is_decoded_at_a_fraction_of_its_size_and_turned_upright(monkeypatch):
    from PIL import ImageFile

    decoded_sizes = []
    original_load = ImageFile.ImageFile.load

    def recording_load(self):
        if self.tile:  # pixels not decoded yet: this call decodes them
            decoded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    pixels = smooth_pixels(1200, 1600)
    tagged = Image.fromarray(pixels)
    exif = tagged.getexif()
    exif[0x0112] = 6  # stored sideways: viewers turn it 90 degrees clockwise
    data = encode(tagged, "JPEG", quality=95, exif=exif)
    result = load_rgb(data, 32)
    assert decoded_sizes == [(200, 150)]  # 1/8 of 1600 x 1200, still over twice 32 pixels
    upright = decode_before_draft(encode(np.rot90(pixels, k=-1), "JPEG", quality=95), 32)
    assert np.abs(result.astype(int) - upright.astype(int)).mean() < 3.0


def test_the_page_decodes_each_upload_once(client, monkeypatch):
    from PIL import ImageFile

    decodes = []
    original_load = ImageFile.ImageFile.load

    def counting_load(self):
        if self.tile:
            decodes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    files = [
        (encode(smooth_pixels(300, 400), "PNG"), "a.png"),
        (encode(smooth_pixels(90, 60), "JPEG"), "b.jpg"),
    ]
    response = post_files(client, files, url="/")
    assert response.status_code == 200
    assert response.get_data(as_text=True).count('class="verdict"') == 2
    assert decodes == [(400, 300), (60, 90)]


# --- bounded work per request and across requests --------------------------------------------


def test_requests_beyond_the_work_bound_wait_then_get_503_with_retry_after(saved_model):
    bounded_app = create_app(
        {"MODEL_PATH": str(saved_model), "MAX_CONCURRENT_WORK": 1, "WORK_WAIT_SECONDS": 0.5}
    )
    predictor = bounded_app.extensions[EXTENSION].get()
    entered, release = threading.Event(), threading.Event()
    original = predictor.predict_arrays

    def slow_first_call(images):
        if not entered.is_set():
            entered.set()
            release.wait(timeout=30)
        return original(images)

    predictor.predict_arrays = slow_first_call
    data = encode(random_pixels(95), "PNG")
    first: dict = {}

    def first_request():
        first["response"] = post_files(bounded_app.test_client(), [(data, "a.png")])

    thread = threading.Thread(target=first_request)
    thread.start()
    try:
        assert entered.wait(timeout=30)
        for url in ("/api/predict", "/"):
            response = post_files(bounded_app.test_client(), [(data, "b.png")], url=url)
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
            assert "busy" in response.get_data(as_text=True)
        assert bounded_app.test_client().get("/health").status_code == 200  # never bounded
    finally:
        release.set()
        thread.join(timeout=60)
    assert first["response"].status_code == 200
    assert post_files(bounded_app.test_client(), [(data, "c.png")]).status_code == 200


def test_total_pixels_per_request_are_bounded_in_one_line(app, client, monkeypatch):
    monkeypatch.setitem(app.config, "MAX_REQUEST_PIXELS", 3000)
    files = [(encode(random_pixels(seed), "PNG"), f"{seed}.png") for seed in (96, 97, 98)]
    response = post_files(client, files)
    assert response.status_code == 413
    message = response.get_json()["error"]
    assert message.startswith("the images hold 3,072 pixels in all; the limit is 3,000")
    assert "\n" not in message
    page = post_files(client, files, url="/")
    assert page.status_code == 413 and "the limit is 3,000 per request" in page.get_data(
        as_text=True
    )
    assert post_files(client, files[:2]).status_code == 200


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (png_header_only(8000, 7000), 413, "56,000,000 pixels"),
        (encode(random_pixels(42), "PPM"), 415, "unsupported image type PPM"),
        (b"just some text", 400, "not an image"),
    ],
)
def test_page_and_api_give_a_lone_bad_file_the_same_status(client, data, status, message):
    api = post_files(client, [(data, "x.png")])
    page = post_files(client, [(data, "x.png")], url="/")
    assert api.status_code == page.status_code == status
    assert message in api.get_json()["error"] and message in page.get_data(as_text=True)


def _header_cut_jpeg() -> bytes:
    """A small JPEG cut in half: with tables larger than its pixel data, the cut falls in them."""
    data = encode(random_pixels(99, 8, 8), "JPEG", quality=95)
    return data[: len(data) // 2]


def test_a_jpeg_cut_inside_its_header_is_called_truncated_not_a_non_image(client):
    response = post_files(client, [(_header_cut_jpeg(), "cut.jpg")])
    assert response.status_code == 400
    assert "truncated or corrupt" in response.get_json()["error"]


def test_result_pages_are_neither_cached_nor_sent_as_referrer(client):
    data = encode(random_pixels(100), "PNG")
    for url in ("/", "/api/predict"):
        response = post_files(client, [(data, "a.png")], url=url)
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"


# --- heatmaps show where the model looks ---------------------------------------------------------

# The one region the region models below can see: rows 4-15 and columns 2-7 of 32x32, a tall
# strip away from the centre, so that a transposed or mirrored map would miss it.
REGION_CROP = ((4, 16), (2, 24))
REGION = (slice(4, 16), slice(2, 8))
MIRRORED_REGION = (slice(4, 16), slice(24, 30))


def save_region_model(
    path, base_name: str | None = None, seed: int = 0, test_time_flip: bool = False
):
    """A classifier that sees only REGION: pixels elsewhere cannot change its answer.

    With `base_name`, the region passes through a nested convolutional block of that name with
    an 8x8 output, which the app explains with Grad-CAM; without, with SmoothGrad. With
    `test_time_flip`, its card averages each image with its mirror image, whose REGION is
    MIRRORED_REGION of the image."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    # Scaled to [0, 1], so that the softmax does not saturate and every view has a gradient.
    region = keras.layers.Rescaling(1 / 255)(keras.layers.Cropping2D(REGION_CROP)(inputs))
    if base_name is None:
        features = keras.layers.Flatten()(region)
    else:
        padded = keras.layers.ZeroPadding2D(REGION_CROP)(region)
        block_input = keras.Input((32, 32, 3))
        block_output = keras.layers.Conv2D(8, 4, strides=4, use_bias=False, activation="relu")(
            block_input
        )
        block = keras.Model(block_input, block_output, name=base_name)
        features = keras.layers.Flatten()(block(padded))
    outputs = keras.layers.Dense(2, activation="softmax")(features)
    keras.Model(inputs, outputs).save(path)
    card = {"class_names": ["Fake", "Real"], "image_size": 32, "threshold": 0.5}
    save_card(path, {**card, "test_time_flip": test_time_flip})
    return path


def mass_inside(values: np.ndarray, rows: slice, columns: slice) -> float:
    return float(values[rows, columns].sum() / values.sum())


def test_smoothgrad_map_lies_where_the_model_looks(tmp_path):
    predictor = Predictor(save_region_model(tmp_path / "region.h5"), smoothgrad_samples=8)
    assert predictor.heatmap_method.startswith("SmoothGrad")
    heatmap = predictor.heatmap(random_pixels(110))
    assert heatmap.values.max() > 0
    assert mass_inside(heatmap.values, *REGION) > 0.99


def test_grad_cam_map_lies_where_the_model_looks(tmp_path):
    from realfake.model import BASE_NAME

    predictor = Predictor(save_region_model(tmp_path / "cam.h5", BASE_NAME), smoothgrad_samples=2)
    assert predictor.feature_side == 8 and predictor.heatmap_method.startswith("Grad-CAM")
    heatmap = predictor.heatmap(random_pixels(111))
    assert heatmap.values.max() > 0
    # Grad-CAM's map is 8x8 cells of 4 pixels, smoothed when enlarged: allow one cell around.
    assert mass_inside(heatmap.values, slice(0, 20), slice(0, 12)) > 0.95
    assert mass_inside(heatmap.values, *REGION) > 0.5


@pytest.mark.parametrize("base_name", [None, "resnet101"], ids=["smoothgrad", "grad-cam"])
def test_under_test_time_flip_the_map_also_shows_what_the_mirror_image_gave(tmp_path, base_name):
    """The answer is the mean over the image and its mirror image: the map explains that mean."""
    from realfake.model import BASE_NAME

    assert base_name in (None, BASE_NAME)
    path = save_region_model(tmp_path / "flip.h5", base_name, test_time_flip=True)
    predictor = Predictor(path, smoothgrad_samples=8)
    assert predictor.test_time_flip
    values = predictor.heatmap(random_pixels(112)).values
    if base_name is None:
        assert mass_inside(values, *REGION) + mass_inside(values, *MIRRORED_REGION) > 0.99
        assert min(mass_inside(values, *REGION), mass_inside(values, *MIRRORED_REGION)) > 0.2
    else:  # 8x8 cells of 4 pixels, smoothed when enlarged: one cell around each region
        around, mirrored_around = (slice(0, 20), slice(0, 12)), (slice(0, 20), slice(20, 32))
        assert mass_inside(values, *around) + mass_inside(values, *mirrored_around) > 0.95
        assert min(mass_inside(values, *around), mass_inside(values, *mirrored_around)) > 0.2


# --- app.py --------------------------------------------------------------------------------------


def test_app_script_check_answers_one_generated_image(app, saved_model, capsys):
    import app as app_script

    assert app_script.main(["--model", str(saved_model), "--check"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(
        r"model answers: noise\.png -> (Fake|Real) "
        r"\(probability_fake ([0-9.]+), threshold 0\.5000\)",
        line,
    )
    assert found, line
    pixels = np.random.default_rng(0).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    probability = model_probability(app, encode(pixels, "PNG"))
    assert float(found.group(2)) == pytest.approx(probability, abs=5e-5)
    assert found.group(1) == ("Fake" if probability >= 0.5 else "Real")


def test_app_script_help_is_quick_and_imports_no_tensorflow():
    import subprocess
    import sys
    import time
    from pathlib import Path

    probe = (
        "import runpy, sys\n"
        "sys.argv = ['app.py', '--help']\n"
        "try:\n"
        "    runpy.run_path('app.py', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted({'tensorflow', 'keras', 'flask', 'numpy'} & set(sys.modules))\n"
        "print('heavy modules:', heavy)\n"
    )
    root = Path(__file__).resolve().parent.parent
    timings = []
    for _ in range(3):  # the best of three, as the machine may be busy
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, timeout=60
        )
        timings.append(time.perf_counter() - started)
    assert result.returncode == 0, result.stderr
    assert "heavy modules: []" in result.stdout
    assert min(timings) < 1.0, timings
    help_text = result.stdout
    assert "examples:" in help_text and "python app.py --check" in help_text
    for default in ("(default: 127.0.0.1)", "(default: 5000)", "(default: 16)", "(default: 10)"):
        assert help_text.count(default) == 1, default


# --- what the page tells a newcomer ---------------------------------------------------------------


def serve_with_card(tmp_path, saved_model, **card_changes):
    """A client of an app serving the session's model under a card with `card_changes`."""
    model_path = tmp_path / "carded.h5"
    shutil.copy(saved_model, model_path)
    save_card(model_path, {**load_card(saved_model), **card_changes})
    return create_app({"MODEL_PATH": str(model_path)}).test_client()


def test_inside_the_uncertain_band_the_verdict_is_uncertain(app, tmp_path, saved_model):
    rule = "widest band around the threshold where validation accuracy was under 80%"
    client = serve_with_card(
        tmp_path, saved_model, uncertain_band={"low": 0.0, "high": 1.0, "rule": rule}
    )
    data = encode(random_pixels(120), "PNG")
    (answer,) = post_files(client, [(data, "a.png")]).get_json()["predictions"]
    assert answer["verdict"] == "Uncertain" and answer["uncertain"] is True
    assert answer["label"] == ("Fake" if answer["probability_fake"] >= 0.5 else "Real")
    html = post_files(client, [(data, "a.png")], url="/").get_data(as_text=True)
    assert '<p class="verdict">Uncertain</p>' in html
    assert "Too close to call" in html
    about = html[html.index('id="about"') :]
    assert "Uncertain band: between 0.0% and" in about and rule in about


def test_without_a_band_the_about_panel_says_so(client):
    html = client.get("/").get_data(as_text=True)
    assert "sets no uncertain band" in html


def test_the_page_shows_both_probabilities_and_a_plain_caveat(app, client):
    data = encode(random_pixels(121), "PNG")
    html = post_files(client, [(data, "a.png")], url="/").get_data(as_text=True)
    probability = model_probability(app, data)
    shown_real = re.search(r'class="probability-real">([0-9.]+)%<', html).group(1)
    assert float(shown_real) == pytest.approx(100 * (1 - probability), abs=0.051)
    results = html[: html.index('id="about"')]
    assert "no better than a coin toss" in results  # beside the verdicts, not only in About


def test_an_upload_far_larger_than_training_images_carries_a_notice(client):
    large = encode(random_pixels(122, 80, 100), "PNG")
    (answer,) = post_files(client, [(large, "big.png")]).get_json()["predictions"]
    (notice,) = answer["notices"]
    assert "100 x 80 pixels" in notice and "32 x 32" in notice
    assert '"Robustness" in the README' in notice  # this card has no robustness rows to show
    html = post_files(client, [(large, "big.png")], url="/").get_data(as_text=True)
    assert 'class="result-notice">This image is 100 x 80 pixels' in html
    twice = encode(random_pixels(123, 64, 64), "PNG")  # twice the side: close enough
    (answer,) = post_files(client, [(twice, "ok.png")]).get_json()["predictions"]
    assert answer["notices"] == []


def test_trained_on_and_robustness_appear_only_when_the_card_has_them(
    client, tmp_path, saved_model
):
    assert "Trained on:" not in client.get("/").get_data(as_text=True)
    assert "when test images are altered" not in client.get("/").get_data(as_text=True)
    rows = [
        {"family": "clean", "level": None, "accuracy": 0.86, "images": 2000},
        {"family": "blur", "level": 0.5, "accuracy": 0.81},
        {"family": "jpeg", "level": 75, "accuracy": 0.9},
        {"family": "blur", "level": 1.0, "accuracy": 0.55},
    ]
    trained_on = {
        "dataset": "CIFAKE",
        "generator": "Stable Diffusion 1.4",
        "real_source": "CIFAR-10",
    }
    carded = serve_with_card(tmp_path, saved_model, trained_on=trained_on, robustness=rows)
    about = carded.get("/").get_data(as_text=True)
    assert (
        "Trained on: dataset: CIFAKE; AI images from: Stable Diffusion 1.4; real photographs "
        "from: CIFAR-10." in about
    )
    assert "<li>clean images: 86%</li>" in about
    assert "(2,000 images, at the same threshold):" in about
    assert "<li>blur: 81% at sigma 0.5, 55% at sigma 1</li>" in about
    assert "<li>JPEG: 90% at quality 75</li>" in about
    large = encode(random_pixels(124, 80, 100), "PNG")
    (answer,) = post_files(carded, [(large, "big.png")]).get_json()["predictions"]
    (notice,) = answer["notices"]
    assert 'under "About this model" below' in notice


def test_heatmap_is_drawn_on_the_same_frame_as_the_image(client):
    wide = encode(smooth_pixels(32, 64), "PNG")
    html = post_files(client, [(wide, "wide.png")], url="/").get_data(as_text=True)
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 2
    frames = [np.asarray(Image.open(io.BytesIO(base64.b64decode(uri)))) for uri in uris]

    def picture_rows(frame):
        background = frame[0, 0]
        rows = np.flatnonzero((frame != background).any(axis=(1, 2)))
        return rows.min(), rows.max()

    assert frames[0].shape == frames[1].shape == (256, 256, 3)
    assert picture_rows(frames[0]) == picture_rows(frames[1]) == (64, 191)
    assert "more influence" in html and "brighter areas" in html


def test_examples_can_be_tried_with_one_click(app, client):
    html = client.get("/").get_data(as_text=True)
    names = re.findall(r'name="example" value="([^"]+)"', html)
    assert len(names) >= 3
    images = {}
    for name in names:
        image = client.get(f"/examples/{name}.png")
        assert image.status_code == 200 and image.mimetype == "image/png"
        images[name] = image.get_data()
    assert len(set(images.values())) == len(names)  # each example its own image
    for name in (names[0], names[-1]):
        response = client.post("/", data={"example": name}, content_type="multipart/form-data")
        assert response.status_code == 200
        page = response.get_data(as_text=True)
        assert f"{name}.png" in page
        shown_probability = float(re.search(r'data-probability="([0-9.]+)"', page).group(1))
        assert shown_probability == pytest.approx(model_probability(app, images[name]), abs=1e-6)
    assert client.get("/examples/nothing.png").status_code == 404


def test_the_first_images_of_a_labelled_folder_are_offered_with_their_labels(tmp_path, saved_model):
    folder = tmp_path / "data" / "test"
    (folder / "FAKE").mkdir(parents=True)
    (folder / "FAKE" / "a_broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")  # first, not offered
    sources = {}
    for class_folder, seed in (("FAKE", 130), ("REAL", 140)):
        for index in range(3):
            data = encode(random_pixels(seed + index), "JPEG")
            path = folder / class_folder / f"img_{index}.jpg"
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data)
            sources[path.name, class_folder] = path
    (folder / "REAL" / "notes.txt").write_text("not an image")
    app = create_app({"MODEL_PATH": str(saved_model), "EXAMPLES_FOLDER": str(folder)})
    client = app.test_client()
    html = client.get("/").get_data(as_text=True)

    assert f"or the first images of each class of {folder}" in html
    offered = re.findall(r'value="(folder-[^"]+)"', html)
    assert offered == ["folder-fake-1", "folder-fake-2", "folder-real-1", "folder-real-2"]
    assert "test/FAKE/img_0.jpg (labelled Fake)" in html
    assert "test/REAL/img_1.jpg (labelled Real)" in html and "img_2.jpg" not in html
    served = client.get("/examples/folder-real-2.png").get_data()
    with (
        Image.open(sources["img_1.jpg", "REAL"]) as original,
        Image.open(io.BytesIO(served)) as png,
    ):
        assert np.array_equal(np.asarray(original.convert("RGB")), np.asarray(png))
    response = client.post(
        "/", data={"example": "folder-fake-1"}, content_type="multipart/form-data"
    )
    page = response.get_data(as_text=True)
    shown_probability = float(re.search(r'data-probability="([0-9.]+)"', page).group(1))
    expected = model_probability(app, client.get("/examples/folder-fake-1.png").get_data())
    assert shown_probability == pytest.approx(expected, abs=1e-6)

    none = create_app({"MODEL_PATH": str(saved_model), "EXAMPLES_FOLDER": ""}).test_client()
    assert "folder-" not in none.get("/").get_data(as_text=True)


def test_favicon_is_served(client):
    assert client.get("/favicon.ico").status_code == 200
    icon = re.search(r'<link rel="icon" href="([^"]+)"', client.get("/").get_data(as_text=True))
    assert client.get(icon.group(1)).status_code == 200


def test_a_loaded_model_is_kept_until_its_file_or_card_is_replaced(tmp_path, saved_model):
    """As ModelHolder says: the same files give the same loaded model, request after request; a
    card (or model) written again is loaded again, so no process serves a replaced model."""
    model_path = tmp_path / "kept.h5"
    shutil.copy(saved_model, model_path)
    save_card(model_path, {**load_card(saved_model), "threshold": 0.25})
    kept_app = create_app({"MODEL_PATH": str(model_path)})
    client = kept_app.test_client()
    assert client.get("/health").get_json()["threshold"] == 0.25
    predictor = kept_app.extensions[EXTENSION].get()
    assert client.get("/health").get_json()["threshold"] == 0.25
    assert kept_app.extensions[EXTENSION].get() is predictor  # not loaded again
    save_card(model_path, {**load_card(saved_model), "threshold": 0.75})
    assert client.get("/health").get_json()["threshold"] == 0.75
    assert kept_app.extensions[EXTENSION].get() is not predictor
