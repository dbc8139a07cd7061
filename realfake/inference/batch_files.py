"""The images a batch run scores: found under files, folders and glob patterns (hidden, linked
and unreadable entries skipped and counted), and split into shards by a stable hash of their
relative paths.

Example:
    files, skipped, folders_skipped = find_images(["photos/", "more/*.png"])
    mine = select_shard(files, parse_shard("0/4"))
"""

import glob
import hashlib
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from realfake.core.errors import PipelineError
from realfake.core.images import is_image_name


@dataclass(frozen=True)
class ImageFile:
    """An image to score: its path as written in the output, and its path relative to the PATH
    argument it was found under, which decides its shard on every machine alike."""

    path: Path
    relative: str

    @property
    def text(self) -> str:
        """The path as written in a row (`path_text`)."""
        return path_text(self.path)


def path_text(path: Path | str) -> str:
    """A path as text that any UTF-8 file can hold: bytes of a name that are not UTF-8 (a name
    made on another system) are written in backslash form, `\\xe9`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def find_images(arguments: Sequence[str]) -> tuple[list[ImageFile], int, list[str]]:
    """Image files under the given files, folders (recursed) and glob patterns, sorted by path,
    each once; the number of non-image files skipped; and the folders not entered, each as
    "path (reason)".

    Hidden folders (`.git`, `.ipynb_checkpoints`) are not entered; hidden files such as
    `.DS_Store` count as skipped non-images. A folder linked inside a PATH is not followed (a
    link can lead back up and loop) and a folder that cannot be listed is not entered: both are
    returned with the reason. A PATH that names nothing raises PipelineError.
    """
    found: dict[str, ImageFile] = {}
    skipped = 0
    folders_skipped: list[str] = []
    for argument in arguments:
        literal = Path(argument)
        if literal.exists():
            matches, base = [literal], literal if literal.is_dir() else literal.parent
        elif glob.has_magic(argument):
            matches = [Path(match) for match in sorted(glob.glob(argument, recursive=True))]
            base = _glob_base(argument)
        else:
            matches = []
        if not matches:
            raise PipelineError(f"no such file or folder, and no file matches: {argument}")
        for match in matches:
            paths = _walk(match, folders_skipped) if match.is_dir() else [match]
            for path in paths:
                if not is_image_name(path):
                    skipped += 1
                    continue
                relative = path.relative_to(base).as_posix()
                found.setdefault(path_text(path), ImageFile(path, relative))
    return [found[key] for key in sorted(found)], skipped, sorted(set(folders_skipped))


def _glob_base(pattern: str) -> Path:
    """The folder a glob pattern starts from: its leading parts without wildcards."""
    plain = list(itertools.takewhile(lambda part: not glob.has_magic(part), Path(pattern).parts))
    return Path(*plain) if plain else Path(".")


def _walk(folder: Path, folders_skipped: list[str]) -> Iterator[Path]:
    """Every file under `folder`, hidden folders left out, in sorted order; each linked or
    unreadable folder met is added to `folders_skipped` as "path (reason)"."""

    def unreadable(error: OSError) -> None:
        folders_skipped.append(f"{path_text(error.filename)} (cannot read: {error.strerror})")

    for root, folders, files in os.walk(folder, onerror=unreadable):
        visible = sorted(name for name in folders if not name.startswith("."))
        folders[:] = [name for name in visible if not os.path.islink(os.path.join(root, name))]
        for name in sorted(set(visible) - set(folders)):
            folders_skipped.append(
                f"{path_text(Path(root) / name)} (a link to a folder, not followed)"
            )
        for name in sorted(files):
            yield Path(root) / name


def parse_shard(text: str) -> tuple[int, int]:
    """'K/N' to (K, N), K counted from 0 as Slurm array and Kubernetes indexes are."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must be K/N, such as 0/4, not {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard K/N needs 0 <= K < N, not {text!r}")
    return index, count


def shard_of(relative: str, count: int) -> int:
    """The shard (0 to count - 1) of a file: a hash of its relative path, the same everywhere."""
    digest = hashlib.sha256(relative.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(files: Iterable[ImageFile], shard: tuple[int, int] | None) -> list[ImageFile]:
    """The files of one shard, in their order; all of them without a shard."""
    if shard is None:
        return list(files)
    index, count = shard
    return [file for file in files if shard_of(file.relative, count) == index]
