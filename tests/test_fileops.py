"""Safe file operations on their own: digests of every byte, equality by content, moves that never
overwrite (across filesystems too), and destinations that count as done only when stamped."""

import hashlib
import os
import random
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from realfake.core import fileops
from realfake.core.errors import PipelineError


@pytest.fixture
def other_filesystem(tmp_path) -> Path:
    """A folder on another filesystem than tmp_path (the tmpfs /dev/shm), where hard links fail."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the temporary folder")
    with tempfile.TemporaryDirectory(dir=shm) as folder:
        yield Path(folder)


def test_file_digest_is_the_sha256_of_every_byte(tmp_path):
    data = random.Random(0).randbytes(3 << 20)  # more than one block read
    (tmp_path / "big.bin").write_bytes(data)
    assert fileops.file_digest(tmp_path / "big.bin") == hashlib.sha256(data).hexdigest()


def test_files_equal_compares_bytes_not_only_sizes(tmp_path):
    first, second, third = (tmp_path / name for name in ("a", "b", "c"))
    first.write_bytes(b"same size")
    second.write_bytes(b"SAME SIZE")
    third.write_bytes(b"same size")
    assert not fileops.files_equal(first, second)
    assert fileops.files_equal(first, third)


def test_an_empty_destination_is_not_done_and_anything_else_is_refused(tmp_path):
    stamp = {"stage": "test"}
    destination = tmp_path / "out"
    assert not fileops.destination_is_done(destination, stamp)
    destination.mkdir()
    assert not fileops.destination_is_done(destination, stamp)
    (destination / "mine.txt").write_text("keep me")
    with pytest.raises(PipelineError) as caught:
        fileops.destination_is_done(destination, stamp)
    assert str(caught.value) == (
        f"destination {destination} already exists with other content; "
        "remove it or choose another destination"
    )
    (tmp_path / "file").write_text("x")
    with pytest.raises(PipelineError, match=r"^destination .*file exists and is not a folder$"):
        fileops.destination_is_done(tmp_path / "file", stamp)


def test_link_or_copy_links_where_it_can_and_copies_across_filesystems(tmp_path, other_filesystem):
    source = tmp_path / "model.h5"
    source.write_bytes(b"weights")
    fileops.link_or_copy(source, tmp_path / "linked.h5")
    assert os.path.samefile(source, tmp_path / "linked.h5")
    fileops.link_or_copy(source, other_filesystem / "copied.h5")
    assert (other_filesystem / "copied.h5").read_bytes() == b"weights"
    assert not os.path.samefile(source, other_filesystem / "copied.h5")


def test_a_move_across_filesystems_never_overwrites(tmp_path, other_filesystem):
    source = tmp_path / "a.jpg"
    source.write_bytes(b"image")
    assert fileops.move_without_overwrite(source, other_filesystem / "a.jpg")
    assert not source.exists() and (other_filesystem / "a.jpg").read_bytes() == b"image"
    assert not list(other_filesystem.glob(".*"))  # no temporary file left beside it

    source.write_bytes(b"image")  # the same bytes already there: the move is done
    assert fileops.move_without_overwrite(source, other_filesystem / "a.jpg")
    assert not source.exists()

    source.write_bytes(b"other")  # other bytes under the name: nothing moves
    assert not fileops.move_without_overwrite(source, other_filesystem / "a.jpg")
    assert source.read_bytes() == b"other"
    assert (other_filesystem / "a.jpg").read_bytes() == b"image"


def test_a_move_on_one_filesystem_never_overwrites(tmp_path):
    source, destination = tmp_path / "a.jpg", tmp_path / "b.jpg"
    destination.write_bytes(b"other")
    source.write_bytes(b"image")
    assert not fileops.move_without_overwrite(source, destination)
    assert (source.read_bytes(), destination.read_bytes()) == (b"image", b"other")
    destination.write_bytes(b"image")  # a killed move left equal bytes: the move is done
    assert fileops.move_without_overwrite(source, destination)
    assert not source.exists() and destination.read_bytes() == b"image"


def test_read_regular_file_holds_its_limit_and_refuses_one_byte_more(tmp_path):
    path = tmp_path / "image.png"
    path.write_bytes(b"12345")
    assert fileops.read_regular_file(path, limit=5) == b"12345"
    assert fileops.read_regular_file(path, limit=None) == b"12345"
    with pytest.raises(fileops.NotRegularFile) as caught:
        fileops.read_regular_file(path, limit=4)
    assert caught.value.strerror == "larger than 4 bytes"


def test_read_regular_file_holds_no_more_than_its_limit_of_a_larger_file(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(8 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(fileops.NotRegularFile, match="larger than 1,000 bytes"):
            fileops.read_regular_file(path, limit=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # not the 8 MiB of the whole file


def test_read_regular_file_refuses_a_file_over_its_default_limit(tmp_path):
    path = tmp_path / "big.bin"
    with open(path, "wb") as handle:  # sparse: no disk space used
        handle.truncate(fileops.MAX_INPUT_BYTES + 1)
    with pytest.raises(fileops.NotRegularFile, match="larger than 536,870,912 bytes"):
        fileops.read_regular_file(path)


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda path: path.mkdir(), "a folder"),
        (os.mkfifo, "a named pipe"),
        (lambda path: path.symlink_to("/dev/zero"), "a character device"),
    ],
    ids=["folder", "fifo", "link to /dev/zero"],
)
def test_anything_but_a_regular_file_is_refused_by_kind_and_left_closed(tmp_path, make, kind):
    path = tmp_path / "input.png"
    make(path)
    open_before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(fileops.NotRegularFile) as caught:
            fileops.read_regular_file(path)
        assert caught.value.strerror == f"{kind}, not a regular file"
    assert len(os.listdir("/proc/self/fd")) == open_before


def test_a_link_to_a_regular_file_is_followed(tmp_path):
    (tmp_path / "real.png").write_bytes(b"pixels")
    (tmp_path / "link.png").symlink_to(tmp_path / "real.png")
    with fileops.open_regular_file(tmp_path / "link.png") as handle:
        assert handle.read() == b"pixels"
