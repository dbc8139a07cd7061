"""data_augmentation.py: Keras's transformations, exact outputs, determinism, resumability."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    interrupt_stage,
    kill_stage_leaving_workers,
    make_tree,
    snapshot,
    write_image,
)
from PIL import Image

import data_augmentation
from realfake.core.fastjpeg import plain_jpeg_size
from realfake.core.fileops import STAMP_NAME
from realfake.data import augmentation
from realfake.data.augmentation import (
    AugmentationSettings,
    affine_matrices,
    augment_pixels,
    output_draws,
)

ROOT = Path(__file__).resolve().parent.parent


class Killed(BaseException):
    """Stands for kill -9: it bypasses every `except Exception` clean-up."""


def run(source: Path, dest: Path, *extra: str) -> int:
    return data_augmentation.main(
        ["--source", str(source), "--dest", str(dest), "--quiet", *[str(e) for e in extra]]
    )


def names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_transformation_matches_keras_image_data_generator():
    """Same random parameters in, the same pixels out as Keras's legacy implementation."""
    from keras.src.legacy.preprocessing.image import apply_affine_transform

    pixels = np.random.default_rng(0).integers(0, 256, size=(36, 36, 3), dtype=np.uint8)
    settings = AugmentationSettings(shear_range=20)  # a visible shear, to test its direction
    for copy_index in range(8):
        draws = output_draws(7, "Fake/x.jpg", copy_index)
        ours = augment_pixels(pixels, draws, settings)[0].astype(float)
        signed = draws * 2 - 1
        expected = apply_affine_transform(
            pixels.astype(float),
            theta=signed[0] * 20,
            tx=signed[1] * 0.2 * 36,
            ty=signed[2] * 0.2 * 36,
            shear=signed[3] * 20,
            zx=1 + signed[4] * 0.2,
            zy=1 + signed[5] * 0.2,
            row_axis=0,
            col_axis=1,
            channel_axis=2,
            fill_mode="nearest",
            order=1,
        )
        if draws[6] < 0.5:
            expected = expected[:, ::-1]
        assert np.abs(ours - expected).max() <= 1.0  # rounding to whole grey levels only


def test_parameters_stay_within_their_ranges():
    settings = AugmentationSettings()
    draws = np.stack([output_draws(1, f"Real/{i}.jpg", 0) for i in range(2000)])
    assert draws.min() >= 0 and draws.max() < 1
    matrices = affine_matrices(draws, 32, 32, settings)
    linear = matrices[:, :2, :2]
    scale = np.sqrt(np.abs(np.linalg.det(linear)))
    assert scale.min() > 0.8 - 1e-9 and scale.max() < 1.2 + 1e-9
    flipped = np.linalg.det(linear) < 0
    assert 0.45 < flipped.mean() < 0.55  # horizontal flip half the time
    # the centre moves by at most the shift range (20% of 32 px) plus the zoom's effect on it
    centre = matrices @ np.array([16.0, 16.0, 1.0])
    assert np.abs(centre[:, :2] - 16).max() < 0.2 * 32 * 1.2 * 1.5


def test_copies_writes_exact_names_at_each_source_size(tmp_path):
    source = make_tree(tmp_path / "train", {"Fake": 3, "Real": 2})
    write_image(source / "Real" / "wide.png", seed=9, size=40)
    dest = tmp_path / "augmented"
    assert run(source, dest, "--copies", 2, "--workers", 1) == 0
    assert names(dest / "Fake") == {f"aug_img_{i:04d}_{k}.jpg" for i in range(3) for k in range(2)}
    assert names(dest / "Real") == {
        f"aug_{stem}_{k}.jpg" for stem in ("img_0000", "img_0001", "wide") for k in range(2)
    }
    for path in (dest / "Real").glob("aug_wide_*.jpg"):
        assert Image.open(path).size == (40, 40)
    for path in (dest / "Fake").iterdir():
        assert Image.open(path).size == (32, 32) and Image.open(path).format == "JPEG"
    assert not (set(names(dest / "Fake")) & names(source / "Fake"))


