"""move_augmented_images.py: everything moves into the matching class folder, nothing is
overwritten, and an interrupted move finishes on a re-run."""

import json

import pytest
from conftest import make_tree, snapshot, write_image

import data_augmentation
import move_augmented_images
from realfake.core import fileops
from realfake.core.fileops import STAMP_NAME


class Killed(BaseException):
    """Stands for kill -9: it bypasses every `except Exception` clean-up."""


def move(source, dest) -> int:
    return move_augmented_images.main(["--source", str(source), "--dest", str(dest), "--quiet"])


@pytest.fixture
def augmented(tmp_path):
    """A training folder (class folders named by alias) and a finished augmentation of it."""
    train = make_tree(tmp_path / "data" / "train", {"FAKE": 5, "real": 4})
    dest = tmp_path / "data" / "augmented_train"
    arguments = ["--source", str(train), "--dest", str(dest), "--copies", "2", "--quiet"]
    assert data_augmentation.main(arguments) == 0
    return train, dest


def expected_after_move(train, augmented_folder) -> dict[str, bytes]:
    expected = snapshot(train)
    for name, data in snapshot(augmented_folder).items():
        if not name.endswith(STAMP_NAME):
            expected[name] = data
    return expected


def test_moves_every_file_into_the_matching_class_folder(augmented, capsys):
    train, source = augmented
    # Class folders spelt differently on each side: Fake -> FAKE, Real -> real_images.
    (source / "FAKE").rename(source / "Fake")
    (source / "real").rename(source / "Real")
    (train / "real").rename(train / "real_images")
    expected = snapshot(train)
    target = {"Fake": "FAKE", "Real": "real_images"}
    for name, data in snapshot(source).items():
        if not name.endswith(STAMP_NAME):
            folder, file_name = name.split("/")
            expected[f"{target[folder]}/{file_name}"] = data
    assert move(source, train) == 0
    assert snapshot(train) == expected
    assert sorted(p.name for p in train.iterdir()) == ["FAKE", "real_images"]
    assert len(list((train / "FAKE").iterdir())) == 5 + 10
    assert len(list((train / "real_images").iterdir())) == 4 + 8
    assert not source.exists()
    assert capsys.readouterr().out.strip() == (
        f"move: moved 18 images into {train} (Fake 10, Real 8); removed {source}"
    )


def test_without_hard_links_the_move_copies_then_removes_the_source(augmented, monkeypatch):
    train, source = augmented
    expected = expected_after_move(train, source)

    def no_links(source, destination, **options):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(fileops.os, "link", no_links)
    assert move(source, train) == 0
    assert snapshot(train) == expected
    assert not source.exists()
    assert not list(train.rglob(".*.moving"))


def test_missing_destination_class_folder_is_created(tmp_path):
    source = make_tree(tmp_path / "augmented", {"Fake": 2, "Real": 1})
    dest = make_tree(tmp_path / "train", {"Fake": 1})
    assert move(source, dest) == 0
    assert sorted(p.name for p in (dest / "Real").iterdir()) == ["img_0000.jpg"]


def test_existing_name_with_other_content_stops_before_moving(augmented, capsys):
    train, source = augmented
    clash = train / "FAKE" / "aug_img_0003_1.jpg"
    write_image(clash, seed=12345)
    before = (snapshot(train), snapshot(source))
    assert move(source, train) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 1 file name(s) already exist")
    assert "nothing was moved" in err
    assert (snapshot(train), snapshot(source)) == before


