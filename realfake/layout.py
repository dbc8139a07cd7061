"""The folder layout: recognising class folders by alias, also under one wrapping top folder."""

from pathlib import Path

from realfake.config import CLASS_ALIASES


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


def unwrap(folder: Path) -> Path:
    """Descend through single wrapping folders, as archives often put everything in one."""
    while True:
        children = visible_subfolders(folder)
        files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
        if len(children) != 1 or files:
            return folder
        folder = children[0]


def class_folders(folder: Path) -> dict[str, Path]:
    """Map 'Fake'/'Real' to the sub-folders of `folder` that hold them (missing classes absent)."""
    found: dict[str, Path] = {}
    for child in visible_subfolders(folder):
        class_name = canonical_class(child.name)
        if class_name is not None and class_name not in found:
            found[class_name] = child
    return found
