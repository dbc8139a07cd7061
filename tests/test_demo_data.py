"""make_demo_data.py: seeded synthetic archives in the two Kaggle layouts, that the stages accept
and whose classes differ in a way a classifier can learn."""

import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import snapshot
from PIL import Image

import data_merger
import data_split_d1
import data_split_d2
import data_unzipper
import make_demo_data
from realfake.data.demo_data import DemoCounts, cifake_members, fake_or_real_members, sample_photos
from realfake.data.merging import trained_on


def generate(destination, *flags):
    return make_demo_data.main(["--dest", str(destination), "--quiet", "--per-class", "12", *flags])


def test_archives_are_reproducible_and_seeded(tmp_path, capsys):
    assert generate(tmp_path / "a") == 0
    assert generate(tmp_path / "b") == 0
    assert generate(tmp_path / "c", "--seed", "7") == 0
    for name in ("cifake.zip", "fake_or_real.zip"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    capsys.readouterr()
    mtime = (tmp_path / "a" / "cifake.zip").stat().st_mtime_ns
    assert generate(tmp_path / "a") == 0
    assert "unchanged" in capsys.readouterr().out
    assert (tmp_path / "a" / "cifake.zip").stat().st_mtime_ns == mtime


def _images(archive: zipfile.ZipFile, pattern: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(archive.read(name)))
        for name in archive.namelist()
        if re.fullmatch(pattern, name)
    ]


def test_archives_follow_the_kaggle_layouts(tmp_path):
    assert generate(tmp_path) == 0
    with zipfile.ZipFile(tmp_path / "cifake.zip") as archive:
        folders = {name.rsplit("/", 1)[0] for name in archive.namelist()}
        assert folders == {"train/REAL", "train/FAKE", "test/REAL", "test/FAKE"}
        for folder, count in (("train/REAL", 12), ("train/FAKE", 12), ("test/FAKE", 2)):
            images = _images(archive, rf"{folder}/\d+ \(\d+\)\.jpg")
            assert len(images) == count
            assert {(image.format, image.size, image.mode) for image in images} == {
                ("JPEG", (32, 32), "RGB")
            }
    with zipfile.ZipFile(tmp_path / "fake_or_real.zip") as archive:
        names = archive.namelist()
        assert "test/sample_submission.csv" in names
        real = _images(archive, r"train/real_images/real_\d{5}\.png")
        fake = _images(archive, r"train/fake_images/fake_\d{5}\.png")
        unlabelled = _images(archive, r"test/images/test_\d{5}\.png")
        assert (len(real), len(fake), len(unlabelled)) == (12, 12, 2)
        assert {(image.format, image.size) for image in real + fake} == {("PNG", (64, 64))}


def _checkerboard_energy(image: Image.Image) -> float:
    """Mean strength of the stride-2 (Nyquist) pattern that upsampling layers leave."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    rows, columns = np.indices(pixels.shape[:2])
    signs = [((rows % 2) * 2 - 1), ((columns % 2) * 2 - 1), (((rows + columns) % 2) * 2 - 1)]
    return float(sum(abs((pixels * s[..., None]).mean(axis=(0, 1))).sum() for s in signs))


@pytest.mark.parametrize("members", [cifake_members, fake_or_real_members])
def test_fake_images_carry_a_learnable_artifact(members):
    """A one-number threshold already separates the classes: a classifier can learn them."""
    counts = DemoCounts(cifake_train=60, cifake_test=2, fake_or_real_train=60)
    energies = {"fake": [], "real": []}
    for name, data in members(sample_photos(), counts, seed=3):
        folder = name.split("/")[1].lower()
        if name.startswith("train/") and name.endswith((".jpg", ".png")):
            energies["fake" if "fake" in folder else "real"].append(
                _checkerboard_energy(Image.open(io.BytesIO(data)))
            )
    fake, real = np.array(energies["fake"]), np.array(energies["real"])
    assert len(fake) == len(real) == 60
    threshold = np.median(np.concatenate([fake, real]))
    accuracy = ((fake > threshold).sum() + (real <= threshold).sum()) / (len(fake) + len(real))
    assert accuracy >= 0.9, (accuracy, np.median(fake), np.median(real))


@pytest.mark.end_to_end
def test_demo_archives_run_through_every_data_stage(tmp_path, monkeypatch, capsys):
    """What `make demo-data` does, twice: the second run changes nothing. The split stages write
    to demo_* folders, so that a model's card says it learned from the synthetic demo."""
    monkeypatch.chdir(tmp_path)

    def pipeline():
        assert make_demo_data.main(["--dest", "archives", "--per-class", "20", "--quiet"]) == 0
        assert data_unzipper.main(["archives/cifake.zip", "--quiet"]) == 0
        assert data_unzipper.main(["archives/fake_or_real.zip", "--quiet"]) == 0
        assert data_split_d2.main(["--dest", "data/interim/demo_cifake", "--quiet"]) == 0
        assert data_split_d1.main(["--dest", "data/interim/demo_fake_or_real", "--quiet"]) == 0
        assert data_merger.main(["--quiet"]) == 0

    pipeline()
    first = snapshot(tmp_path / "data")
    counts = {
        f"{split}/{cls}": len(list((tmp_path / "data" / split / cls).iterdir()))
        for split in ("train", "validation", "test")
        for cls in ("Fake", "Real")
    }
    # CIFAKE: 20 train (16 + 4 validation) and 4 test per class; Fake-or-Real: 20 -> 14/3/3.
    assert counts == {
        "train/Fake": 30,
        "train/Real": 30,
        "validation/Fake": 7,
        "validation/Real": 7,
        "test/Fake": 7,
        "test/Real": 7,
    }
    assert "skipped 1 non-image files" in capsys.readouterr().out  # the archive's .DS_Store
    described = trained_on(Path("data"), 32)
    assert described["dataset"] == (
        "the synthetic demo in CIFAKE's layout + the synthetic demo in Fake-or-Real's layout"
    )
    assert "make_demo_data.py" in described["generator"]  # no generator is claimed
    pipeline()
    assert snapshot(tmp_path / "data") == first
