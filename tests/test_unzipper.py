"""data_unzipper.py: faithful extraction, refusal of hostile or broken archives, kill-safety."""

import os
import random
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import kill_when_staged, snapshot

import data_unzipper
from realfake.core.errors import PipelineError
from realfake.core.fileops import STAMP_NAME
from realfake.data import archive as archive_module
from realfake.data.archive import safe_member_path, write_zip

ROOT = Path(__file__).resolve().parent.parent


class Killed(BaseException):
    """Stands for kill -9: it bypasses every `except Exception` clean-up."""


def without_stamp(tree: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in tree.items() if not name.endswith(STAMP_NAME)}


@pytest.fixture
def dataset_zip(image_tree, tmp_path):
    """A CIFAKE-like archive of small JPEGs plus a .DS_Store, and the tree it was made from."""
    tree = image_tree({"train/REAL": 6, "train/FAKE": 6, "test/REAL": 3, "test/FAKE": 3})
    (tree / "train" / "REAL" / ".DS_Store").write_bytes(b"\x00Bud1")
    path = tmp_path / "archive.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(tree.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(tree).as_posix())
    return path, tree


def test_extracts_byte_identical_and_rerun_changes_nothing(dataset_zip, tmp_path, capsys):
    path, tree = dataset_zip
    destination = tmp_path / "data" / "raw" / "cifake"
    assert data_unzipper.main([str(path), "--dest", str(destination), "--quiet"]) == 0
    assert "extracted 19 files" in capsys.readouterr().out
    extracted = snapshot(destination)
    assert without_stamp(extracted) == snapshot(tree)

    assert data_unzipper.main([str(path), "--dest", str(destination), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("already extracted 19 files")
    assert snapshot(destination) == extracted
    assert sorted(p.name for p in destination.parent.iterdir()) == ["cifake"]


def test_large_entries_stream_through_zipfile_with_the_same_result(
    dataset_zip, tmp_path, monkeypatch
):
    path, tree = dataset_zip
    monkeypatch.setattr(archive_module, "_FAST_ENTRY_BYTES", 0)
    assert data_unzipper.main([str(path), "--dest", str(tmp_path / "out"), "--quiet"]) == 0
    assert without_stamp(snapshot(tmp_path / "out")) == snapshot(tree)


def test_default_destination_is_named_after_the_archive(dataset_zip, tmp_path, monkeypatch):
    path, _ = dataset_zip
    monkeypatch.chdir(tmp_path)
    assert data_unzipper.main([str(path), "--quiet"]) == 0
    assert (tmp_path / "data" / "raw" / "archive" / "train" / "REAL").is_dir()


def _zip_with(path: Path, *members: tuple[zipfile.ZipInfo | str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train/REAL/ok.txt", b"fine")
        for info, data in members:
            archive.writestr(info, data)
    return path


def _symlink_entry() -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("train/REAL/link.jpg")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _special_entry(kind: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo("train/REAL/pipe")
    info.create_system = 3
    info.external_attr = (kind | 0o644) << 16
    return info


def _set_encrypted_flag(path: Path) -> Path:
    """Mark every entry encrypted (bit 0 of the flags), as a password-protected zip does."""
    data = bytearray(path.read_bytes())
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            data[start + flag_offset] |= 0x01
            start += 4
    path.write_bytes(bytes(data))
    return path


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_stored_entry(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("train/REAL/a.jpg", b"A" * 4000)
    data = bytearray(path.read_bytes())
    data[data.find(b"AAAA") + 100] = ord("B")
    path.write_bytes(bytes(data))
    return path


def _forged_stored_entry(path: Path, offset_after: bytes, at: int, value: bytes) -> Path:
    """One stored entry of 4,000 bytes, with `value` written `at` bytes after the first
    `offset_after` (a header's signature): a forged local header or central directory."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("train/REAL/a.jpg", b"A" * 4000)
    data = bytearray(path.read_bytes())
    start = data.find(offset_after) + at
    data[start : start + len(value)] = value
    path.write_bytes(bytes(data))
    return path


# Where the fields are: local header name at 30; central directory method at 10, sizes at 20
# and 24.
FORGED = {
    "local header signature": (
        b"PK\x03\x04",
        0,
        b"PK\x03\x05",
        " is damaged (bad local file header)",
    ),
    "local header name": (
        b"PK\x03\x04",
        30 + len("train/"),
        b"X",
        " is damaged (file name in directory and local header differ)",
    ),
    "declared size": (
        b"PK\x01\x02",
        24,
        (3999).to_bytes(4, "little"),
        " is damaged (size differs from the directory's)",
    ),
    "entry past the archive's end": (
        b"PK\x01\x02",
        20,
        (1 << 20).to_bytes(4, "little"),
        " is truncated or damaged (the archive ends inside this entry)",
    ),
    "compression method": (
        b"PK\x01\x02",
        10,
        (99).to_bytes(2, "little"),
        ": That compression method is not supported",
    ),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_entry_is_refused_with_its_reason(case, tmp_path, capsys):
    signature, at, value, reason = FORGED[case]
    path = _forged_stored_entry(tmp_path / "forged.zip", signature, at, value)
    assert data_unzipper.main([str(path), "--dest", str(tmp_path / "out"), "--quiet"]) == 1
    assert capsys.readouterr().err == f"error: archive entry 'train/REAL/a.jpg'{reason}\n"
    assert not (tmp_path / "out").exists()


BAD_ARCHIVES = {
    "missing file": (lambda p: p.with_name("nowhere.zip"), [], "archive not found"),
    "a folder": (lambda p: (p.mkdir(), p)[1], [], "archive is not a file"),
    "not a zip": (lambda p: (p.write_text("hello, not a zip"), p)[1], [], "not a readable zip"),
    "truncated zip": (
        lambda p: _truncated(_zip_with(p, ("train/FAKE/big.bin", os.urandom(50_000)))),
        [],
        "not a readable zip",
    ),
    "damaged entry (bad CRC)": (_corrupt_stored_entry, [], "is damaged (bad CRC-32)"),
    "encrypted entries": (
        lambda p: _set_encrypted_flag(_zip_with(p)),
        [],
        "is encrypted",
    ),
    "absolute path": (lambda p: _zip_with(p, ("/tmp/evil.txt", b"x")), [], "absolute path"),
    "windows drive path": (lambda p: _zip_with(p, ("C:\\evil.txt", b"x")), [], "absolute path"),
    "zip-slip ..": (lambda p: _zip_with(p, ("train/../../evil.txt", b"x")), [], "'..'"),
    "zip-slip backslash ..": (lambda p: _zip_with(p, ("..\\evil.txt", b"x")), [], "'..'"),
    "file named .": (
        lambda p: _zip_with(p, (".", b"data")),
        [],
        "entry '.' holds 4 bytes but names the archive root, not a file",
    ),
    "./ holding data": (
        lambda p: _zip_with(p, ("./", b"data")),
        [],
        "entry './' holds 4 bytes but names the archive root, not a file",
    ),
    "folder entry holding data": (
        lambda p: _zip_with(p, ("train/FAKE/", b"data")),
        [],
        "entry 'train/FAKE/' holds 4 bytes but names a folder, not a file",
    ),
    "symlink entry": (lambda p: _zip_with(p, (_symlink_entry(), b"/etc/passwd")), [], "symbolic"),
    "named pipe entry": (
        lambda p: _zip_with(p, (_special_entry(stat.S_IFIFO), b"")),
        [],
        "unsafe entry 'train/REAL/pipe': not a regular file or folder",
    ),
    "entry nested 2,000 folders deep": (
        lambda p: _zip_with(p, ("a/" * 2000 + "x.jpg", b"x")),
        [],
        f"unsafe entry {'a/' * 30 + '...'!r}: it is nested 2,000 folders deep",
    ),
    "folder entry nested 2,000 folders deep": (
        lambda p: _zip_with(p, ("d/" * 2000, b"")),
        [],
        f"unsafe entry {'d/' * 30 + '...'!r}: it is nested 2,000 folders deep",
    ),
    "zip bomb ratio": (
        lambda p: _zip_with(p, ("train/FAKE/zeros.bin", bytes(4 << 20))),
        [],
        "entry 'train/FAKE/zeros.bin' expands",
    ),
    "zip bomb total size": (
        lambda p: _zip_with(p, ("train/FAKE/a.bin", os.urandom(3000))),
        ["--max-total-gib", "0.000001"],
        "expands to more than 1,073 bytes (possible zip bomb; raise --max-total-gib if it is "
        "genuine)\n",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ARCHIVES))
def test_bad_archive_gives_one_line_error_and_writes_nothing(case, tmp_path, capsys):
    make, flags, message = BAD_ARCHIVES[case]
    work = tmp_path / "work"
    work.mkdir()
    path = make(work / "archive.zip")
    before = snapshot(tmp_path)
    destination = tmp_path / "out" / "raw"
    assert data_unzipper.main([str(path), "--dest", str(destination), "--quiet", *flags]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert message in error
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def _bomb_among_incompressible_data(path: Path) -> Path:
    """One entry of zeros that expands about a thousand times, beside enough random bytes that
    the archive as a whole expands less than twenty times."""
    return _zip_with(
        path,
        ("train/FAKE/zeros.bin", bytes(4 << 20)),
        ("train/REAL/noise.bin", random.Random(1).randbytes(256 << 10)),
    )


def _archive_of_modest_entries_that_expands_as_a_whole(path: Path) -> Path:
    """The one entry of at least 1 MiB expands about 160 times, under the limit of 200; eight
    entries just under 1 MiB (too small for the entry check) expand about a thousand times, so
    the archive as a whole expands past the limit."""
    noise = random.Random(2).randbytes(8 << 10)
    members = [("train/FAKE/modest.bin", noise + bytes(3 << 19))]
    members += [(f"train/REAL/{index}.bin", bytes((1 << 20) - 1)) for index in range(8)]
    return _zip_with(path, *members)


def _ratios(path: Path) -> tuple[list[float], float]:
    """The expansion ratio of each entry the entry check looks at, and of the whole archive."""
    with zipfile.ZipFile(path) as archive:
        entries = archive.infolist()
    checked = [
        info.file_size / info.compress_size
        for info in entries
        if info.file_size >= archive_module.RATIO_CHECK_MIN_BYTES
    ]
    return checked, sum(info.file_size for info in entries) / path.stat().st_size


# Each archive trips one bomb check and not the other, so each check is shown to work alone.
BOMBS = {
    "entry": (_bomb_among_incompressible_data, "entry 'train/FAKE/zeros.bin' expands "),
    "whole archive": (_archive_of_modest_entries_that_expands_as_a_whole, "archive expands "),
}


@pytest.mark.parametrize("check", sorted(BOMBS))
def test_each_zip_bomb_check_fires_on_its_own(check, tmp_path, capsys):
    make, message = BOMBS[check]
    path = make(tmp_path / "bomb.zip")
    entry_ratios, archive_ratio = _ratios(path)
    limit = archive_module.DEFAULT_MAX_RATIO
    if check == "entry":
        assert max(entry_ratios) > limit > 5 * archive_ratio
        ratio = max(entry_ratios)
    else:
        assert max(entry_ratios) < limit < archive_ratio
        ratio = archive_ratio
    destination = tmp_path / "raw"
    assert data_unzipper.main([str(path), "--dest", str(destination), "--quiet"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {message}") and error.count("\n") == 1, error
    assert error.endswith(
        f"expands {ratio:,.0f} times (possible zip bomb; raise --max-ratio if it is genuine)\n"
    )
    assert not destination.exists()


def _stored_archive(path: Path, sizes: list[int]) -> Path:
    """Incompressible entries stored as they are: each expands exactly once."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for index, size in enumerate(sizes):
            archive.writestr(f"train/REAL/{index}.bin", random.Random(index).randbytes(size))
    return path


def test_each_limit_refuses_only_what_goes_past_it(tmp_path):
    total = 2 << 20
    path = _stored_archive(tmp_path / "stored.zip", [1 << 20, 1 << 20])
    with zipfile.ZipFile(path) as archive:
        plan = archive_module.plan_extraction(archive, total, max_ratio=1.0)
        assert plan.total_bytes == total and len(plan.files) == 2
        archive_module.plan_extraction(archive, total, max_ratio=2.0, archive_bytes=total // 2)
        with pytest.raises(PipelineError, match=f"^archive expands to more than {total - 1:,} "):
            archive_module.plan_extraction(archive, total - 1, max_ratio=1.0)
        with pytest.raises(PipelineError, match="^archive expands 4 times "):
            archive_module.plan_extraction(archive, total, max_ratio=3.9, archive_bytes=total // 4)
    # An archive of real photos expands about once, far under the default limit.
    assert data_unzipper.main([str(path), "--dest", str(tmp_path / "out"), "--quiet"]) == 0


def test_the_ratio_checks_start_at_exactly_one_mebibyte(tmp_path):
    one_mebibyte = archive_module.RATIO_CHECK_MIN_BYTES
    assert one_mebibyte == 1 << 20
    zeros = _zip_with(tmp_path / "zeros.zip", ("train/FAKE/zeros.bin", bytes(one_mebibyte)))
    with zipfile.ZipFile(zeros) as archive, pytest.raises(PipelineError, match="^entry "):
        archive_module.plan_extraction(archive, 2**40, max_ratio=200)
    stored = _stored_archive(tmp_path / "stored.zip", [one_mebibyte - 4, 4])
    with (
        zipfile.ZipFile(stored) as archive,
        pytest.raises(PipelineError, match="^archive expands 1,048,576 times "),
    ):
        archive_module.plan_extraction(archive, 2**40, max_ratio=200, archive_bytes=1)
    smaller = _stored_archive(tmp_path / "smaller.zip", [one_mebibyte - 5, 4])
    with zipfile.ZipFile(smaller) as archive:
        archive_module.plan_extraction(archive, 2**40, max_ratio=200, archive_bytes=1)


def test_a_rerun_with_large_entries_finds_its_finished_output(tmp_path):
    path = _stored_archive(tmp_path / "stored.zip", [1 << 20, 1 << 20])
    first = archive_module.unzip_archive(path, tmp_path / "out", quiet=True)
    again = archive_module.unzip_archive(path, tmp_path / "out", quiet=True)
    assert (first.files, first.total_bytes, first.already_done) == (2, 2 << 20, False)
    assert (again.files, again.total_bytes, again.already_done) == (2, 2 << 20, True)


def test_entries_compressed_otherwise_extract_the_same(tmp_path):
    data = random.Random(3).randbytes(5000) * 3
    path = tmp_path / "others.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train/REAL/bz.bin", data, compress_type=zipfile.ZIP_BZIP2)
        archive.writestr("train/REAL/xz.bin", data, compress_type=zipfile.ZIP_LZMA)
    assert data_unzipper.main([str(path), "--dest", str(tmp_path / "out"), "--quiet"]) == 0
    assert without_stamp(snapshot(tmp_path / "out")) == {
        "train/REAL/bz.bin": data,
        "train/REAL/xz.bin": data,
    }


def test_names_beyond_ascii_extract_under_their_own_names(tmp_path):
    # zipfile flags such names as UTF-8; "é" also exists in the old cp437 code page, "фото" not.
    names = ["train/REAL/café.jpg", "train/FAKE/фото.jpg"]
    path = _zip_with(tmp_path / "names.zip", *((name, name.encode()) for name in names))
    assert data_unzipper.main([str(path), "--dest", str(tmp_path / "out"), "--quiet"]) == 0
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == name.encode()


def test_written_archives_are_deflated_dated_and_plain_files(tmp_path):
    output = tmp_path / "new" / "folders" / "b.zip"
    archive_module.write_zip_members(output, [("x/1.jpg", bytes(1000))])
    with zipfile.ZipFile(output) as archive:
        (info,) = archive.infolist()
    assert info.compress_type == zipfile.ZIP_DEFLATED and info.compress_size < 100
    assert info.date_time == archive_module.FIXED_DATE
    assert info.external_attr == (stat.S_IFREG | 0o644) << 16


def test_folder_entries_and_a_root_entry_become_folders(tmp_path):
    path = tmp_path / "folders.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("./", b"")
        archive.writestr("train/empty/", b"")  # a folder listed before its parent
        archive.writestr("train/", b"")
        archive.writestr("train/REAL/a.jpg", b"a")
    destination = tmp_path / "out"
    assert data_unzipper.main([str(path), "--dest", str(destination), "--quiet"]) == 0
    assert (destination / "train" / "empty").is_dir()
    assert without_stamp(snapshot(destination)) == {"train/REAL/a.jpg": b"a"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("a\x00b.jpg", "contains a NUL byte"),
        ("C:", "absolute path"),
        ("C:x.jpg", "absolute path"),
        ("\\evil.jpg", "absolute path"),
    ],
)
def test_safe_member_path_refuses_names_that_could_leave_the_destination(name, message):
    with pytest.raises(PipelineError, match=f"^unsafe entry.*{message}"):
        safe_member_path(name)


def test_destination_with_other_content_is_refused(dataset_zip, tmp_path, capsys):
    path, _ = dataset_zip
    destination = tmp_path / "raw"
    destination.mkdir()
    (destination / "mine.txt").write_text("keep me")
    assert data_unzipper.main([str(path), "--dest", str(destination), "--quiet"]) == 1
    assert "already exists with other content" in capsys.readouterr().err
    assert snapshot(destination) == {"mine.txt": b"keep me"}


def test_duplicate_entries_are_refused(tmp_path):
    path = tmp_path / "dup.zip"
    with (
        pytest.warns(UserWarning, match="Duplicate name"),
        zipfile.ZipFile(path, "w") as archive,
    ):
        archive.writestr("a/x.jpg", b"1")
        archive.writestr("a/x.jpg", b"2")
    with pytest.raises(PipelineError, match="more than once"):
        archive_module.unzip_archive(path, tmp_path / "out")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a/b.jpg", "a/b.jpg"),
        ("./a//b.jpg", "a/b.jpg"),
        ("a\\b.jpg", "a/b.jpg"),
        ("./", None),
        ("a", "a"),
    ],
)
def test_safe_member_path_normalises_harmless_names(name, expected):
    result = safe_member_path(name)
    assert (result.as_posix() if result else None) == expected


@pytest.mark.parametrize("kill_after", [1, 7, 15])
def test_killed_extraction_reruns_to_the_uninterrupted_result(
    dataset_zip, tmp_path, monkeypatch, kill_after
):
    path, _ = dataset_zip
    clean = tmp_path / "clean"
    assert data_unzipper.main([str(path), "--dest", str(clean), "--quiet"]) == 0

    calls = {"n": 0}
    real_extract = archive_module.extract_entry

    def extract_then_die(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == kill_after:
            raise Killed
        return real_extract(*args, **kwargs)

    destination = tmp_path / "raw"
    monkeypatch.setattr(archive_module, "extract_entry", extract_then_die)
    with pytest.raises(Killed):
        data_unzipper.main([str(path), "--dest", str(destination), "--quiet"])
    assert not destination.exists() and (tmp_path / ".raw.partial").exists()
    monkeypatch.setattr(archive_module, "extract_entry", real_extract)

    assert data_unzipper.main([str(path), "--dest", str(destination), "--quiet"]) == 0
    assert snapshot(destination) == snapshot(clean)
    assert not (tmp_path / ".raw.partial").exists()


@pytest.mark.end_to_end
def test_kill_9_midway_then_rerun_matches(tmp_path):
    """A real SIGKILL at two moments of an extraction, each followed by a re-run."""
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for index in range(1500):
            archive.writestr(f"train/{'REAL' if index % 2 else 'FAKE'}/{index}.jpg", os.urandom(64))
    clean = tmp_path / "clean"
    command = [sys.executable, str(ROOT / "data_unzipper.py"), str(path), "--quiet", "--dest"]
    subprocess.run([*command, str(clean)], check=True, capture_output=True)
    expected = snapshot(clean)
    killed_midway = 0
    for files_written in (1, 600):
        destination = tmp_path / f"raw_{files_written}"
        staging = tmp_path / f".raw_{files_written}.partial"
        process = subprocess.Popen([*command, str(destination)], stdout=subprocess.DEVNULL)
        kill_when_staged(process, staging, files_written)
        killed_midway += staging.exists() and not destination.exists()
        subprocess.run([*command, str(destination)], check=True, capture_output=True)
        assert snapshot(destination) == expected
        assert not staging.exists()
    assert killed_midway >= 1  # the kill really interrupted an extraction at least once


def test_write_zip_round_trips_and_is_reproducible(image_tree, tmp_path):
    tree = image_tree({"train/REAL": 3, "test/FAKE": 2})
    (tree / ".hidden").write_text("left out")
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    assert write_zip(tree, first, quiet=True) == 5
    os.utime(tree / "train" / "REAL" / "img_0000.jpg", (0, 0))
    write_zip(tree, second, quiet=True)
    assert first.read_bytes() == second.read_bytes()
    archive_module.unzip_archive(first, tmp_path / "out", quiet=True)
    expected = {k: v for k, v in snapshot(tree).items() if k != ".hidden"}
    assert without_stamp(snapshot(tmp_path / "out")) == expected


def test_entries_nested_as_deep_as_allowed_extract(tmp_path):
    deepest = "level/" * archive_module.MAX_ENTRY_DEPTH + "x.jpg"
    path = _zip_with(tmp_path / "deep.zip", (deepest, b"deep"))
    assert data_unzipper.main([str(path), "--dest", str(tmp_path / "out"), "--quiet"]) == 0
    assert (tmp_path / "out" / deepest).read_bytes() == b"deep"
