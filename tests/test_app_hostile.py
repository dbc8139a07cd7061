"""The app under hostile conditions: a model replaced under a running gunicorn server, answers
that would show the server's folders, oversized provenance chunks and floods of form parts."""

import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import child_processes

from realfake.app.webapp import create_app
from realfake.inference.modelcard import load_card, save_card

PROJECT = Path(__file__).resolve().parent.parent


def get_health(port: int) -> dict | None:
    """The /health answer of a server on 127.0.0.1:port, or None while it does not answer."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        connection.request("GET", "/health")
        response = connection.getresponse()
        return {"status_code": response.status, **json.loads(response.read())}
    except OSError:
        return None


@pytest.mark.slow
def test_gunicorn_workers_all_serve_the_model_now_in_place(saved_model, tmp_path):
    """Two workers; the model and card are replaced by another model's and one worker is killed
    (gunicorn starts a new one): every answer after that is the new model's."""
    pytest.importorskip("gunicorn", reason="gunicorn is not installed")
    from realfake.evaluation.benchmarking import save_untrained_classifier

    model = tmp_path / "served" / "classifier.h5"
    model.parent.mkdir()
    shutil.copy(saved_model, model)
    save_card(model, load_card(saved_model))
    other = save_untrained_classifier(tmp_path / "other" / "classifier.h5", dense_units=8)
    save_card(other, {**load_card(other), "threshold": 0.25})
    other_sha256 = load_card(other)["model_sha256"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "gunicorn.log"
    command = [sys.executable, "-m", "gunicorn", "--workers", "2", "--timeout", "300"]
    with open(log, "wb") as output:
        server = subprocess.Popen(
            [*command, "--bind", f"127.0.0.1:{port}", "app:create_app()"],
            cwd=PROJECT,
            env={**os.environ, "REALFAKE_MODEL_PATH": str(model)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 480
        while time.monotonic() < deadline and len(child_processes(server.pid)) < 2:
            time.sleep(0.1)
        workers = child_processes(server.pid)
        first = None
        while first is None and time.monotonic() < deadline:
            assert server.poll() is None, log.read_text(errors="replace")[-2000:]
            first = get_health(port)
            time.sleep(0.5)
        assert first is not None and first["threshold"] == 0.5

        os.replace(other, model)  # as training saves: the model, then its card
        os.replace(other.with_suffix(".json"), model.with_suffix(".json"))
        os.kill(min(workers), signal.SIGKILL)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: get_health(port), range(24)))
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert all(answer is not None for answer in answers), log.read_text(errors="replace")[-2000:]
    assert {answer["threshold"] for answer in answers} == {0.25}
    assert {answer["model_sha256"] for answer in answers} == {other_sha256}


def test_unavailable_answers_name_the_model_file_not_its_folder(tmp_path):
    model = tmp_path / "models" / "broken.h5"
    model.parent.mkdir()
    model.write_bytes(b"not hdf5")
    client = create_app({"MODEL_PATH": str(model)}).test_client()
    health = client.get("/health")
    assert health.status_code == 503
    body = health.get_json()
    assert body["model"] == "broken.h5"
    assert body["error"].startswith("the model at broken.h5 cannot be loaded")
    page = client.get("/").get_data(as_text=True)
    api = client.post("/api/predict", data={"file": (b"x", "a.png")}).get_json()
    for text in (json.dumps(body), page, json.dumps(api)):
        assert str(tmp_path) not in text


def test_a_flood_of_small_form_parts_is_refused_with_its_real_reason(client):
    fields = {f"f{index}": "x" for index in range(1500)}
    # A file part makes it multipart/form-data, as a browser sends it.
    response = client.post("/api/predict", data={**fields, "file": (io.BytesIO(b"x"), "a.png")})
    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error.startswith("the form has more than 1,000 parts")
    assert "MB per request" not in error


def png_with_text_bomb(before_the_pixels: bool) -> tuple[bytes, bytes]:
    """A small PNG with a zTXt chunk of a few KiB that expands to 2 MiB, past the 1 MiB that
    Pillow reads of one text chunk, before or after the image data; and the same PNG without it."""
    import zlib

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    plain = buffer.getvalue()
    body = b"Comment\x00\x00" + zlib.compress(bytes(2 * 1024 * 1024))
    chunk = len(body).to_bytes(4, "big") + b"zTXt" + body
    chunk += zlib.crc32(b"zTXt" + body).to_bytes(4, "big")
    at = 8 + 25 if before_the_pixels else len(plain) - 12  # after IHDR, or before IEND
    return plain[:at] + chunk + plain[at:], plain


@pytest.mark.parametrize("before_the_pixels", [True, False], ids=["before", "after"])
def test_a_text_chunk_past_pillows_limit_keeps_the_verdict_and_says_unreadable(
    app, client, before_the_pixels
):
    from test_app import model_probability, post_files

    from realfake.inference.provenance import UNREADABLE

    data, plain = png_with_text_bomb(before_the_pixels)
    response = post_files(client, [(data, "bomb.png")])
    assert response.status_code == 200, response.get_json()
    (answer,) = response.get_json()["predictions"]
    assert answer["provenance"]["error"] == UNREADABLE
    assert answer["probability_fake"] == pytest.approx(model_probability(app, plain), abs=1e-6)


def test_an_examples_folder_with_two_folders_of_one_class_offers_none_and_says_why(
    saved_model, tmp_path, caplog
):
    from conftest import make_tree

    folder = make_tree(tmp_path / "examples", {"FAKE": 1, "fake": 1, "REAL": 1})
    app = create_app({"MODEL_PATH": str(saved_model), "EXAMPLES_FOLDER": str(folder)})
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert "folder-" not in response.get_data(as_text=True)
    assert (
        f"no examples from EXAMPLES_FOLDER: {folder / 'FAKE'} and {folder / 'fake'} are both the "
        "Fake class" in caplog.text
    )
