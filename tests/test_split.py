"""data_split_d2.py (CIFAKE) and data_split_d1.py (Fake-or-Real): stratified, deterministic,
byte-identical, alias-aware, kill-safe splits that never touch the raw data."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    interrupt_stage,
    kill_stage_leaving_workers,
    kill_when_staged,
    make_tree,
    snapshot,
    write_image,
)

import data_merger
import data_split_d1
import data_split_d2
import data_unzipper
from realfake.core import fileops
from realfake.core.fileops import STAMP_NAME
from realfake.data import splitting

ROOT = Path(__file__).resolve().parent.parent


class Killed(BaseException):
    """Stands for kill -9: it bypasses every `except Exception` clean-up."""


def outputs(root):
    """Relative path -> bytes of every image a split wrote (the stamp left out)."""
    return {name: data for name, data in snapshot(root).items() if not name.endswith(STAMP_NAME)}


def per_folder_counts(root):
    counts = {}
    for name in outputs(root):
        folder = name.rsplit("/", 1)[0]
        counts[folder] = counts.get(folder, 0) + 1
    return counts


@pytest.fixture
def cifake_raw(tmp_path):
    """A raw CIFAKE tree with 20/20 train and 5/5 test images, one .DS_Store, one broken JPEG."""
    root = make_tree(
        tmp_path / "raw" / "cifake",
        {"train/REAL": 20, "train/FAKE": 20, "test/REAL": 5, "test/FAKE": 5},
    )
    (root / "train" / "FAKE" / ".DS_Store").write_bytes(b"\x00Bud1")
    (root / "train" / "REAL" / "labels.csv").write_text("name,label\n")
    (root / "train" / "REAL" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def run_d2(source, destination, *flags):
    return data_split_d2.main(
        ["--source", str(source), "--dest", str(destination), "--quiet", *flags]
    )


def test_cifake_split_counts_bytes_and_raw_untouched(cifake_raw, tmp_path, capsys):
    before = snapshot(cifake_raw)
    destination = tmp_path / "interim" / "cifake"
    assert run_d2(cifake_raw, destination) == 0
    captured = capsys.readouterr()
    assert per_folder_counts(destination) == {
        "train/Fake": 16,
        "train/Real": 16,
        "validation/Fake": 4,
        "validation/Real": 4,
        "test/Fake": 5,
        "test/Real": 5,
    }
    assert "skipped 2 non-image files, left out 1 undecodable" in captured.out
    assert "broken.jpg" in captured.err  # reported by name, not silently copied
    assert snapshot(cifake_raw) == before

    written = outputs(destination)
    origins = []
    for name, data in written.items():
        split, class_name, file_name = name.split("/")
        origin = f"{'test' if split == 'test' else 'train'}/{class_name.upper()}/{file_name}"
        assert before[origin] == data  # byte-identical to its input
        origins.append(origin)
    # Every decodable raw image lands in exactly one split; test/ is kept as it was.
    assert sorted(origins) == sorted(
        name for name in before if name.endswith(".jpg") and "broken" not in name
    )
    assert {n for n in written if n.startswith("test/")} == {
        f"test/{cls}/img_{i:04d}.jpg" for cls in ("Fake", "Real") for i in range(5)
    }


def test_without_hard_links_the_split_copies_identical_bytes(cifake_raw, tmp_path, monkeypatch):
    assert run_d2(cifake_raw, tmp_path / "linked") == 0

    def no_links(source, destination, **options):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(fileops.os, "link", no_links)
    destination = tmp_path / "copied"
    assert run_d2(cifake_raw, destination) == 0
    assert outputs(destination) == outputs(tmp_path / "linked")
    raw_files = {path.stat().st_ino for path in cifake_raw.rglob("*.jpg")}
    copies = [path for path in destination.rglob("*.jpg")]
    assert len(copies) == 50 and not raw_files & {path.stat().st_ino for path in copies}


def test_split_is_deterministic_and_depends_on_the_seed(cifake_raw, tmp_path):
    for name, seed in (("a", "42"), ("b", "42"), ("c", "7")):
        assert run_d2(cifake_raw, tmp_path / name, "--seed", seed) == 0
    assert outputs(tmp_path / "a") == outputs(tmp_path / "b")
    assert outputs(tmp_path / "a") != outputs(tmp_path / "c")


def test_rerun_of_a_finished_split_changes_nothing(cifake_raw, tmp_path, capsys):
    destination = tmp_path / "split"
    assert run_d2(cifake_raw, destination) == 0
    first = snapshot(destination)
    mtime = (destination / STAMP_NAME).stat().st_mtime_ns
    assert run_d2(cifake_raw, destination) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("already done: 50 images")
    assert snapshot(destination) == first
    assert (destination / STAMP_NAME).stat().st_mtime_ns == mtime


def test_other_settings_into_a_finished_destination_are_refused(cifake_raw, tmp_path, capsys):
    destination = tmp_path / "split"
    assert run_d2(cifake_raw, destination) == 0
    assert run_d2(cifake_raw, destination, "--seed", "1") == 1
    assert "already exists with other content" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("real", "fake", "wrapper"),
    [
        ("REAL", "FAKE", ""),
        ("real", "fake", "archive/"),
        ("real_images", "fake_images", ""),
        ("RealArt", "GeneratedArt", "Wrapped Folder/"),
    ],
)
def test_class_folders_are_recognised_by_alias(tmp_path, real, fake, wrapper):
    source = make_tree(
        tmp_path / "raw",
        {f"{wrapper}{split}/{cls}": 5 for split in ("train", "test") for cls in (real, fake)},
    )
    assert run_d2(source, tmp_path / "out") == 0
    assert sorted(per_folder_counts(tmp_path / "out")) == [
        f"{split}/{cls}" for split in ("test", "train", "validation") for cls in ("Fake", "Real")
    ]


@pytest.mark.parametrize(
    ("folders", "message"),
    [
        ({"train/REAL": 2, "train/FAKE": 2}, "no test folder (found train/"),
        (
            {"train/REAL": 2, "train/cats": 2, "test/REAL": 1, "test/FAKE": 1},
            "train lacks the class folder(s) Fake (found REAL/, cats/",
        ),
        ({"images": 2}, "no train or test folder (found no folders, 2 files in images/"),
    ],
)
def test_source_without_expected_folders_says_what_it_found(tmp_path, capsys, folders, message):
    source = make_tree(tmp_path / "raw", folders)
    assert run_d2(source, tmp_path / "out") == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1
    assert message in error
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_missing_source_and_bad_fraction(tmp_path, capsys):
    assert run_d2(tmp_path / "nowhere", tmp_path / "out") == 1
    assert "source folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        run_d2(tmp_path, tmp_path / "out", "--validation-fraction", "1.5")
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        run_d2(tmp_path, tmp_path / "out", "--workers", "0")
    assert exit_info.value.code == 2


@pytest.mark.parametrize("kill_after", [1, 20, 49])
def test_killed_split_reruns_to_the_uninterrupted_result(
    cifake_raw, tmp_path, monkeypatch, kill_after
):
    assert run_d2(cifake_raw, tmp_path / "clean") == 0
    calls = {"n": 0}
    real_link = splitting.link_or_copy

    def link_then_die(source, destination):
        calls["n"] += 1
        if calls["n"] == kill_after:
            raise Killed
        real_link(source, destination)

    monkeypatch.setattr(splitting, "link_or_copy", link_then_die)
    with pytest.raises(Killed):
        run_d2(cifake_raw, tmp_path / "split")
    assert not (tmp_path / "split").exists() and (tmp_path / ".split.partial").exists()
    monkeypatch.setattr(splitting, "link_or_copy", real_link)
    assert run_d2(cifake_raw, tmp_path / "split") == 0
    assert snapshot(tmp_path / "split") == snapshot(tmp_path / "clean")
    assert not (tmp_path / ".split.partial").exists()


@pytest.fixture
def fake_or_real_raw(tmp_path):
    """A raw Fake-or-Real tree: 20 PNGs per class in train/, an unlabelled test/ with a csv."""
    root = make_tree(
        tmp_path / "raw" / "fake_or_real",
        {"train/real_images": 20, "train/fake_images": 20, "test/images": 6},
        extension=".png",
    )
    (root / "test" / "sample_submission.csv").write_text("ImageId,Answer\n")
    return root


def run_d1(source, destination, *flags):
    return data_split_d1.main(
        ["--source", str(source), "--dest", str(destination), "--quiet", *flags]
    )


def test_fake_or_real_split_is_stratified_and_ignores_unlabelled_test(
    fake_or_real_raw, tmp_path, capsys
):
    before = snapshot(fake_or_real_raw)
    assert run_d1(fake_or_real_raw, tmp_path / "out") == 0
    captured = capsys.readouterr()
    assert per_folder_counts(tmp_path / "out") == {
        f"{split}/{cls}": count
        for split, count in (("train", 14), ("validation", 3), ("test", 3))
        for cls in ("Fake", "Real")
    }
    assert "ignored the unlabelled test/ folder (7 files)" in captured.err
    assert snapshot(fake_or_real_raw) == before
    origins = []
    for name, data in outputs(tmp_path / "out").items():
        _, class_name, file_name = name.split("/")
        origin = f"train/{class_name.lower()}_images/{file_name}"
        assert before[origin] == data
        origins.append(origin)
    assert sorted(origins) == sorted(name for name in before if name.startswith("train/"))


def test_fake_or_real_fractions_are_checked(fake_or_real_raw, tmp_path):
    for fractions in (["0.5", "0.3", "0.3"], ["0", "0.5", "0.5"], ["0.8", "-0.1", "0.3"]):
        with pytest.raises(SystemExit) as exit_info:
            run_d1(fake_or_real_raw, tmp_path / "out", "--fractions", *fractions)
        assert exit_info.value.code == 2
    assert run_d1(fake_or_real_raw, tmp_path / "out", "--fractions", "0.5", "0.25", "0.25") == 0
    assert per_folder_counts(tmp_path / "out")["test/Real"] == 5


def test_fake_or_real_deterministic_and_kill_safe(fake_or_real_raw, tmp_path, monkeypatch):
    assert run_d1(fake_or_real_raw, tmp_path / "a") == 0
    real_link = splitting.link_or_copy
    calls = {"n": 0}

    def link_then_die(source, destination):
        calls["n"] += 1
        if calls["n"] == 25:
            raise Killed
        real_link(source, destination)

    monkeypatch.setattr(splitting, "link_or_copy", link_then_die)
    with pytest.raises(Killed):
        run_d1(fake_or_real_raw, tmp_path / "b")
    monkeypatch.setattr(splitting, "link_or_copy", real_link)
    assert run_d1(fake_or_real_raw, tmp_path / "b") == 0
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")


def test_undecodable_check_runs_in_worker_processes(tmp_path, monkeypatch):
    good = write_image(tmp_path / "good.png", seed=1, size=4)
    paths = []
    for index in range(300):  # five steps of 64 files: work for both workers
        os.link(good, tmp_path / f"{index}.png")
        paths.append(tmp_path / f"{index}.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    paths.insert(17, tmp_path / "bad.png")
    whole = write_image(tmp_path / "whole.jpg", seed=99, size=64).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    paths.insert(230, tmp_path / "cut.jpg")
    checked_in = tmp_path / "checked_in"
    checked_in.mkdir()
    real_check = splitting.is_decodable

    def recording_check(path):
        (checked_in / str(os.getpid())).touch()  # forked workers inherit this patch
        time.sleep(0.002)
        return real_check(path)

    monkeypatch.setattr(splitting, "is_decodable", recording_check)
    monkeypatch.setattr(splitting, "_POOL_THRESHOLD", 10)
    expected = [tmp_path / "bad.png", tmp_path / "cut.jpg"]
    assert splitting.find_undecodable(paths, workers=2, quiet=True) == expected
    workers = {int(path.name) for path in checked_in.iterdir()}
    assert len(workers) == 2 and os.getpid() not in workers
    for path in checked_in.iterdir():
        path.unlink()
    assert splitting.find_undecodable(paths, workers=1, quiet=True) == expected
    assert [int(path.name) for path in checked_in.iterdir()] == [os.getpid()]


def test_real_cifake_sample_archive(cifake_sample_archive, tmp_path, monkeypatch):
    """The real 1,200-image CIFAKE sample through unzip, split and merge, with default paths."""
    monkeypatch.chdir(tmp_path)
    assert data_unzipper.main([str(cifake_sample_archive), "--dest", "data/raw/cifake"]) == 0
    raw = snapshot(tmp_path / "data" / "raw")
    assert data_split_d2.main(["--quiet"]) == 0
    assert data_merger.main(["--quiet"]) == 0
    assert snapshot(tmp_path / "data" / "raw") == raw
    merged = {
        split: outputs(tmp_path / "data" / split) for split in ("train", "validation", "test")
    }
    assert {split: len(files) for split, files in merged.items()} == {
        "train": 800,
        "validation": 200,
        "test": 200,
    }
    raw_contents = set(raw.values())
    assert all(data in raw_contents for files in merged.values() for data in files.values())


@pytest.mark.end_to_end
def test_kill_9_midway_then_rerun_matches(tmp_path):
    """A real SIGKILL of data_split_d2.py at two moments, each followed by a re-run."""
    source = make_tree(
        tmp_path / "raw",
        {f"{split}/{cls}": 400 for split in ("train", "test") for cls in ("REAL", "FAKE")},
    )
    command = [sys.executable, str(ROOT / "data_split_d2.py"), "--source", str(source)]
    command += ["--quiet", "--dest"]
    subprocess.run([*command, str(tmp_path / "clean")], check=True, capture_output=True)
    expected = snapshot(tmp_path / "clean")
    killed_midway = 0
    for files_linked in (10, 1200):
        destination = tmp_path / f"split_{files_linked}"
        staging = tmp_path / f".split_{files_linked}.partial"
        process = subprocess.Popen([*command, str(destination)], stdout=subprocess.DEVNULL)
        kill_when_staged(process, staging, files_linked)
        killed_midway += staging.exists() and not destination.exists()
        subprocess.run([*command, str(destination)], check=True, capture_output=True)
        assert snapshot(destination) == expected
        assert not staging.exists()
    assert killed_midway >= 1  # the kill really interrupted a split at least once


def slow_split_command(tmp_path) -> list[str]:
    """A data_split_d2.py run with two workers that decode for seconds: enough files for the
    process pool, each name a hard link to one large PNG."""
    big = write_image(tmp_path / "big.png", seed=1, size=400)
    source = tmp_path / "raw" / "cifake"
    for subset, count in (("train", 1000), ("test", 1)):
        for folder in ("REAL", "FAKE"):
            (source / subset / folder).mkdir(parents=True)
            for index in range(count):
                os.link(big, source / subset / folder / f"{index}.png")
    command = [sys.executable, str(ROOT / "data_split_d2.py"), "--source", str(source)]
    return [*command, "--dest", str(tmp_path / "out"), "--workers", "2", "--quiet"]


def test_kill_9_of_the_split_leaves_no_worker_behind(tmp_path):
    assert kill_stage_leaving_workers(slow_split_command(tmp_path), tmp_path, workers=2) == set()


def test_ctrl_c_during_the_split_exits_130_with_one_line(tmp_path):
    finished = interrupt_stage(slow_split_command(tmp_path), tmp_path, workers=2)
    assert finished.returncode == 130
    assert finished.stderr == "error: interrupted; run the same command again to finish\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("folders", "first", "second", "what"),
    [
        (
            {"train/FAKE": 2, "train/fake": 2, "train/REAL": 2, "test/REAL": 1, "test/FAKE": 1},
            "train/FAKE",
            "train/fake",
            "Fake class",
        ),
        (
            {"train/REAL": 2, "train/FAKE": 2, "Training/REAL": 2, "test/REAL": 1, "test/FAKE": 1},
            "Training",
            "train",
            "train split",
        ),
    ],
    ids=["class", "split"],
)
def test_two_folders_of_one_class_or_split_are_refused_naming_both(
    tmp_path, capsys, folders, first, second, what
):
    source = make_tree(tmp_path / "raw", folders)
    assert run_d2(source, tmp_path / "out") == 1
    assert capsys.readouterr().err == (
        f"error: {source / first} and {source / second} are both the {what} (folder names are "
        "matched by alias, in any case): move the files of one into the other, or rename one\n"
    )
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()
