"""Safe file operations: hard links with a copy fallback, atomic writes, and stage outputs that
appear only when complete, so a stage killed at any moment can simply be run again."""

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from realfake.core.errors import PipelineError

STAMP_NAME = ".realfake-stage.json"
# The largest file read whole into memory as one input image; far above any real photograph.
MAX_INPUT_BYTES = 512 * 1024 * 1024
_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFile(OSError):
    """A path that names a pipe, device, socket or folder, or a file too large to read whole."""


def open_regular_file(path: Path) -> BinaryIO:
    """A regular file (links followed) opened for reading in binary.

    Anything else raises NotRegularFile before a byte is read: a named pipe would block forever
    and a link to /dev/zero never ends. The file is opened without blocking and checked on the
    open descriptor, so it cannot be swapped for something else in between.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a file")
            raise NotRegularFile(0, f"{kind}, not a regular file")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        # Checked before fdopen, which refuses a folder itself and leaves the descriptor open.
        os.close(descriptor)
        raise


def read_regular_file(path: Path, limit: int | None = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a regular file (`open_regular_file`) of at most `limit` bytes (None: any
    size); a larger one raises NotRegularFile before more than `limit` bytes are held."""
    with open_regular_file(path) as handle:
        data = handle.read() if limit is None else handle.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise NotRegularFile(0, f"larger than {limit:,} bytes")
    return data


def link_or_copy(source: Path, destination: Path) -> None:
    """Hard-link `source` to `destination`, copying where the filesystem cannot link."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old content or all of the new."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def file_digest(path: Path) -> str:
    """Return the SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_stamp(folder: Path) -> dict | None:
    """Return the stamp a finished stage left in `folder`, or None."""
    try:
        return json.loads((folder / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def destination_is_done(destination: Path, stamp: dict) -> bool:
    """True when `destination` holds this stage's finished output made with the same settings.

    A missing or empty destination returns False; any other content raises PipelineError, so a
    stage never mixes its output with files it did not write.
    """
    if not destination.exists():
        return False
    if not destination.is_dir():
        raise PipelineError(f"destination {destination} exists and is not a folder")
    if not any(destination.iterdir()):
        return False
    if read_stamp(destination) == stamp:
        return True
    raise PipelineError(
        f"destination {destination} already exists with other content; "
        "remove it or choose another destination"
    )


@contextmanager
def staged_directory(destination: Path, stamp: dict) -> Iterator[Path]:
    """Build a folder in a hidden sibling and rename it to `destination` only when complete.

    Leftovers of an interrupted run are discarded first, so a re-run gives exactly the result of
    an uninterrupted one. The stamp written last lets a re-run recognise finished output.
    """
    staging = destination.parent / f".{destination.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
    except Exception:
        # A failed stage leaves nothing behind beside its destination; a killed one is cleaned
        # up by the next run instead.
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_text(staging / STAMP_NAME, json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    if destination.exists():
        destination.rmdir()  # empty: destination_is_done allowed only that
    os.rename(staging, destination)


def move_without_overwrite(source: Path, destination: Path) -> bool:
    """Move a file, never replacing an existing `destination`; return False on a name conflict.

    A link-then-unlink move leaves, if killed in between, the same file under both names; a
    destination that is that very file (or has equal bytes) counts as already moved.
    """
    try:
        os.link(source, destination)  # fails with EEXIST instead of overwriting
    except FileExistsError:
        if not (os.path.samefile(source, destination) or files_equal(source, destination)):
            return False
    except OSError:  # another filesystem or no hard links: copy beside, then rename
        if destination.exists():
            if not files_equal(source, destination):
                return False
        else:
            temporary = destination.with_name(f".{destination.name}.moving")
            shutil.copy2(source, temporary)
            os.replace(temporary, destination)
    os.unlink(source)
    return True


def files_equal(first: Path, second: Path) -> bool:
    """True when two files have the same bytes."""
    return first.stat().st_size == second.stat().st_size and file_digest(first) == file_digest(
        second
    )