def test_image_size_resizes(tmp_path):
    source = make_tree(tmp_path / "train", {"Fake": 1, "Real": 1})
    dest = tmp_path / "augmented"
    assert run(source, dest, "--copies", 1, "--image-size", 20) == 0
    assert {Image.open(p).size for p in dest.rglob("*.jpg")} == {(20, 20)}


def test_target_per_class_tops_up_evenly(tmp_path):
    source = make_tree(tmp_path / "train", {"FAKE": 5, "REAL": 3})
    # an earlier round's copy counts towards the total but is never used as a source
    write_image(source / "REAL" / "aug_img_0000_0.jpg", seed=99)
    dest = tmp_path / "augmented"
    assert run(source, dest, "--target-per-class", 12, "--workers", 2) == 0
    assert len(names(dest / "FAKE")) == 12 - 5
    assert len(names(dest / "REAL")) == 12 - 4
    per_source = Counter(name.rsplit("_", 1)[0] for name in names(dest / "REAL"))
    assert set(per_source) == {"aug_img_0000", "aug_img_0001", "aug_img_0002"}
    assert max(per_source.values()) - min(per_source.values()) <= 1
    # copy index 0 of img_0000 is taken by the file already in the source folder
    assert "aug_img_0000_0.jpg" not in names(dest / "REAL")
    assert "aug_img_0000_1.jpg" in names(dest / "REAL")


def test_target_below_the_current_count_adds_nothing(tmp_path):
    source = make_tree(tmp_path / "train", {"Fake": 4, "Real": 4})
    assert run(source, tmp_path / "augmented", "--target-per-class", 3) == 0
    assert not list((tmp_path / "augmented").rglob("*.jpg"))


def test_sources_sharing_a_stem_get_distinct_names(tmp_path):
    source = tmp_path / "train"
    write_image(source / "Fake" / "photo.jpg", seed=1)
    write_image(source / "Fake" / "photo.png", seed=2)
    write_image(source / "Real" / "a.jpg", seed=3)
    dest = tmp_path / "augmented"
    assert run(source, dest, "--copies", 1) == 0
    assert names(dest / "Fake") == {"aug_photo_jpg_0.jpg", "aug_photo_png_0.jpg"}


def test_same_output_whatever_the_number_of_workers(tmp_path):
    source = make_tree(tmp_path / "train", {"Fake": 20, "Real": 17})
    assert run(source, tmp_path / "one", "--copies", 2, "--workers", 1) == 0
    assert run(source, tmp_path / "two", "--copies", 2, "--workers", 2) == 0
    assert snapshot(tmp_path / "one") == snapshot(tmp_path / "two")
    assert len(list((tmp_path / "one").rglob("*.jpg"))) == 74


def test_different_seeds_differ_and_rerun_adds_nothing(tmp_path, capsys):
    source = make_tree(tmp_path / "train", {"Fake": 3, "Real": 3})
    dest = tmp_path / "augmented"
    assert run(source, dest, "--copies", 1, "--seed", 1) == 0
    first = snapshot(dest)
    assert run(source, dest, "--copies", 1, "--seed", 1) == 0
    assert snapshot(dest) == first
    assert "wrote 0 images" in capsys.readouterr().out
    assert run(source, tmp_path / "other", "--copies", 1, "--seed", 2) == 0
    other = snapshot(tmp_path / "other")
    changed = [name for name in first if name != STAMP_NAME and first[name] != other[name]]
    assert len(changed) == 6


def test_destination_with_another_runs_output_is_refused(tmp_path, capsys):
    source = make_tree(tmp_path / "train", {"Fake": 2, "Real": 2})
    dest = tmp_path / "augmented"
    assert run(source, dest, "--copies", 1, "--seed", 1) == 0
    before = snapshot(dest)
    assert run(source, dest, "--copies", 1, "--seed", 2) == 1
    assert "holds other content" in capsys.readouterr().err
    assert snapshot(dest) == before