def test_simulated_crash_between_link_and_unlink_then_rerun(augmented, monkeypatch):
    train, source = augmented
    expected = expected_after_move(train, source)
    real_unlink = fileops.os.unlink
    calls = {"count": 0}

    def crash_on_seventh(path, *args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 7:  # linked into place, the source name not yet removed
            raise Killed
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(fileops.os, "unlink", crash_on_seventh)
    with pytest.raises(Killed):
        move(source, train)
    monkeypatch.setattr(fileops.os, "unlink", real_unlink)
    left = [p for p in source.rglob("*.jpg")]
    assert 0 < len(left) < 18
    assert move(source, train) == 0
    assert snapshot(train) == expected
    assert not source.exists()


def test_rerun_after_finishing_reports_a_missing_source(augmented, capsys):
    train, source = augmented
    assert move(source, train) == 0
    after = snapshot(train)
    assert move(source, train) == 1
    assert capsys.readouterr().err == f"error: source folder {source} does not exist\n"
    assert snapshot(train) == after


def test_a_missing_destination_is_named_and_nothing_moves(augmented, tmp_path, capsys):
    _, source = augmented
    before = snapshot(source)
    assert move(source, tmp_path / "nowhere") == 1
    err = capsys.readouterr().err
    assert err == f"error: destination folder {tmp_path / 'nowhere'} does not exist\n"
    assert snapshot(source) == before


def test_a_folder_without_class_folders_or_stamp_is_refused(tmp_path, capsys):
    source = make_tree(tmp_path / "photos", {"holiday": 2})
    train = make_tree(tmp_path / "train", {"Fake": 1, "Real": 1})
    before = snapshot(tmp_path)
    assert move(source, train) == 1
    err = capsys.readouterr().err
    assert err == f"error: no class folders (Fake, Real or an alias) in {source}\n"
    assert snapshot(tmp_path) == before


def test_empty_nested_folders_are_removed_with_the_emptied_source(augmented):
    train, source = augmented
    (source / "FAKE" / "drafts" / "old").mkdir(parents=True)
    (source / "notes" / "2024" / "may").mkdir(parents=True)
    expected = expected_after_move(train, source)
    assert move(source, train) == 0
    assert snapshot(train) == expected
    assert not source.exists()


def test_unfinished_augmentation_is_not_moved(augmented, capsys):
    train, source = augmented
    stamp = json.loads((source / STAMP_NAME).read_text())
    (source / STAMP_NAME).write_text(json.dumps({**stamp, "complete": False}))
    before = snapshot(train)
    assert move(source, train) == 1
    err = capsys.readouterr().err
    assert "did not finish; run data_augmentation.py again with the same arguments first\n" in err
    assert snapshot(train) == before


def test_other_files_stay_with_their_folder(augmented, capsys):
    train, source = augmented
    (source / "FAKE" / "notes.txt").write_text("keep me")
    assert move(source, train) == 0
    assert (source / "FAKE" / "notes.txt").read_text() == "keep me"
    assert not (source / "real").exists()
    assert "1 other files stay" in capsys.readouterr().out


def test_augmentation_with_nothing_to_add_moves_nothing_and_tidies_up(tmp_path, capsys):
    train = make_tree(tmp_path / "data" / "train", {"Fake": 3, "Real": 3})
    dest = tmp_path / "data" / "augmented_train"
    arguments = ["--source", str(train), "--dest", str(dest), "--target-per-class", "3"]
    assert data_augmentation.main([*arguments, "--quiet"]) == 0
    before = snapshot(train)
    assert move(dest, train) == 0
    assert snapshot(train) == before
    assert not dest.exists()
    assert (
        capsys.readouterr()
        .out.strip()
        .endswith(f"move: moved 0 images into {train}; removed {dest}")
    )


def test_a_linked_class_folder_leading_out_of_the_source_is_refused(augmented, tmp_path, capsys):
    train, source = augmented
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (source / "FAKE").rename(elsewhere / "FAKE")
    (source / "FAKE").symlink_to(elsewhere / "FAKE")
    before = snapshot(tmp_path)
    assert move(source, train) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing {source / 'FAKE'}: ") and err.count("\n") == 1
    assert f", outside the source folder {source.resolve()}; moving would empty" in err
    assert snapshot(tmp_path) == before


def test_a_linked_class_folder_leading_inside_the_source_is_refused(augmented, capsys):
    # Emptying a link into the source would still empty a folder the move did not name.
    train, source = augmented
    (source / "FAKE").rename(source / "kept")
    (source / "FAKE").symlink_to(source / "kept")
    before = snapshot(train.parent)
    assert move(source, train) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing {source / 'FAKE'}: ") and err.count("\n") == 1
    assert f"a symbolic link to {(source / 'kept').resolve()}, inside the source folder" in err
    assert snapshot(train.parent) == before
    assert (source / "FAKE").is_symlink()


def test_raw_data_is_never_moved_out_of(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    raw = make_tree(tmp_path / "data" / "raw" / "cifake", {"Fake": 2, "Real": 2})
    train = make_tree(tmp_path / "data" / "train", {"Fake": 1, "Real": 1})
    before = snapshot(tmp_path)
    assert move("data/raw/cifake", "data/train") == 1
    assert "raw extracted data" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    assert raw.is_dir() and train.is_dir()
