"""data_zipper.py: a stable zip that data_unzipper.py turns back into the same tree."""

import zipfile

import pytest
from conftest import make_tree, snapshot

import data_unzipper
import data_zipper
from realfake.core.fileops import STAMP_NAME


@pytest.fixture
def tree(tmp_path):
    root = make_tree(tmp_path / "data" / "train", {"Fake": 4, "Real": 3})
    make_tree(root, {"Real": 1}, extension=".png", seed=5)
    (root / "Fake" / "notes.txt").write_text("not only images")
    return root


def zip_folder(*arguments) -> int:
    return data_zipper.main([*[str(a) for a in arguments], "--quiet"])


def test_round_trip_through_the_unzipper_gives_the_same_tree(tree, tmp_path):
    output = tmp_path / "train.zip"
    assert zip_folder(tree, "--output", output) == 0
    restored = tmp_path / "restored"
    assert data_unzipper.main([str(output), "--dest", str(restored), "--quiet"]) == 0
    back = {name: data for name, data in snapshot(restored).items() if name != STAMP_NAME}
    assert back == snapshot(tree)


def test_stable_order_and_bytes(tree, tmp_path):
    assert zip_folder(tree, "--output", tmp_path / "a.zip") == 0
    assert zip_folder(tree, "--output", tmp_path / "b.zip") == 0
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()
    names = zipfile.ZipFile(tmp_path / "a.zip").namelist()
    assert names == sorted(names) and len(names) == 9


def test_default_output_sits_beside_the_folder(tree, capsys):
    assert zip_folder(tree) == 0
    assert (tree.parent / "train.zip").is_file()
    assert capsys.readouterr().out.startswith(f"zip: wrote 9 files from {tree} to ")


def test_existing_output_needs_force(tree, tmp_path, capsys):
    output = tmp_path / "train.zip"
    output.write_bytes(b"someone's file")
    assert zip_folder(tree, "--output", output) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {output} already exists; add --force to replace it"
    )
    assert output.read_bytes() == b"someone's file"
    assert zip_folder(tree, "--output", output, "--force") == 0
    assert zipfile.ZipFile(output).testzip() is None


def test_output_inside_the_folder_is_refused(tree, capsys):
    with pytest.raises(SystemExit) as exit_info:
        zip_folder(tree, "--output", tree / "self.zip")
    assert exit_info.value.code == 2
    assert "inside the folder being zipped" in capsys.readouterr().err


def test_missing_folder_is_a_one_line_error(tmp_path, capsys):
    assert zip_folder(tmp_path / "nowhere") == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nowhere'} is not a folder"
