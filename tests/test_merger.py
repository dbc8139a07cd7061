"""data_merger.py: one train/validation/test tree from split datasets, without losing, doubling or
overwriting a file, reporting cross-split duplicates, and finishing an interrupted merge."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import kill_when_staged, make_tree, snapshot

import data_merger
from realfake.core import fileops
from realfake.core.fileops import STAMP_NAME
from realfake.data import merging

SPLIT_COUNTS = {"train": 4, "validation": 2, "test": 2}


class Killed(BaseException):
    """Stands for kill -9: it bypasses every `except Exception` clean-up."""


def split_dataset(root: Path, seed: int) -> Path:
    return make_tree(
        root,
        {f"{split}/{cls}": n for split, n in SPLIT_COUNTS.items() for cls in ("Fake", "Real")},
        seed=seed,
    )


@pytest.fixture
def interim(tmp_path):
    """data/interim with two split datasets whose file names collide (img_0000.jpg ...)."""
    root = tmp_path / "data" / "interim"
    split_dataset(root / "cifake", seed=1)
    split_dataset(root / "fake_or_real", seed=2)
    return root


def merged(destination: Path) -> dict[str, bytes]:
    """The merge's output: the three split folders and the report."""
    tree = {}
    for name in ("train", "validation", "test"):
        tree.update({f"{name}/{k}": v for k, v in snapshot(destination / name).items()})
    tree["report"] = (destination / merging.MERGE_REPORT_NAME).read_bytes()
    return tree


def run(sources, destination, *flags):
    return data_merger.main([*map(str, sources), "--dest", str(destination), "--quiet", *flags])


def test_merge_prefixes_names_keeps_bytes_and_leaves_sources(interim, tmp_path, capsys):
    before = snapshot(interim)
    destination = tmp_path / "data"
    sources = [interim / "fake_or_real", interim / "cifake"]
    assert run(sources, destination) == 0
    assert "wrote: 32 images" in capsys.readouterr().out
    assert snapshot(interim) == before
    for split, count in SPLIT_COUNTS.items():
        for cls in ("Fake", "Real"):
            names = sorted(p.name for p in (destination / split / cls).iterdir())
            assert names == sorted(
                f"{source}_img_{i:04d}.jpg"
                for source in ("cifake", "fake_or_real")
                for i in range(count)
            )
            for name in names:
                source, original = name.split("_img_")
                data = (destination / split / cls / name).read_bytes()
                assert data == before[f"{source}/{split}/{cls}/img_{original}"]
    assert not (destination / merging.MERGE_STAGING_NAME).exists()


def test_trained_on_names_the_merged_sources_and_describes_only_known_ones(interim, tmp_path):
    split_dataset(interim / "my_photos", seed=3)
    destination = tmp_path / "data"
    assert run([interim / "cifake", interim / "my_photos"], destination) == 0
    assert merging.trained_on(destination, 64) == {
        "dataset": "CIFAKE (Bird & Lotfi 2024) + my_photos",
        "generator": "Stable Diffusion 1.4",  # my_photos claims no generator
        "real_source": "CIFAR-10",
        "input_size": "64 x 64 pixels",
    }
    (destination / merging.MERGE_REPORT_NAME).unlink()
    unknown = merging.trained_on(destination, 32)
    assert set(unknown) == {"dataset", "input_size"} and "sources unknown" in unknown["dataset"]


def test_without_hard_links_the_merge_copies_byte_identical_files(interim, tmp_path, monkeypatch):
    assert run(sorted(interim.iterdir()), tmp_path / "linked") == 0

    def no_links(source, destination, **options):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(fileops.os, "link", no_links)
    assert run(sorted(interim.iterdir()), tmp_path / "copied") == 0
    assert merged(tmp_path / "copied") == merged(tmp_path / "linked")
    inputs = {path.stat().st_ino for path in interim.rglob("*.jpg")}
    copies = list((tmp_path / "copied").rglob("*.jpg"))
    assert len(copies) == 32 and not inputs & {path.stat().st_ino for path in copies}


