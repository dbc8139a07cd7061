"""Moving augmented images into the training set's class folders, never overwriting, and
removing only what lies inside the folder being emptied."""

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from realfake.data.augmentation import AUGMENTED_PREFIX, TEMPORARY_SUFFIX
from realfake.core.config import RAW_DIR
from realfake.core.errors import PipelineError
from realfake.core.fileops import STAMP_NAME, files_equal, move_without_overwrite, read_stamp
from realfake.core.images import list_images
from realfake.core.layout import class_folders
from realfake.core.progress import progress


@dataclass
class MoveReport:
    moved: Counter
    left_behind: list[Path]


def move_augmented(source_root: Path, dest_root: Path, *, quiet: bool = False) -> MoveReport:
    """Move each class folder's images into the matching class folder of `dest_root`.

    Never overwrites: a name that exists in the destination with other bytes stops the stage
    before anything moves. A killed move is finished by running it again. Emptied source folders
    (and the augmentation stamp) are removed; anything that is not an image stays.
    """
    if not source_root.is_dir():
        raise PipelineError(f"source folder {source_root} does not exist")
    if not dest_root.is_dir():
        raise PipelineError(f"destination folder {dest_root} does not exist")
    stamp = read_stamp(source_root)
    if stamp is not None and stamp.get("stage") == "augmentation" and not stamp.get("complete"):
        raise PipelineError(
            f"the augmentation into {source_root} did not finish; run data_augmentation.py "
            "again with the same arguments first"
        )
    source_folders = class_folders(source_root)
    _check_removable(source_root, list(source_folders.values()))
    if not source_folders:
        if stamp is not None and stamp.get("stage") == "augmentation":  # it had nothing to add
            return MoveReport(Counter(), _remove_emptied(source_root, []))
        raise PipelineError(f"no class folders (Fake, Real or an alias) in {source_root}")
    dest_folders = class_folders(dest_root)
    moves: list[tuple[str, Path, Path]] = []
    for class_name, folder in sorted(source_folders.items()):
        target = dest_folders.get(class_name, dest_root / class_name)
        moves.extend((class_name, path, target / path.name) for path in list_images(folder))
    conflicts = [
        destination
        for _, source, destination in moves
        if destination.exists()
        and not os.path.samefile(source, destination)
        and not files_equal(source, destination)
    ]
    if conflicts:
        raise PipelineError(
            f"{len(conflicts):,} file name(s) already exist in {dest_root} with other content, "
            f"e.g. {conflicts[0]}; nothing was moved"
        )
    moved: Counter = Counter()
    for class_name, source, destination in progress(
        moves, total=len(moves), description="moving", quiet=quiet
    ):
        destination.parent.mkdir(parents=True, exist_ok=True)
        if not move_without_overwrite(source, destination):
            raise PipelineError(f"{destination} appeared while moving; nothing was overwritten")
        moved[class_name] += 1
    left_behind = _remove_emptied(source_root, list(source_folders.values()))
    return MoveReport(moved, left_behind)


def _check_removable(source_root: Path, folders: list[Path]) -> None:
    """Refuse a move that would remove files from anywhere but the source folder itself: class
    folders that are links (emptying them would empty their targets) and raw extracted data,
    which no stage changes."""
    root = source_root.resolve()
    raw = RAW_DIR.resolve()
    if root == raw or raw in root.parents:
        raise PipelineError(
            f"refusing {source_root}: it is raw extracted data ({raw}), which no stage changes"
        )
    for folder in folders:
        if folder.is_symlink():
            target = folder.resolve()
            where = "inside" if root in target.parents else "outside"
            raise PipelineError(
                f"refusing {folder}: it is a symbolic link to {target}, {where} the source folder "
                f"{root}; moving would empty its target, so name that folder as --source instead"
            )


def _remove_emptied(source_root: Path, folders: list[Path]) -> list[Path]:
    """Remove emptied class folders, then the stamp and the source folder if nothing else is
    left; return the files that stay."""
    for folder in folders:
        for partial in folder.glob(f".{AUGMENTED_PREFIX}*{TEMPORARY_SUFFIX}"):
            partial.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
    # Links stay, as links: whatever they lead to is not this stage's to remove.
    remaining = [
        path
        for path in sorted(source_root.rglob("*"))
        if (path.is_symlink() or path.is_file()) and path.name != STAMP_NAME
    ]
    if not remaining:
        (source_root / STAMP_NAME).unlink(missing_ok=True)
        for folder in sorted(
            (p for p in source_root.rglob("*") if p.is_dir() and not p.is_symlink()),
            key=lambda p: -len(p.parts),
        ):
            if not any(folder.iterdir()):
                folder.rmdir()
        if source_root.is_symlink():
            source_root.unlink()
        else:
            source_root.rmdir()
    return remaining
