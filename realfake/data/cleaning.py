"""Deleting safely inside the project's data folder, and cleaning split layouts of files that do
not decode and of byte-identical duplicates."""

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from realfake.core.config import DATA_DIR, RAW_DIR, SPLITS
from realfake.core.errors import PipelineError
from realfake.core.fileops import file_digest
from realfake.core.images import is_decodable, is_image_name
from realfake.core.layout import class_folders
from realfake.core.progress import progress

# Which copy of a duplicate stays: the one in the earliest split of this order, so test is never
# touched and validation gives way to nothing but test.
KEEP_ORDER = ("test", "validation", "train")


def _inside(path: Path, folder: Path) -> bool:
    """True when `path` is `folder` or lies under it (both absolute, normalised)."""
    return path == folder or folder in path.parents


def project_folder() -> Path:
    """The folder holding the realfake package: the repository root of a checkout."""
    return Path(__file__).resolve().parents[2]


def resolve_data_root(data_root: Path) -> Path:
    """The data folder, fully resolved; it must exist and must not hold the file system's root,
    the home folder, the current folder or the project, which a mistyped --data-root would
    otherwise expose to deletion."""
    if not data_root.is_dir():
        raise PipelineError(
            f"data folder {data_root} does not exist (run from the project folder or give "
            "--data-root)"
        )
    root = data_root.resolve()
    if root.parent == root:
        raise PipelineError(f"refusing data root {data_root}: it is the file system's root")
    protected = (
        ("the home folder", Path.home()),
        ("the current folder", Path.cwd()),
        ("the project", project_folder()),
    )
    for what, folder in protected:
        folder = folder.resolve()
        if _inside(folder, root):
            where = "is" if folder == root else "holds"
            raise PipelineError(f"refusing data root {data_root}: it {where} {what} ({folder})")
    return root


class DeletionBoundary:
    """Where deleting is allowed: inside the data folder, and outside its raw extracted data
    (data/raw) unless `allow_raw`; every check goes by where links really lead."""

    def __init__(self, data_root: Path, *, allow_raw: bool) -> None:
        self.root = resolve_data_root(data_root)
        self.lexical_root = Path(os.path.normpath(os.path.abspath(data_root)))
        self.raw = self.root / RAW_DIR.relative_to(DATA_DIR)
        self.allow_raw = allow_raw
        self._resolved_folders: dict[Path, Path] = {}

    def check(self, path: Path, *, allow_root: bool = False) -> Path:
        """Return `path` resolved if it may be deleted (or cleaned), else raise PipelineError.

        Refused: anything outside the data folder (by its written path or by where links lead),
        a link that points out of it, the data folder itself unless `allow_root`, and the raw
        data unless allowed. A path that does not exist passes if it would.
        """
        root = self.root
        lexical = Path(os.path.normpath(os.path.abspath(path)))
        resolved = path.resolve()
        if path.is_symlink() and not _inside(resolved, root):
            raise PipelineError(
                f"refusing {path}: it is a symbolic link to {resolved}, outside the data folder "
                f"{root}"
            )
        if not _inside(resolved, root) or not (
            _inside(lexical, root) or _inside(lexical, self.lexical_root)
        ):
            raise PipelineError(f"refusing {path}: it is outside the data folder {root}")
        if resolved == root and not allow_root:
            raise PipelineError(f"refusing {path}: it is the data folder itself")
        self._check_raw(path, resolved)
        return resolved

    def check_removal(self, path: Path) -> None:
        """Raise PipelineError unless removing the file or link `path` stays within bounds.

        What is removed is the entry itself, so its folder is resolved, never the entry: a link
        is judged by where it lies, a file reached through a linked folder by where it really is.
        """
        folder = self._resolved_folders.get(path.parent)
        if folder is None:
            folder = self._resolved_folders[path.parent] = path.parent.resolve()
        located = folder / path.name
        if not _inside(folder, self.root):
            raise PipelineError(
                f"refusing {path}: it is outside the data folder {self.root} (it lies in "
                f"{folder}, reached through a symbolic link)"
            )
        self._check_raw(path, located)

    def _check_raw(self, path: Path, resolved: Path) -> None:
        if _inside(resolved, self.raw) and not self.allow_raw:
            raise PipelineError(
                f"refusing {path}: it is raw extracted data ({self.raw}); add --include-raw to "
                "delete it"
            )