def test_default_sources_and_rerun_changes_nothing(interim, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert data_merger.main(["--quiet"]) == 0
    first = merged(tmp_path / "data")
    assert data_merger.main(["--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("already done: 32 images")
    assert merged(tmp_path / "data") == first
    # Output does not depend on the order the sources are named in.
    other = tmp_path / "other"
    assert run([interim / "fake_or_real", interim / "cifake"], other) == 0
    assert merged(other) == first


def test_identical_files_in_different_splits_are_reported(interim, tmp_path, capsys):
    leaked = (interim / "cifake" / "train" / "Fake" / "img_0001.jpg").read_bytes()
    (interim / "fake_or_real" / "test" / "Fake" / "copy.jpg").write_bytes(leaked)
    (interim / "cifake" / "validation" / "Real" / "copy.jpg").write_bytes(leaked)
    assert run([interim / "cifake", interim / "fake_or_real"], tmp_path / "data") == 0
    captured = capsys.readouterr()
    assert "3 files in 1 groups of identical content sit in different splits" in captured.err
    assert f"data_deleter.py --duplicates {tmp_path / 'data'}` keeps one copy" in captured.err
    report = json.loads((tmp_path / "data" / merging.MERGE_REPORT_NAME).read_text())
    assert report["identical_files_in_different_splits"] == [
        [
            "test/Fake/fake_or_real_copy.jpg",
            "train/Fake/cifake_img_0001.jpg",
            "validation/Real/cifake_copy.jpg",
        ]
    ]
    assert report["counts"]["test"] == {"Fake": 5, "Real": 4}


def test_undecodable_and_non_image_files_are_left_out_and_named(interim, tmp_path, capsys):
    (interim / "cifake" / "train" / "Real" / "broken.jpg").write_bytes(b"not an image")
    (interim / "cifake" / "train" / "Real" / ".DS_Store").write_bytes(b"\x00")
    (interim / "cifake" / "train" / "Real" / "notes.csv").write_text("a,b\n")
    assert run([interim / "cifake"], tmp_path / "data") == 0
    captured = capsys.readouterr()
    assert "broken.jpg" in captured.err
    assert "skipped 2 non-image files, left out 1 undecodable" in captured.out
    assert not (tmp_path / "data" / "train" / "Real" / "cifake_broken.jpg").exists()


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (
            lambda d: (d / "interim" / "x" / "train" / "Fake").mkdir(parents=True),
            "no validation, test folder",
        ),
        (lambda d: (d / "interim" / "x" / "train").mkdir(parents=True), "is not a split dataset"),
    ],
)
def test_source_that_is_not_a_split_dataset_is_refused(tmp_path, capsys, prepare, message):
    data = tmp_path / "data"
    prepare(data)
    assert run([data / "interim" / "x"], data) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1 and message in error
    assert sorted(p.name for p in data.iterdir()) == ["interim"]


def test_missing_class_folder_names_what_was_found(interim, tmp_path, capsys):
    (interim / "cifake" / "test" / "Real").rename(interim / "cifake" / "test" / "dogs")
    assert run([interim / "cifake"], tmp_path / "data") == 1
    assert "test lacks the class folder(s) Real (found Fake/, dogs/" in capsys.readouterr().err


def test_no_split_datasets_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert data_merger.main(["--quiet"]) == 1
    assert "no split datasets under data/interim" in capsys.readouterr().err


def test_existing_split_folder_with_other_content_is_refused(interim, tmp_path, capsys):
    (tmp_path / "data" / "validation").mkdir(parents=True)
    (tmp_path / "data" / "validation" / "mine.jpg").write_bytes(b"keep")
    assert run([interim / "cifake"], tmp_path / "data") == 1
    assert "already exists with other content" in capsys.readouterr().err
    assert snapshot(tmp_path / "data" / "validation") == {"mine.jpg": b"keep"}
    assert not (tmp_path / "data" / "train").exists()


def test_merged_names_resolve_collisions_deterministically(tmp_path):
    entries = [
        ("train", "Fake", "a_b", tmp_path / "x.jpg"),
        ("train", "Fake", "a", tmp_path / "b_x.jpg"),
        ("train", "Real", "a", tmp_path / "b_x.jpg"),
    ]
    named = merging.merged_names(entries)
    assert [(split, cls, name) for split, cls, name, _ in named] == [
        ("train", "Fake", "a_b_x.jpg"),
        ("train", "Fake", "a_b_x~2.jpg"),
        ("train", "Real", "a_b_x.jpg"),
    ]
    assert merging.merged_names(list(reversed(entries))) == named


@pytest.fixture
def clean_merge(interim, tmp_path):
    destination = tmp_path / "clean"
    assert run([interim / "cifake", interim / "fake_or_real"], destination) == 0
    return merged(destination)


@pytest.mark.parametrize("kill_after", [1, 17, 31])
def test_merge_killed_while_linking_reruns_to_the_same_result(
    interim, tmp_path, monkeypatch, clean_merge, kill_after
):
    real_link = merging.link_or_copy
    calls = {"n": 0}

    def link_then_die(source, destination):
        calls["n"] += 1
        if calls["n"] == kill_after:
            raise Killed
        real_link(source, destination)

    sources = [interim / "cifake", interim / "fake_or_real"]
    monkeypatch.setattr(merging, "link_or_copy", link_then_die)
    with pytest.raises(Killed):
        run(sources, tmp_path / "data")
    assert not (tmp_path / "data" / "train").exists()
    monkeypatch.setattr(merging, "link_or_copy", real_link)
    assert run(sources, tmp_path / "data") == 0
    assert merged(tmp_path / "data") == clean_merge
    assert not (tmp_path / "data" / merging.MERGE_STAGING_NAME).exists()


@pytest.mark.parametrize("kill_at_rename", [1, 2, 3])
def test_merge_killed_while_moving_into_place_rolls_forward(
    interim, tmp_path, monkeypatch, clean_merge, kill_at_rename
):
    real_rename = os.rename
    calls = {"n": 0}

    def rename_then_die(source, destination):
        calls["n"] += 1
        if calls["n"] == kill_at_rename:
            raise Killed
        real_rename(source, destination)

    sources = [interim / "cifake", interim / "fake_or_real"]
    monkeypatch.setattr(merging.os, "rename", rename_then_die)
    with pytest.raises(Killed):
        run(sources, tmp_path / "data")
    monkeypatch.setattr(merging.os, "rename", real_rename)
    moved = [
        name for name in ("train", "validation", "test") if (tmp_path / "data" / name).exists()
    ]
    assert len(moved) == kill_at_rename - 1  # some splits in place, the rest still staged
    assert run(sources, tmp_path / "data") == 0
    assert merged(tmp_path / "data") == clean_merge
    assert not (tmp_path / "data" / merging.MERGE_STAGING_NAME).exists()


def test_a_deleted_split_is_rebuilt_identically(interim, tmp_path, clean_merge):
    sources = [interim / "cifake", interim / "fake_or_real"]
    assert run(sources, tmp_path / "data") == 0
    for path in sorted((tmp_path / "data" / "test").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (tmp_path / "data" / "test").rmdir()
    assert run(sources, tmp_path / "data") == 0
    assert merged(tmp_path / "data") == clean_merge
    assert (tmp_path / "data" / "test" / STAMP_NAME).is_file()


@pytest.mark.end_to_end
def test_kill_9_midway_then_rerun_matches(tmp_path):
    """A real SIGKILL of the merge script at two moments, each followed by a re-run."""
    root = Path(__file__).resolve().parent.parent
    interim = tmp_path / "interim"
    for index, name in enumerate(("cifake", "fake_or_real")):
        make_tree(
            interim / name,
            {
                f"{split}/{cls}": 200
                for split in ("train", "validation", "test")
                for cls in ("Fake", "Real")
            },
            seed=index,
        )
    sources = [str(interim / "cifake"), str(interim / "fake_or_real")]
    command = [sys.executable, str(root / "data_merger.py"), *sources, "--quiet", "--dest"]
    subprocess.run([*command, str(tmp_path / "clean")], check=True, capture_output=True)
    expected = merged(tmp_path / "clean")
    killed_midway = 0
    for files_linked in (10, 1500):
        destination = tmp_path / f"data_{files_linked}"
        staging = destination / merging.MERGE_STAGING_NAME
        process = subprocess.Popen([*command, str(destination)], stdout=subprocess.DEVNULL)
        kill_when_staged(process, staging, files_linked)
        killed_midway += staging.exists()
        subprocess.run([*command, str(destination)], check=True, capture_output=True)
        assert merged(destination) == expected
        assert not staging.exists()
    assert killed_midway >= 1  # the kill really interrupted a merge at least once