def test_simulated_crash_then_rerun_equals_uninterrupted(tmp_path, monkeypatch):
    source = make_tree(tmp_path / "train", {"Fake": 6, "Real": 6})
    assert run(source, tmp_path / "clean", "--copies", 2, "--workers", 1) == 0

    real_replace = os.replace
    calls = {"count": 0}

    def crash_after_some(src, dst):
        calls["count"] += 1
        if calls["count"] == 9:  # the 9th output is encoded but never renamed into place
            raise Killed
        real_replace(src, dst)

    monkeypatch.setattr(augmentation.os, "replace", crash_after_some)
    dest = tmp_path / "crashed"
    with pytest.raises(Killed):
        run(source, dest, "--copies", 2, "--workers", 1)
    assert len(list(dest.rglob("aug_*.jpg"))) == 7  # 8 renames, the first being the stamp
    assert list(dest.rglob(".aug_*.tmp"))  # a half-written file, as kill -9 would leave
    monkeypatch.setattr(augmentation.os, "replace", real_replace)
    assert run(source, dest, "--copies", 2, "--workers", 1) == 0
    assert snapshot(dest) == snapshot(tmp_path / "clean")


def test_kill_9_then_rerun_equals_uninterrupted(tmp_path):
    source = make_tree(tmp_path / "train", {"Fake": 30, "Real": 30})
    arguments = ["--source", str(source), "--copies", "25", "--image-size", "64", "--quiet"]
    assert data_augmentation.main([*arguments, "--dest", str(tmp_path / "clean")]) == 0
    total = 30 * 2 * 25

    dest = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "data_augmentation.py"), *arguments, "--dest", str(dest)],
        cwd=tmp_path,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if dest.is_dir() and sum(len(files) for _, _, files in os.walk(dest)) >= 200:
            break
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)  # the workers too
    process.wait()
    written = len(list(dest.rglob("aug_*.jpg")))
    assert 0 < written < total, "the run was not interrupted partway"
    assert data_augmentation.main([*arguments, "--dest", str(dest)]) == 0
    assert snapshot(dest) == snapshot(tmp_path / "clean")