def _deletion_entries(path: Path) -> tuple[list[Path], list[Path]]:
    """The files and links (each one entry, never followed) and the folders, deepest first, that
    deleting the folder `path` removes."""
    files: list[Path] = []
    folders: list[Path] = []
    for folder, subfolders, names in os.walk(path, topdown=False, followlinks=False):
        files.extend(Path(folder) / name for name in names)
        # os.walk lists links to folders among the folders; they are removed as links.
        for name in subfolders:
            candidate = Path(folder) / name
            (files if candidate.is_symlink() else folders).append(candidate)
    return files, folders


def count_files(path: Path) -> int:
    """Files and links under `path`, each link one entry; 1 for a file or a link."""
    if path.is_symlink() or not path.is_dir():
        return 1
    return len(_deletion_entries(path)[0])


def delete_path(path: Path, *, quiet: bool = False) -> int:
    """Delete a file, a link (never what it points to) or a folder tree; return files removed.

    Files go one by one under a progress bar, then the emptied folders, deepest first; a killed
    deletion is finished by running it again.
    """
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return 1
    files, folders = _deletion_entries(path)
    for file in progress(files, total=len(files), description=f"deleting {path}", quiet=quiet):
        file.unlink(missing_ok=True)
    for folder in folders:
        folder.rmdir()
    path.rmdir()
    return len(files)


@dataclass(frozen=True)
class LayoutFile:
    """An image file in a split layout."""

    path: Path
    split: str  # "" when the folder cleaned is itself one split
    class_folder: str

    @property
    def label(self) -> str:
        return f"{self.split}/{self.class_folder}" if self.split else self.class_folder


def layout_files(root: Path) -> list[LayoutFile]:
    """Image files in the class folders of each split (train, validation, test) under `root`, or
    of `root` itself when it has class folders and no splits. Links are never included."""
    splits = [(name, root / name) for name in SPLITS if (root / name).is_dir()]
    if not splits:
        if not class_folders(root):
            raise PipelineError(
                f"{root} holds neither split folders ({', '.join(SPLITS)}) nor class folders"
            )
        splits = [("", root)]
    found: list[LayoutFile] = []
    for split, folder in splits:
        for class_folder in class_folders(folder).values():
            with os.scandir(class_folder) as entries:
                found.extend(
                    LayoutFile(Path(entry.path), split, class_folder.name)
                    for entry in entries
                    if entry.is_file(follow_symlinks=False) and is_image_name(Path(entry.name))
                )
    return sorted(found, key=lambda item: str(item.path))


def find_corrupt(root: Path, *, quiet: bool = False) -> list[LayoutFile]:
    """Image files in the split layout under `root` that Pillow cannot decode."""
    files = layout_files(root)
    return [
        item
        for item in progress(files, total=len(files), description="decoding", quiet=quiet)
        if not is_decodable(item.path)
    ]


@dataclass
class DuplicatePlan:
    """What the duplicate clean-up removes, and what it keeps."""

    remove: list[tuple[LayoutFile, LayoutFile]] = field(default_factory=list)  # (copy, kept)
    groups: int = 0  # sets of two or more identical files
    left_in_test: int = 0  # sets still holding more than one file, all in test

    def removed_per_folder(self) -> Counter:
        return Counter(copy.label for copy, _ in self.remove)


def _keep_rank(item: LayoutFile, root: Path) -> tuple:
    split_rank = KEEP_ORDER.index(item.split) if item.split in KEEP_ORDER else len(KEEP_ORDER)
    return split_rank, item.path.relative_to(root).as_posix()


def plan_duplicates(root: Path, *, include_test: bool = False, quiet: bool = False):
    """Group the split layout's image files by content and choose which copies go.

    In each group of identical files the copy kept is the one in the earliest split of test,
    validation, train, then the first by path; the others go, except copies in test unless
    `include_test`. The choice never changes as copies go, so a killed clean-up that is run
    again removes exactly the rest.
    """
    files = layout_files(root)
    by_size: dict[int, list[LayoutFile]] = defaultdict(list)
    for item in files:
        by_size[item.path.stat().st_size].append(item)
    candidates = [item for group in by_size.values() if len(group) > 1 for item in group]
    by_digest: dict[str, list[LayoutFile]] = defaultdict(list)
    for item in progress(candidates, total=len(candidates), description="hashing", quiet=quiet):
        by_digest[file_digest(item.path)].append(item)
    plan = DuplicatePlan()
    for group in by_digest.values():
        if len(group) < 2:
            continue
        plan.groups += 1
        group.sort(key=lambda item: _keep_rank(item, root))
        kept = group[0]
        staying = [kept]
        for copy in group[1:]:
            if copy.split == "test" and not include_test:
                staying.append(copy)
            else:
                plan.remove.append((copy, kept))
        if len(staying) > 1:
            plan.left_in_test += 1
    plan.remove.sort(key=lambda pair: str(pair[0].path))
    return plan
