"""The shared package: class aliases, staged outputs, decoding, and the model's layers."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from realfake.core import fileops
from realfake.core.errors import PipelineError
from realfake.core.images import load_rgb
from realfake.core.layout import canonical_class, class_folders, unwrap_dataset

ROOT = Path(__file__).resolve().parent.parent


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


DATA_SCRIPTS = (
    "data_unzipper",
    "data_split_d1",
    "data_split_d2",
    "data_merger",
    "data_augmentation",
    "move_augmented_images",
    "data_deleter",
    "data_zipper",
    "make_demo_data",
)
# Imports the script as a module, asks its main for --help, then names the heavy frameworks that
# importing and parsing pulled in: --help must answer at once, without loading TensorFlow.
HELP_PROBE = """
import importlib, sys
module = importlib.import_module(sys.argv[1])
try:
    code = module.main(["--help"])
except SystemExit as stop:
    code = stop.code
loaded = [name for name in ("tensorflow", "keras") if name in sys.modules]
print("loaded frameworks:", ",".join(loaded) or "none")
sys.exit(code)
"""


@pytest.mark.parametrize("script", DATA_SCRIPTS)
def test_data_script_help_shows_an_example_without_loading_tensorflow(script):
    finished = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    assert "usage:" in finished.stdout
    assert f"example:\n    python {script}.py" in finished.stdout.lower()
    assert finished.stdout.strip().endswith("loaded frameworks: none")
    options = finished.stdout.split("options:", 1)[1].split("\n  -")
    assert all(option.count("(default:") <= 1 for option in options)


# --- decoding: expected pixels computed independently of load_rgb -------------------------------


def test_sixteen_bit_png_scales_to_eight_bits_by_its_full_range(tmp_path):
    values = np.random.default_rng(13).integers(0, 65536, size=(12, 10), dtype=np.uint16)
    values[0, 0], values[0, 1] = 0, 65535
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    grey = (values.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    assert np.array_equal(load_rgb(path), np.stack([grey] * 3, axis=-1))


def test_cmyk_converts_as_pillow_documents(tmp_path):
    cmyk = np.random.default_rng(12).integers(0, 256, size=(9, 11, 4), dtype=np.uint8)
    path = tmp_path / "print.tif"
    Image.fromarray(cmyk, mode="CMYK").save(path)
    # Each channel times the remaining black: (255 - C) * (255 - K) / 255, rounded to nearest.
    ink = 255 - cmyk[..., :3].astype(np.int64)
    black = 255 - cmyk[..., 3:].astype(np.int64)
    expected = (ink * black * 2 + 255) // (2 * 255)
    assert np.array_equal(load_rgb(path).astype(np.int64), expected)


def test_animated_gif_gives_its_first_frame_not_a_later_one(tmp_path):
    rng = np.random.default_rng(10)
    frames = [
        Image.fromarray(rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)).convert("P")
        for _ in range(2)
    ]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    first, second = (np.asarray(frame.convert("RGB")) for frame in frames)
    assert not np.array_equal(first, second)  # so matching the first frame means something
    with Image.open(path) as animated:
        assert animated.n_frames == 2
        animated.seek(1)
        assert np.array_equal(np.asarray(animated.convert("RGB")), second)
    decoded = load_rgb(path)
    assert np.array_equal(decoded, first)
    assert not np.array_equal(decoded, second)