def test_preview_shows_originals_beside_copies(tmp_path):
    source = make_tree(tmp_path / "train", {"Fake": 4, "Real": 4})
    sheet = tmp_path / "preview.png"
    assert run(source, tmp_path / "augmented", "--copies", 0, "--preview", sheet) == 0
    image = Image.open(sheet)
    assert image.format == "PNG"
    assert image.size == (4 + 96 + 12 + 6 * 100, 18 + 4 + 6 * 100)
    assert not list((tmp_path / "augmented").rglob("*.jpg"))
    # Each row opens with one of the sources, enlarged three times (32 to 96 pixels) without
    # smoothing; the lower half of that tile lies below the class label drawn over it.
    enlarged = {
        path.relative_to(source).as_posix(): np.asarray(Image.open(path).convert("RGB"))
        .repeat(3, axis=0)
        .repeat(3, axis=1)
        for path in source.rglob("*.jpg")
    }
    pixels = np.asarray(image.convert("RGB"))
    shown = []
    for row in range(6):
        top = 18 + 4 + row * 100
        lower_half = pixels[top + 48 : top + 96, 4:100]
        shown += [name for name, big in enlarged.items() if np.array_equal(lower_half, big[48:])]
        for column in range(6):
            left = 4 + 96 + 12 + column * 100
            copy = pixels[top : top + 96, left : left + 96]
            assert (copy != 255).any(), "a copy's tile is blank"
            assert not any(np.array_equal(copy, big) for big in enlarged.values())
    assert len(set(shown)) == 6 and {name.split("/")[0] for name in shown} == {"Fake", "Real"}
    # A header names the columns: dark text above every tile, nothing but white elsewhere there.
    header = pixels[:18]
    for left in [4] + [4 + 96 + 12 + column * 100 for column in range(6)]:
        assert (header[:, left : left + 96] < 128).any()
    assert (header[:, 100:112] == 255).all()
    # Class labels sit on a dark box whatever the image: the label's corner is black.
    for row in range(6):
        assert (pixels[18 + 4 + row * 100 + 4, 4 + 1] < 40).all()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--copies", "-1"], "--copies must be 0 or more"),
        (["--copies", "1", "--target-per-class", "5"], "not allowed with argument"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--zoom-range", "1.5"], "--zoom-range must be below 1"),
    ],
)
def test_usage_errors(tmp_path, capsys, arguments, message):
    source = make_tree(tmp_path / "train", {"Fake": 1, "Real": 1})
    with pytest.raises(SystemExit) as exit_info:
        run(source, tmp_path / "augmented", *arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_source_is_a_one_line_error(tmp_path, capsys):
    assert run(tmp_path / "nowhere", tmp_path / "augmented") == 1
    assert (
        capsys.readouterr().err.strip()
        == f"error: source folder {tmp_path / 'nowhere'} does not exist"
    )


@pytest.mark.parametrize(
    "settings",
    [
        AugmentationSettings(),
        AugmentationSettings(rotation_range=180, shear_range=45, zoom_range=0.9),
        AugmentationSettings(width_shift_range=1.0, height_shift_range=0.0, shear_range=120),
    ],
)
@pytest.mark.parametrize("size", [(32, 32), (40, 12)])
def test_edge_padding_holds_every_point_any_transformation_reaches(settings, size):
    width, height = size
    padding = augmentation.edge_padding(width, height, settings)
    draws = np.random.default_rng(5).random((20000, 7))
    draws[:50, :6] = np.round(draws[:50, :6])  # the corners of the parameter box
    matrices = affine_matrices(draws, width, height, settings)
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], float)
    reached = matrices[:, :2] @ corners.T
    # bilinear sampling reads up to 1.5 pixels beyond a point and needs it inside the image
    assert reached[:, 0].min() - 1.5 >= -padding and reached[:, 1].min() - 1.5 >= -padding
    assert reached[:, 0].max() + 1.5 <= width + padding
    assert reached[:, 1].max() + 1.5 <= height + padding


def test_broken_source_is_a_one_line_error(tmp_path, capsys):
    source = make_tree(tmp_path / "train", {"Fake": 3, "Real": 1})
    broken = write_image(source / "Fake" / "broken.jpg", seed=7)
    data = broken.read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # the header survives, half the pixels do not
    assert plain_jpeg_size(broken.read_bytes()) is not None
    assert run(source, tmp_path / "augmented", "--copies", 1) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: cannot decode {broken}") and "\n" not in error


def slow_augmentation(tmp_path) -> tuple[list[str], Callable[[], bool]]:
    """A data_augmentation.py run with two workers whose batches take seconds (large outputs),
    and a check that they are writing."""
    source = make_tree(tmp_path / "train", {"Fake": 30, "Real": 30})
    dest = tmp_path / "augmented"
    command = [sys.executable, str(ROOT / "data_augmentation.py"), "--source", str(source)]
    command += ["--dest", str(dest), "--copies", "150", "--image-size", "640"]

    def busy() -> bool:
        return dest.is_dir() and len(list(dest.rglob("aug_*.jpg"))) >= 20

    return [*command, "--workers", "2", "--quiet"], busy


def test_kill_9_of_the_augmentation_leaves_no_worker_behind(tmp_path):
    command, busy = slow_augmentation(tmp_path)
    assert kill_stage_leaving_workers(command, tmp_path, workers=2, busy=busy) == set()


def test_ctrl_c_during_the_augmentation_exits_130_with_one_line(tmp_path):
    command, busy = slow_augmentation(tmp_path)
    finished = interrupt_stage(command, tmp_path, workers=2, busy=busy)
    assert finished.returncode == 130
    assert finished.stderr == "error: interrupted; run the same command again to finish\n"
