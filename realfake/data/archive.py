"""Zip archives: checking every entry before anything is written, extracting safely, writing.

Extraction never produces more bytes than an entry declares and checks every CRC (small entries
are read in one go, large ones streamed through `zipfile`), so the size bounds checked up front
also hold for archives whose headers lie. Archives written here are sorted and stamped with a
fixed date, so the same files always give the same bytes.
"""

import os
import shutil
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from realfake.core.errors import PipelineError
from realfake.core.fileops import destination_is_done, file_digest, staged_directory
from realfake.core.progress import progress

DEFAULT_MAX_TOTAL_GIB = 64.0
DEFAULT_MAX_RATIO = 200.0
# Tiny entries (empty files, short text) compress far beyond any bomb ratio and are harmless.
RATIO_CHECK_MIN_BYTES = 1 << 20
FIXED_DATE = (1980, 1, 1, 0, 0, 0)
# Folder levels an entry may sit below the archive's root: far beyond any dataset's layout, and
# few enough that paths stay short and creating the folders never nears Python's recursion limit.
MAX_ENTRY_DEPTH = 100
_COPY_BLOCK = 1 << 20
_FAST_ENTRY_BYTES = 16 << 20
_LOCAL_HEADER = struct.Struct("<4s5H3L2H")


@dataclass(frozen=True)
class ArchivePlan:
    """The checked content of an archive: folders and files to create, in archive order."""

    folders: list[PurePosixPath]
    files: list[tuple[zipfile.ZipInfo, PurePosixPath]]
    total_bytes: int


def open_archive(path: Path) -> zipfile.ZipFile:
    """Open a zip file, turning the usual failures into one-line PipelineErrors."""
    if not path.exists():
        raise PipelineError(f"archive not found: {path}")
    if not path.is_file():
        raise PipelineError(f"archive is not a file: {path}")
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise PipelineError(f"{path} is not a readable zip archive ({error})") from None
    except (OSError, EOFError, ValueError) as error:
        raise PipelineError(f"cannot read {path}: {error}") from None


