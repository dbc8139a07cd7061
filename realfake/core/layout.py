"""The dataset layout: class and split folders recognised by alias, also under wrapping folders."""

from pathlib import Path

from realfake.core.config import CLASS_ALIASES
from realfake.core.errors import PipelineError

# Folder names recognised as each split, compared case-insensitively.
SPLIT_ALIASES = {
    "train": frozenset({"train", "training"}),
    "validation": frozenset({"validation", "val", "valid"}),
    "test": frozenset({"test", "testing"}),
}


def canonical_class(folder_name: str) -> str | None:
    """Return 'Fake' or 'Real' for a class folder name or alias, None for anything else."""
    lowered = folder_name.strip().lower()
    for class_name, aliases in CLASS_ALIASES.items():
        if lowered in aliases:
            return class_name
    return None


def visible_subfolders(folder: Path) -> list[Path]:
    """Sub-folders of `folder`, sorted, without hidden ones (.DS_Store, staging folders)."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))


def class_folders(folder: Path) -> dict[str, Path]:
    """Map 'Fake'/'Real' to the sub-folders of `folder` that hold them (missing classes absent);
    PipelineError naming both when two folders are one class (`FAKE/` and `fake/`)."""
    found: dict[str, Path] = {}
    for child in visible_subfolders(folder):
        class_name = canonical_class(child.name)
        if class_name is not None:
            _add_once(found, class_name, child, "class")
    return found


def subset_folders(root: Path) -> dict[str, Path]:
    """Map 'train'/'validation'/'test' to the sub-folders of `root` named as one of them;
    PipelineError naming both when two folders are one split (`train/` and `Training/`)."""
    found: dict[str, Path] = {}
    for child in visible_subfolders(root):
        lowered = child.name.lower()
        for split, aliases in SPLIT_ALIASES.items():
            if lowered in aliases:
                _add_once(found, split, child, "split")
    return found


def _add_once(found: dict[str, Path], name: str, folder: Path, kind: str) -> None:
    """Record `folder` as the one folder of `name`: keeping the first of two would leave the
    other's files out without a word."""
    if name in found:
        raise PipelineError(
            f"{found[name]} and {folder} are both the {name} {kind} (folder names are matched "
            "by alias, in any case): move the files of one into the other, or rename one"
        )
    found[name] = folder


def unwrap_dataset(folder: Path) -> Path:
    """Descend through single wrapping folders, as archives often put everything in one,
    stopping at the parent of split or class folders."""
    while True:
        children = visible_subfolders(folder)
        if len(children) != 1 or subset_folders(folder) or class_folders(folder):
            return folder
        if any(path.is_file() and not path.name.startswith(".") for path in folder.iterdir()):
            return folder
        folder = children[0]
