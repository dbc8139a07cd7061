"""data_deleter.py: refusals that protect people's data, listing before deleting, and the
clean-up of undecodable files and byte duplicates in a split layout."""

import hashlib
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import make_tree, snapshot, write_image

import data_deleter
from realfake.data import cleaning


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder, as the current folder, with data/{raw,interim,train} and a folder
    outside data/ that must survive everything."""
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "data" / "raw" / "cifake", {"train/REAL": 2})
    make_tree(tmp_path / "data" / "interim" / "cifake", {"train/Real": 3})
    make_tree(tmp_path / "data" / "train", {"Real": 2})
    make_tree(tmp_path / "elsewhere", {"photos": 2})
    return tmp_path


def delete(*arguments) -> int:
    return data_deleter.main([*[str(a) for a in arguments], "--quiet"])


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("elsewhere", "is outside the data folder"),
        ("elsewhere/photos", "is outside the data folder"),
        ("data/../elsewhere", "is outside the data folder"),
        ("/", "is outside the data folder"),
        ("data", "is the data folder itself"),
        ("data/.", "is the data folder itself"),
        ("data/raw", "is raw extracted data"),
        ("data/raw/cifake/train", "is raw extracted data"),
        ("data/link_out", "is a symbolic link to"),
        ("data/link_out/photos", "is outside the data folder"),
    ],
)
def test_refusals_delete_nothing(project, capsys, target, message):
    (project / "data" / "link_out").symlink_to(project / "elsewhere")
    before = snapshot(project)
    assert delete(target, "--yes") == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: refusing {Path(target)}: ") and message in err
    assert err.count("\n") == 1
    assert snapshot(project) == before


def test_one_refused_path_stops_every_deletion(project, capsys):
    assert delete("data/interim", "elsewhere", "--yes") == 1
    assert (project / "data" / "interim").is_dir()


def test_raw_is_deleted_only_when_named_with_the_flag(project, capsys):
    assert delete("data/raw/cifake", "--yes") == 1
    raw = project / "data" / "raw"
    assert one_line_error(capsys) == (
        f"error: refusing data/raw/cifake: it is raw extracted data ({raw}); add --include-raw "
        "to delete it\n"
    )
    assert delete("data/raw", "--yes", "--include-raw") == 0
    assert not (project / "data" / "raw").exists()


def test_clean_ups_also_refuse_outside_and_raw(project, capsys):
    assert delete("--duplicates", "elsewhere", "--yes") == 1
    assert delete("--corrupt", "data/raw/cifake", "--yes") == 1
    err = capsys.readouterr().err
    assert "is outside the data folder" in err and "is raw extracted data" in err


def test_missing_data_folder_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert delete("data/x", "--yes") == 1
    assert capsys.readouterr().err == (
        "error: data folder data does not exist (run from the project folder or give --data-root)\n"
    )


def test_data_root_flag_moves_the_boundary(project):
    assert delete("interim", "--yes", "--data-root", "data") == 1  # relative to the current folder
    assert delete("elsewhere/photos", "--yes", "--data-root", "elsewhere") == 0
    assert not (project / "elsewhere" / "photos").exists()


def test_without_yes_it_only_lists(project, capsys):
    before = snapshot(project)
    assert delete("data/interim") == 0
    out = capsys.readouterr().out
    assert "delete: data/interim (3 files)" in out
    assert "would remove 1 path(s), 3 files; add --yes to delete" in out
    assert delete("data/interim", "--dry-run") == 0
    assert snapshot(project) == before


def test_yes_deletes_the_folder_and_nothing_else(project, capsys):
    before = snapshot(project)
    assert delete("data/interim", "--yes") == 0
    assert not (project / "data" / "interim").exists()
    assert {k: v for k, v in before.items() if not k.startswith("data/interim")} == snapshot(
        project
    )
    assert "delete: removed 1 path(s), 3 files" in capsys.readouterr().out


def test_link_inside_is_removed_not_what_it_points_to(project, capsys):
    (project / "data" / "shortcut").symlink_to(project / "data" / "train")
    assert delete("data/shortcut", "data/train/Real/img_0001.jpg", "--yes") == 0
    # A link is one file, whatever it points to; so is a file.
    assert capsys.readouterr().out == (
        "delete: data/shortcut (1 files)\n"
        "delete: data/train/Real/img_0001.jpg (1 files)\n"
        "delete: removed 2 path(s), 2 files\n"
    )
    assert not (project / "data" / "shortcut").is_symlink()
    assert len(list((project / "data" / "train" / "Real").iterdir())) == 1


def test_links_inside_a_deleted_folder_are_not_followed(project):
    (project / "data" / "interim" / "out").symlink_to(project / "elsewhere")
    assert delete("data/interim", "--yes") == 0
    assert len(list((project / "elsewhere" / "photos").iterdir())) == 2


def test_missing_path_is_nothing_to_do(project, capsys):
    assert delete("data/augmented_train", "--yes") == 0
    assert "not found, nothing to delete: data/augmented_train" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "give PATH(s) to delete"),
        (["data/interim", "--yes", "--dry-run"], "contradict"),
        (["data/interim", "--include-test"], "only applies to --duplicates"),
    ],
)
def test_usage_errors(project, capsys, arguments, message):
    with pytest.raises(SystemExit) as exit_info:
        delete(*arguments)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_corrupt_removes_only_undecodable_images(project, capsys):
    train = project / "data" / "train"
    (train / "Real" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_image(project / "data" / "validation" / "Fake" / "ok.png", seed=4)
    (project / "data" / "validation" / "Fake" / "truncated.png").write_bytes(
        (project / "data" / "validation" / "Fake" / "ok.png").read_bytes()[:60]
    )
    (train / "Real" / "notes.txt").write_text("not an image, left alone")
    assert delete("--corrupt", "data") == 0
    assert (train / "Real" / "broken.jpg").exists()  # only listed without --yes
    assert delete("--corrupt", "data", "--yes") == 0
    out = capsys.readouterr().out
    assert "corrupt: removed 2 undecodable files from data (train/Real 1, validation/Fake 1)" in out
    assert not (train / "Real" / "broken.jpg").exists()
    assert not (project / "data" / "validation" / "Fake" / "truncated.png").exists()
    assert (train / "Real" / "notes.txt").exists()
    assert len(list((train / "Real").glob("img_*.jpg"))) == 2


def copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)


@pytest.fixture
def duplicated(project):
    """data/{train,validation,test} with each kind of duplicate the real CIFAKE data has."""
    data = project / "data"
    shutil.rmtree(data / "train")
    make_tree(data, {"train/Fake": 6, "train/Real": 4, "validation/Fake": 3, "test/Fake": 4})
    fake = {split: data / split / "Fake" for split in ("train", "validation", "test")}
    copy(fake["train"] / "img_0000.jpg", fake["train"] / "z_copy.jpg")  # within train
    copy(fake["test"] / "img_0000.jpg", fake["train"] / "from_test.jpg")  # train and test
    copy(fake["test"] / "img_0001.jpg", fake["validation"] / "from_test.jpg")  # validation, test
    copy(fake["validation"] / "img_0000.jpg", fake["train"] / "from_val.jpg")  # train, validation
    copy(fake["test"] / "img_0002.jpg", fake["test"] / "within_test.jpg")  # within test
    copy(fake["test"] / "img_0003.jpg", fake["train"] / "three_a.jpg")  # in all three splits
    copy(fake["test"] / "img_0003.jpg", fake["validation"] / "three_b.jpg")
    return data


def digests(root: Path) -> dict[str, list[str]]:
    """Paths by content across the splits (raw and interim hold copies by design)."""
    found: dict[str, list[str]] = {}
    for path in sorted(
        p for split in ("train", "validation", "test") for p in (root / split).rglob("*")
    ):
        if path.is_file():
            found.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(
                path.relative_to(root).as_posix()
            )
    return found


def counts(root: Path) -> Counter:
    return Counter(p.parent.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def test_duplicates_keep_test_intact_and_no_image_in_two_splits(duplicated, capsys):
    before_counts = counts(duplicated)
    test_before = snapshot(duplicated / "test")
    assert delete("--duplicates", "data", "--yes") == 0
    out = capsys.readouterr().out
    summary = out.strip().splitlines()[-1]
    assert summary == (
        "duplicates: removed 6 files from data (train/Fake 4, validation/Fake 2); "
        "6 sets of identical files; 1 sets within test left as they are "
        "(--include-test removes those too)"
    )
    assert snapshot(duplicated / "test") == test_before
    removed = before_counts - counts(duplicated)
    assert removed == Counter({"train/Fake": 4, "validation/Fake": 2})  # the report's figures
    groups = [paths for paths in digests(duplicated).values() if len(paths) > 1]
    assert groups == [["test/Fake/img_0002.jpg", "test/Fake/within_test.jpg"]]
    kept = {p.name for p in (duplicated / "train" / "Fake").iterdir()}
    assert "img_0000.jpg" in kept and "z_copy.jpg" not in kept  # first by path stays
    assert "from_val.jpg" not in kept
    assert (duplicated / "validation" / "Fake" / "img_0000.jpg").exists()


def test_every_set_left_within_test_is_counted(duplicated, capsys):
    test = duplicated / "test" / "Fake"
    copy(test / "img_0001.jpg", test / "another.jpg")  # a second set within test
    assert delete("--duplicates", "data", "--yes", "--quiet") == 0
    assert "; 2 sets within test left as they are" in capsys.readouterr().out


def test_a_folder_of_class_folders_is_cleaned_as_one_split(project, capsys):
    real = project / "data" / "train" / "Real"
    copy(real / "img_0000.jpg", real / "z_copy.jpg")
    (real / "broken.jpg").write_bytes(b"not a jpeg")
    assert delete("--corrupt", "data/train", "--duplicates", "data/train", "--yes") == 0
    summaries = [line for line in capsys.readouterr().out.splitlines() if ": removed " in line]
    assert summaries == [
        "corrupt: removed 1 undecodable files from data/train (Real 1)",
        "duplicates: removed 1 files from data/train (Real 1); 1 sets of identical files",
    ]
    assert sorted(path.name for path in real.iterdir()) == ["img_0000.jpg", "img_0001.jpg"]


def test_a_folder_of_neither_splits_nor_class_folders_is_refused(project, capsys):
    assert delete("--corrupt", "data/interim", "--yes") == 1
    assert one_line_error(capsys) == (
        "error: data/interim holds neither split folders (train, validation, test) nor class "
        "folders\n"
    )


def test_include_test_leaves_no_two_equal_files(duplicated, capsys):
    assert delete("--duplicates", "data", "--yes", "--include-test") == 0
    assert all(len(paths) == 1 for paths in digests(duplicated).values())
    assert not (duplicated / "test" / "Fake" / "within_test.jpg").exists()


def test_duplicates_without_yes_only_list(duplicated, capsys):
    before = snapshot(duplicated)
    assert delete("--duplicates", "data") == 0
    out = capsys.readouterr().out
    # Each copy named once, in path order, beside the copy that stays: the first by path of the
    # earliest split of test, validation, train.
    assert out.splitlines()[:-1] == [
        "duplicate: data/train/Fake/from_test.jpg (same bytes as data/test/Fake/img_0000.jpg)",
        "duplicate: data/train/Fake/from_val.jpg (same bytes as data/validation/Fake/img_0000.jpg)",
        "duplicate: data/train/Fake/three_a.jpg (same bytes as data/test/Fake/img_0003.jpg)",
        "duplicate: data/train/Fake/z_copy.jpg (same bytes as data/train/Fake/img_0000.jpg)",
        "duplicate: data/validation/Fake/from_test.jpg (same bytes as data/test/Fake/img_0001.jpg)",
        "duplicate: data/validation/Fake/three_b.jpg (same bytes as data/test/Fake/img_0003.jpg)",
    ]
    assert "would remove 6 files" in out
    assert snapshot(duplicated) == before


def test_yes_quiet_prints_the_counts_not_every_file(duplicated, capsys):
    assert delete("--duplicates", "data", "--yes", "--quiet") == 0
    out = capsys.readouterr().out
    assert "duplicate: " not in out and out.startswith("duplicates: removed 6 files")
    assert out.count("\n") == 1


def test_interrupted_duplicate_clean_up_finishes_the_same(duplicated, tmp_path, capsys):
    reference = tmp_path / "reference"
    shutil.copytree(duplicated, reference / "data")
    os.chdir(reference)
    assert delete("--duplicates", "data", "--yes") == 0
    os.chdir(duplicated.parent)
    plan = cleaning.plan_duplicates(duplicated)
    for copy_item, _ in plan.remove[:3]:  # as if killed after three removals
        copy_item.path.unlink()
    assert delete("--duplicates", "data", "--yes") == 0
    assert snapshot(duplicated) == snapshot(reference / "data")
    assert delete("--duplicates", "data", "--yes") == 0
    assert "removed 0 files" in capsys.readouterr().out.strip().splitlines()[-1]


def test_real_cifake_sample_has_no_image_in_two_splits_after_clean_up(
    cifake_sample_archive, tmp_path, monkeypatch, capsys
):
    import zipfile

    monkeypatch.chdir(tmp_path)
    with zipfile.ZipFile(cifake_sample_archive) as archive:
        archive.extractall(tmp_path / "data")
    data = tmp_path / "data"
    # the sample itself has none of CIFAKE's duplicates: plant some, as the full data has them
    test_fakes = sorted((data / "test" / "FAKE").iterdir())[:3]
    for index, path in enumerate(test_fakes):
        copy(path, data / "train" / "FAKE" / f"planted_{index}.jpg")
    copy(sorted((data / "train" / "REAL").iterdir())[0], data / "train" / "REAL" / "zz.jpg")
    test_before = snapshot(data / "test")
    before = counts(data)
    assert delete("--duplicates", "data", "--yes") == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    removed = before - counts(data)
    assert removed == Counter({"train/FAKE": 3, "train/REAL": 1})
    assert "removed 4 files from data (train/FAKE 3, train/REAL 1)" in summary
    assert snapshot(data / "test") == test_before
    assert all(len(paths) == 1 for paths in digests(data).values())


# --- links and boundaries -----------------------------------------------------------------------


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_clean_ups_never_follow_a_linked_class_folder_out_of_the_data_folder(project, capsys):
    outside = project / "elsewhere" / "photos"
    (outside / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    copy(outside / "img_0000.jpg", outside / "copy.jpg")
    copy(outside / "img_0001.jpg", project / "data" / "test" / "Fake" / "img_0001.jpg")
    (project / "data" / "train" / "Fake").symlink_to(outside)
    before = snapshot(project)
    assert delete("--corrupt", "data", "--duplicates", "data", "--yes") == 1
    assert "is outside the data folder" in one_line_error(capsys)
    assert snapshot(project) == before


def test_clean_ups_reach_raw_data_through_a_link_only_with_include_raw(project, capsys):
    raw_real = project / "data" / "raw" / "cifake" / "train" / "REAL"
    (project / "data" / "validation").mkdir()
    (project / "data" / "validation" / "Real").symlink_to(raw_real)
    copy(raw_real / "img_0000.jpg", project / "data" / "test" / "Real" / "same.jpg")
    (raw_real / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    before = snapshot(project)
    for mode in ("--corrupt", "--duplicates"):
        assert delete(mode, "data", "--yes") == 1
        # Named as it was found, through the link: the path the user would look for.
        refusal = "error: refusing data/validation/Real/[^ ]+[.]jpg: it is raw extracted data"
        assert re.match(refusal, one_line_error(capsys))
        assert snapshot(project) == before
    assert delete("--corrupt", "data", "--duplicates", "data", "--yes", "--include-raw") == 0
    assert sorted(p.name for p in raw_real.iterdir()) == ["img_0001.jpg"]
    assert (project / "data" / "validation" / "Real").is_symlink()


def test_corrupt_files_are_listed_in_path_order(project, capsys):
    real = project / "data" / "train" / "Real"
    for name in ("z", "a", "m", "c", "q", "b"):  # the order a folder listing gives is any
        (real / f"{name}.jpg").write_bytes(b"not a jpeg")
    assert delete("--corrupt", "data") == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("undec")]
    assert listed == [f"undecodable: data/train/Real/{name}.jpg" for name in "abcmqz"]


def test_clean_ups_leave_a_linked_image_file_alone(project, capsys):
    # A link is not an image of the layout: neither what it points to is decoded or hashed, nor
    # is the link removed as corrupt or as a copy.
    broken = project / "elsewhere" / "photos" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    real = project / "data" / "train" / "Real"
    (real / "linked_broken.jpg").symlink_to(broken)
    (real / "linked_copy.jpg").symlink_to(real / "img_0000.jpg")
    assert delete("--corrupt", "data", "--duplicates", "data", "--yes") == 0
    assert capsys.readouterr().out == (
        "corrupt: removed 0 undecodable files from data (none)\n"
        "duplicates: removed 0 files from data (none); 0 sets of identical files\n"
    )
    assert (real / "linked_broken.jpg").is_symlink() and (real / "linked_copy.jpg").is_symlink()


def test_a_linked_split_folder_is_checked_like_a_linked_class_folder(project, capsys):
    make_tree(project / "elsewhere" / "split", {"Fake": 2, "Real": 1})
    (project / "elsewhere" / "split" / "Fake" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (project / "data" / "validation").symlink_to(project / "elsewhere" / "split")
    before = snapshot(project)
    assert delete("--corrupt", "data", "--yes") == 1
    assert "is outside the data folder" in one_line_error(capsys)
    assert snapshot(project) == before


@pytest.mark.parametrize(
    ("data_root", "reason"),
    [
        ("/", "is the file system's root"),
        ("~", "is the home folder (HOME)"),
        ("ABOVE_HOME", "holds the home folder (HOME)"),
        (".", "is the current folder (PROJECT)"),
        ("..", "holds the current folder (PROJECT/data)"),
        ("CHECKOUT", "is the project (CHECKOUT)"),
        ("ABOVE_CHECKOUT", "holds the project (CHECKOUT)"),
    ],
)
def test_a_data_root_holding_the_system_home_or_project_is_refused(
    project, tmp_path_factory, monkeypatch, capsys, data_root, reason
):
    # Each root is refused by one rule alone: the home folder is outside the project folder.
    home = tmp_path_factory.mktemp("users") / "home"
    make_tree(home, {"documents": 2})
    monkeypatch.chdir(project / "elsewhere")
    monkeypatch.setenv("HOME", str(home))
    checkout = Path(cleaning.__file__).resolve().parent.parent.parent
    victim = project / "elsewhere" / "photos"
    if data_root == "~":
        data_root, victim = str(home), home / "documents"
    elif data_root == "ABOVE_HOME":
        data_root, victim = str(home.parent), home / "documents"
    elif data_root == ".":
        monkeypatch.chdir(project)
    elif data_root == "..":
        monkeypatch.chdir(project / "data")
    elif data_root in ("CHECKOUT", "ABOVE_CHECKOUT"):
        # A path that does not exist, so nothing of the checkout is at risk on failure.
        data_root = str(checkout if data_root == "CHECKOUT" else checkout.parent)
        victim = checkout / "no_such_folder_here"
    before = snapshot(project)
    assert delete("--data-root", data_root, victim, "--yes") == 1
    reason = reason.replace("HOME", str(home)).replace("CHECKOUT", str(checkout))
    assert one_line_error(capsys) == (
        f"error: refusing data root {data_root}: it {reason.replace('PROJECT', str(project))}\n"
    )
    assert snapshot(project) == before


def test_a_data_folder_reached_through_a_link_is_the_boundary_by_either_path(project, capsys):
    # data/ is a link to a disk elsewhere: a path through the link and the real path both lie
    # inside it.
    disk = project / "disk"
    (project / "data").rename(disk)
    (project / "data").symlink_to(disk)
    assert delete("data/interim", "--yes") == 0
    assert not (disk / "interim").exists()
    assert delete(disk / "train", "--yes") == 0
    assert not (disk / "train").exists() and (disk / "raw").is_dir()
    assert delete("disk/../elsewhere", "--yes") == 1
    assert "is outside the data folder" in one_line_error(capsys)


def test_file_count_counts_each_link_once_and_matches_what_is_removed(project, capsys):
    interim = project / "data" / "interim"
    (interim / "to_folder").symlink_to(project / "elsewhere" / "photos")
    (interim / "to_file").symlink_to(project / "elsewhere" / "photos" / "img_0000.jpg")
    (interim / "dangling").symlink_to(project / "nowhere")
    assert delete("data/interim") == 0
    assert "delete: data/interim (6 files)" in capsys.readouterr().out
    assert delete("data/interim", "--yes") == 0
    out = capsys.readouterr().out
    assert "delete: data/interim (6 files)" in out and "removed 1 path(s), 6 files" in out
    assert len(list((project / "elsewhere" / "photos").iterdir())) == 2
