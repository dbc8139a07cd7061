"""The shared package: class aliases, staged outputs, decoding, and the model's layers."""

import json

import numpy as np
import pytest
from conftest import write_image

from realfake import fileops
from realfake.errors import PipelineError
from realfake.images import load_rgb
from realfake.layout import canonical_class, class_folders, unwrap_dataset


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("REAL", "Real"),
        ("real_images", "Real"),
        ("RealArt", "Real"),
        ("FAKE", "Fake"),
        ("fake_images", "Fake"),
        ("GeneratedArt", "Fake"),
        ("images", None),
        (".DS_Store", None),
    ],
)
def test_canonical_class_recognises_aliases(name, expected):
    assert canonical_class(name) == expected


def test_class_folders_found_under_a_wrapping_folder(tmp_path):
    (tmp_path / "archive" / "REAL").mkdir(parents=True)
    (tmp_path / "archive" / "FAKE").mkdir()
    folder = unwrap_dataset(tmp_path)
    assert folder == tmp_path / "archive"
    assert class_folders(folder) == {"Real": folder / "REAL", "Fake": folder / "FAKE"}


def test_staged_directory_appears_only_when_complete(tmp_path):
    destination = tmp_path / "out"
    stamp = {"stage": "test", "seed": 1}
    with pytest.raises(RuntimeError), fileops.staged_directory(destination, stamp) as staging:
        (staging / "a.txt").write_text("partial")
        raise RuntimeError("killed")
    assert not destination.exists()

    with fileops.staged_directory(destination, stamp) as staging:
        (staging / "b.txt").write_text("done")
    assert sorted(p.name for p in destination.iterdir()) == [fileops.STAMP_NAME, "b.txt"]
    assert json.loads((destination / fileops.STAMP_NAME).read_text()) == stamp
    assert fileops.destination_is_done(destination, stamp)
    with pytest.raises(PipelineError, match="already exists with other content"):
        fileops.destination_is_done(destination, {"stage": "test", "seed": 2})


def test_load_rgb_resizes_and_converts(tmp_path):
    path = write_image(tmp_path / "x.png", seed=3, size=40)
    array = load_rgb(path, image_size=32)
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    assert np.array_equal(load_rgb(path.read_bytes(), 32), array)