def safe_member_path(name: str) -> PurePosixPath | None:
    """The relative path an entry name stands for, or None for the archive root ('./').

    Raises PipelineError for absolute paths, drive letters, '..' components and NUL bytes, since
    any of them could place a file outside the destination (zip-slip).
    """
    if "\x00" in name:
        raise PipelineError(f"unsafe entry name {name!r}: contains a NUL byte")
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise PipelineError(f"unsafe entry {name!r}: absolute path")
    parts = [part for part in unified.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise PipelineError(f"unsafe entry {name!r}: '..' would leave the destination")
    return PurePosixPath(*parts) if parts else None


def _check_entry(info: zipfile.ZipInfo, path: PurePosixPath | None) -> None:
    """Refuse an entry that is unsafe or unreadable in itself, whatever else the archive holds."""
    mode = info.external_attr >> 16
    if mode and stat.S_ISLNK(mode):
        raise PipelineError(f"unsafe entry {info.filename!r}: symbolic link")
    kind = stat.S_IFMT(mode)  # zero where the archiver recorded permissions only
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise PipelineError(f"unsafe entry {info.filename!r}: not a regular file or folder")
    if info.flag_bits & 0x1:
        raise PipelineError(
            f"entry {info.filename!r} is encrypted; extract it with its password first"
        )
    if info.file_size and (path is None or info.is_dir()):
        # Extraction makes a folder of such an entry, or skips the root: its data would be lost.
        raise PipelineError(
            f"entry {info.filename!r} holds {info.file_size:,} bytes but names "
            f"{'the archive root' if path is None else 'a folder'}, not a file"
        )
    if path is None:
        return
    depth = len(path.parts) - (0 if info.is_dir() else 1)  # the folders it needs
    if depth > MAX_ENTRY_DEPTH:
        # Nested that deep, a name is at least 200 characters long: show its start.
        shown = f"{info.filename[:60]}..."
        raise PipelineError(
            f"unsafe entry {shown!r}: it is nested {depth:,} folders deep "
            f"(more than {MAX_ENTRY_DEPTH} is refused)"
        )


def plan_extraction(
    archive: zipfile.ZipFile,
    max_total_bytes: int,
    max_ratio: float,
    archive_bytes: int | None = None,
) -> ArchivePlan:
    """Check every entry of an open archive and return what extracting it would create.

    Args:
        archive: the open zip file.
        max_total_bytes: refuse archives whose entries add up to more uncompressed bytes.
        max_ratio: refuse entries (of at least 1 MiB) and archives whose uncompressed size is more
            than this many times their compressed size.
        archive_bytes: size of the archive file, for the whole-archive ratio.
    """
    folders: list[PurePosixPath] = []
    files: list[tuple[zipfile.ZipInfo, PurePosixPath]] = []
    seen: set[PurePosixPath] = set()
    total = 0
    for info in archive.infolist():
        path = safe_member_path(info.filename)
        _check_entry(info, path)
        if path is None:
            continue
        if path in seen:
            raise PipelineError(f"entry {info.filename!r} appears more than once in the archive")
        seen.add(path)
        if info.is_dir():
            folders.append(path)
            continue
        total += info.file_size
        if total > max_total_bytes:
            raise PipelineError(
                f"archive expands to more than {max_total_bytes:,} bytes "
                "(possible zip bomb; raise --max-total-gib if it is genuine)"
            )
        if info.file_size >= RATIO_CHECK_MIN_BYTES and info.file_size > max_ratio * max(
            info.compress_size, 1
        ):
            ratio = info.file_size / max(info.compress_size, 1)
            raise PipelineError(
                f"entry {info.filename!r} expands {ratio:,.0f} times "
                "(possible zip bomb; raise --max-ratio if it is genuine)"
            )
        files.append((info, path))
    if archive_bytes and total >= RATIO_CHECK_MIN_BYTES and total > max_ratio * archive_bytes:
        raise PipelineError(
            f"archive expands {total / archive_bytes:,.0f} times "
            "(possible zip bomb; raise --max-ratio if it is genuine)"
        )
    return ArchivePlan(folders=folders, files=files, total_bytes=total)


def extract_plan(
    archive: zipfile.ZipFile, plan: ArchivePlan, destination: Path, quiet: bool = False
) -> None:
    """Write the planned folders and files under `destination`, checking each file's CRC."""
    root = os.fspath(destination)
    made: set[str] = {""}

    def make_folder(relative: str) -> None:
        if relative in made:
            return
        try:
            os.makedirs(os.path.join(root, relative), exist_ok=True)
        except OSError as error:
            message = f"cannot create folder {relative} from the archive: {error}"
            raise PipelineError(message) from None
        made.add(relative)

    for folder in plan.folders:
        make_folder(folder.as_posix())
    # Plain strings, one read and one write per small entry: with 100k small files the per-file
    # overhead of zipfile's streaming reader is what limits the speed.
    jobs = [(info, path.as_posix()) for info, path in plan.files]
    with open(archive.filename, "rb") as handle:
        for info, relative in progress(jobs, total=len(jobs), description="unzip", quiet=quiet):
            make_folder(relative.rpartition("/")[0])
            try:
                extract_entry(archive, handle, info, os.path.join(root, relative))
            except zipfile.BadZipFile as error:
                message = f"archive entry {info.filename!r} is damaged ({error})"
                raise PipelineError(message) from None
            except (EOFError, zlib.error) as error:
                raise PipelineError(
                    f"archive entry {info.filename!r} is truncated or damaged ({error})"
                ) from None
            except NotImplementedError as error:
                raise PipelineError(f"archive entry {info.filename!r}: {error}") from None
            except OSError as error:
                message = f"cannot write {relative} from the archive: {error}"
                raise PipelineError(message) from None


def extract_entry(
    archive: zipfile.ZipFile, handle: BinaryIO, info: zipfile.ZipInfo, target: str
) -> None:
    """Write one entry to a new file `target`, checking its size and CRC."""
    data = _read_small_entry(handle, info)
    with open(target, "xb", buffering=0) as output:
        if data is not None:
            output.write(data)
            return
        with archive.open(info) as source:  # large or unusual entries: zipfile streams them
            shutil.copyfileobj(source, output, _COPY_BLOCK)


def _read_small_entry(handle: BinaryIO, info: zipfile.ZipInfo) -> bytes | None:
    """Read a small stored or deflated entry in one go, or None where zipfile should stream it.

    Checks what zipfile checks: the local header's signature and name, the declared size (the
    output is never allowed to grow past it) and the CRC-32.
    """
    if (
        info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
        or info.compress_size > _FAST_ENTRY_BYTES
        or info.file_size > _FAST_ENTRY_BYTES
    ):
        return None
    try:
        expected_name = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
    except UnicodeEncodeError:
        return None
    handle.seek(info.header_offset)
    header = handle.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile("bad local file header")
    name_length, extra_length = _LOCAL_HEADER.unpack(header)[-2:]
    if handle.read(name_length) != expected_name:
        raise zipfile.BadZipFile("file name in directory and local header differ")
    handle.seek(extra_length, os.SEEK_CUR)
    data = handle.read(info.compress_size)
    if len(data) != info.compress_size:
        raise EOFError("the archive ends inside this entry")
    if info.compress_type == zipfile.ZIP_DEFLATED:
        data = zlib.decompressobj(-15).decompress(data, info.file_size + 1)
    if len(data) != info.file_size:
        raise zipfile.BadZipFile("size differs from the directory's")
    if zlib.crc32(data) != info.CRC:
        raise zipfile.BadZipFile("bad CRC-32")
    return data


def write_zip_members(output: Path, members: Iterable[tuple[str, bytes]]) -> int:
    """Write (name, bytes) members to a zip atomically, in the given order, with a fixed date.

    Returns the number of members written. The result is byte-for-byte reproducible.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.partial")
    count = 0
    with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            archive.writestr(info, data)
            count += 1
    os.replace(temporary, output)
    return count


def write_zip(folder: Path, output: Path, quiet: bool = False) -> int:
    """Zip every file under `folder` (names relative to it, sorted) into `output`, atomically.

    Hidden files and folders are left out. Returns the number of files written.
    """
    paths = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    members = (
        (path.relative_to(folder).as_posix(), path.read_bytes())
        for path in progress(paths, total=len(paths), description="zip", quiet=quiet)
    )
    return write_zip_members(output, members)


@dataclass(frozen=True)
class UnzipResult:
    """What an extraction wrote (or found already written)."""

    files: int
    total_bytes: int
    already_done: bool


def unzip_archive(
    archive_path: Path,
    destination: Path,
    max_total_bytes: int = int(DEFAULT_MAX_TOTAL_GIB * 2**30),
    max_ratio: float = DEFAULT_MAX_RATIO,
    quiet: bool = False,
) -> UnzipResult:
    """Check every entry, then extract the archive into `destination`, appearing only when whole.

    The stamp names the archive's SHA-256, so a re-run with the same archive does nothing and a
    different archive is refused rather than mixed in.
    """
    with open_archive(archive_path) as archive:
        stamp = {"stage": "data_unzipper", "archive_sha256": file_digest(archive_path)}
        if destination_is_done(destination, stamp):
            plan = plan_extraction(archive, max_total_bytes=2**63, max_ratio=float("inf"))
            return UnzipResult(len(plan.files), plan.total_bytes, already_done=True)
        plan = plan_extraction(
            archive, max_total_bytes, max_ratio, archive_bytes=archive_path.stat().st_size
        )
        destination.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(destination.parent).free
        if plan.total_bytes > free:
            raise PipelineError(
                f"archive expands to {plan.total_bytes:,} bytes but only {free:,} are free "
                f"under {destination.parent}"
            )
        with staged_directory(destination, stamp) as staging:
            extract_plan(archive, plan, staging, quiet=quiet)
    return UnzipResult(len(plan.files), plan.total_bytes, already_done=False)
