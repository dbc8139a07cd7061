"""Splitting the raw datasets into train/validation/test.

Every output file is a hard link to (or, across filesystems, a copy of) an input file, so raw data
is never changed and outputs are byte-identical to inputs. Splits are drawn per class from the
sorted file names with a seeded shuffle, so the same input and seed give the same split.
"""

import hashlib
import math
import os
import random
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from realfake.core.config import CLASS_NAMES, SPLITS
from realfake.core.errors import PipelineError
from realfake.core.fileops import destination_is_done, link_or_copy, staged_directory
from realfake.core.images import is_decodable, is_image_name
from realfake.core.layout import class_folders, subset_folders, unwrap_dataset, visible_subfolders
from realfake.core.progress import progress
from realfake.core.workers import prepare_worker

# The stamps of this module's stages, whose outputs hold decodable images only.
SPLIT_STAGES = ("data_split_d1", "data_split_d2")
# Below this many files a process pool costs more than it saves.
_POOL_THRESHOLD = 2_000


@dataclass
class ClassListing:
    """The image files of one class folder, and how many other entries were skipped."""

    images: list[Path]
    skipped: list[Path] = field(default_factory=list)


@dataclass
class SplitResult:
    """What a split or merge wrote: files per split and class, and what it left out."""

    counts: dict[str, dict[str, int]]
    skipped: int = 0
    undecodable: list[Path] = field(default_factory=list)
    already_done: bool = False
    cross_split_groups: int = 0
    cross_split_files: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(sum(per_class.values()) for per_class in self.counts.values())


def scan_class_folder(folder: Path) -> ClassListing:
    """List the images directly inside a class folder; everything else there is skipped."""
    images: list[Path] = []
    skipped: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            path = Path(entry.path)
            if entry.is_file() and is_image_name(path):
                images.append(path)
            else:
                skipped.append(path)
    images.sort(key=lambda path: path.name)
    skipped.sort()
    return ClassListing(images=images, skipped=skipped)


def listing_fingerprint(root: Path, paths: Iterable[Path]) -> str:
    """A SHA-256 over the relative names and sizes of `paths`, identifying an input listing."""
    # Plain strings: on 100k files pathlib's per-call overhead would dominate this function.
    prefix = os.fspath(root) + os.sep
    relative = []
    for path in paths:
        text = os.fspath(path)
        name = text[len(prefix) :] if text.startswith(prefix) else str(path.relative_to(root))
        relative.append((name.replace(os.sep, "/"), text))
    digest = hashlib.sha256()
    for name, text in sorted(relative):
        digest.update(f"{name}\t{os.stat(text).st_size}\n".encode())
    return digest.hexdigest()


def _decodable_flags(paths: Sequence[str]) -> list[bool]:
    return [is_decodable(path) for path in paths]


def find_undecodable(
    paths: Sequence[Path], workers: int | None = None, quiet: bool = False
) -> list[Path]:
    """Return the paths Pillow cannot fully decode, checking in parallel on large inputs."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < _POOL_THRESHOLD:
        flags = [
            is_decodable(path)
            for path in progress(paths, total=len(paths), description="check", quiet=quiet)
        ]
    else:
        chunk = max(64, min(2_000, len(paths) // (workers * 8) + 1))
        names = [os.fspath(path) for path in paths]  # strings pickle far faster than Paths
        chunks = [names[start : start + chunk] for start in range(0, len(names), chunk)]
        flags = []
        pool = ProcessPoolExecutor(
            max_workers=workers, initializer=prepare_worker, initargs=(os.getpid(),)
        )
        try:
            bar = progress(
                pool.map(_decodable_flags, chunks),
                total=len(chunks),
                description=f"check ({chunk} files per step)",
                unit="step",
                quiet=quiet,
            )
            for chunk_flags in bar:
                flags.extend(chunk_flags)
        finally:
            # After Ctrl-C or an error, wait only for the steps already under way, not for all.
            pool.shutdown(wait=True, cancel_futures=True)
    return [path for path, ok in zip(paths, flags, strict=True) if not ok]


def describe_found(root: Path, source: Path | None = None) -> str:
    """What a folder holds, for error messages: its sub-folders, or its file count."""
    names = [f"{child.name}/" for child in visible_subfolders(root)]
    files = sum(1 for path in root.iterdir() if path.is_file() and not path.name.startswith("."))
    found = ", ".join(names) if names else f"no folders, {files:,} files"
    if source is not None and root != source:
        found += f" in {root.relative_to(source).as_posix()}/"
    return found


def require_classes(folder: Path, source: Path) -> dict[str, Path]:
    classes = class_folders(folder)
    missing = [name for name in CLASS_NAMES if name not in classes]
    if missing:
        where = folder.relative_to(source).as_posix() if folder != source else "."
        raise PipelineError(
            f"{source}: {where} lacks the class folder(s) {', '.join(missing)} "
            f"(found {describe_found(folder)}; expected e.g. REAL/FAKE or real_images/fake_images)"
        )
    return classes


def _require_source(source: Path) -> Path:
    if not source.is_dir():
        raise PipelineError(f"source folder not found: {source}")
    return unwrap_dataset(source)


def cifake_layout(source: Path) -> dict[str, dict[str, Path]]:
    """Find CIFAKE's train/ and test/ class folders (also under one wrapping folder)."""
    root = _require_source(source)
    subsets = subset_folders(root)
    missing = [name for name in ("train", "test") if name not in subsets]
    if missing:
        raise PipelineError(
            f"{source} does not look like CIFAKE: no {' or '.join(missing)} folder "
            f"(found {describe_found(root, source)}; "
            "expected train/ and test/ with REAL and FAKE inside)"
        )
    return {name: require_classes(subsets[name], source) for name in ("train", "test")}


def fake_or_real_layout(source: Path) -> tuple[dict[str, Path], list[str]]:
    """Find Fake-or-Real's labelled train/ class folders; also return notes on what is ignored."""
    root = _require_source(source)
    notes: list[str] = []
    if len(class_folders(root)) == len(CLASS_NAMES):
        return require_classes(root, source), notes
    subsets = subset_folders(root)
    if "train" not in subsets:
        raise PipelineError(
            f"{source} does not look like Fake-or-Real: no train folder "
            f"(found {describe_found(root, source)}; "
            "expected train/real_images and train/fake_images)"
        )
    classes = require_classes(subsets["train"], source)
    if "test" in subsets:
        unlabelled = sum(1 for path in subsets["test"].rglob("*") if path.is_file())
        notes.append(
            f"ignored the unlabelled {subsets['test'].name}/ folder ({unlabelled:,} files): "
            "it has no classes to learn from"
        )
    return classes, notes


def split_counts(total: int, fractions: Sequence[float]) -> list[int]:
    """Sizes for each fraction of `total`; the first part takes what rounding leaves."""
    later = [math.floor(total * fraction + 0.5) for fraction in fractions[1:]]
    return [total - sum(later), *later]


def shuffled(paths: Sequence[Path], seed: int, class_name: str) -> list[Path]:
    """The paths in a seeded order that depends only on their names, the seed and the class."""
    ordered = sorted(paths, key=lambda path: path.name)
    random.Random(f"{seed}:{class_name}").shuffle(ordered)
    return ordered


def stratified_split(
    images: dict[str, list[Path]], names: Sequence[str], fractions: Sequence[float], seed: int
) -> dict[str, dict[str, list[Path]]]:
    """Split each class's images into the named parts by fraction, with a seeded shuffle."""
    parts: dict[str, dict[str, list[Path]]] = {name: {} for name in names}
    for class_name in CLASS_NAMES:
        order = shuffled(images[class_name], seed, class_name)
        start = 0
        for name, count in zip(names, split_counts(len(order), fractions), strict=True):
            parts[name][class_name] = sorted(order[start : start + count], key=lambda p: p.name)
            start += count
    return parts


def write_split_tree(
    destination: Path,
    stamp: dict,
    parts: dict[str, dict[str, list[Path]]],
    quiet: bool = False,
) -> None:
    """Link each part's files into destination/<split>/<class>/, appearing only when complete."""
    jobs = [
        (split, class_name, path)
        for split in SPLITS
        for class_name in CLASS_NAMES
        for path in parts.get(split, {}).get(class_name, [])
    ]
    with staged_directory(destination, stamp) as staging:
        root = os.fspath(staging)
        for split in SPLITS:
            for class_name in CLASS_NAMES:
                (staging / split / class_name).mkdir(parents=True)
        for split, class_name, path in progress(
            jobs, total=len(jobs), description="link", quiet=quiet
        ):
            link_or_copy(path, os.path.join(root, split, class_name, path.name))


def _counts(parts: dict[str, dict[str, list[Path]]]) -> dict[str, dict[str, int]]:
    return {
        split: {class_name: len(parts[split][class_name]) for class_name in CLASS_NAMES}
        for split in SPLITS
    }


def _drop(images: list[Path], bad: set[Path]) -> list[Path]:
    return [path for path in images if path not in bad] if bad else images


def _prepare(destination: Path, source: Path) -> None:
    if (
        destination.resolve() == source.resolve()
        or source.resolve() in destination.resolve().parents
    ):
        raise PipelineError(f"destination {destination} must not be inside the source {source}")


def split_cifake(
    source: Path,
    destination: Path,
    validation_fraction: float,
    seed: int,
    workers: int | None = None,
    quiet: bool = False,
) -> SplitResult:
    """Split CIFAKE's train/ into train and validation (stratified); keep its test/ as test."""
    _prepare(destination, source)
    layout = cifake_layout(source)
    listings = {
        (subset, class_name): scan_class_folder(folder)
        for subset, classes in layout.items()
        for class_name, folder in classes.items()
    }
    all_images = [path for listing in listings.values() for path in listing.images]
    stamp = {
        "stage": "data_split_d2",
        "seed": seed,
        "validation_fraction": validation_fraction,
        "source": listing_fingerprint(source, all_images),
    }
    skipped = sum(len(listing.skipped) for listing in listings.values())
    if destination_is_done(destination, stamp):
        return SplitResult(counts=count_tree(destination), skipped=skipped, already_done=True)
    bad = set(find_undecodable(all_images, workers=workers, quiet=quiet))
    train = {name: _drop(listings["train", name].images, bad) for name in CLASS_NAMES}
    parts = stratified_split(
        train, ("train", "validation"), (1 - validation_fraction, validation_fraction), seed
    )
    parts["test"] = {name: _drop(listings["test", name].images, bad) for name in CLASS_NAMES}
    write_split_tree(destination, stamp, parts, quiet=quiet)
    return SplitResult(counts=_counts(parts), skipped=skipped, undecodable=sorted(bad), notes=[])


def split_fake_or_real(
    source: Path,
    destination: Path,
    fractions: Sequence[float],
    seed: int,
    workers: int | None = None,
    quiet: bool = False,
) -> SplitResult:
    """Split Fake-or-Real's labelled train/ images into train, validation and test (stratified)."""
    _prepare(destination, source)
    classes, notes = fake_or_real_layout(source)
    listings = {class_name: scan_class_folder(folder) for class_name, folder in classes.items()}
    all_images = [path for listing in listings.values() for path in listing.images]
    stamp = {
        "stage": "data_split_d1",
        "seed": seed,
        "fractions": list(fractions),
        "source": listing_fingerprint(source, all_images),
    }
    skipped = sum(len(listing.skipped) for listing in listings.values())
    if destination_is_done(destination, stamp):
        return SplitResult(
            counts=count_tree(destination), skipped=skipped, already_done=True, notes=notes
        )
    bad = set(find_undecodable(all_images, workers=workers, quiet=quiet))
    images = {name: _drop(listings[name].images, bad) for name in CLASS_NAMES}
    parts = stratified_split(images, SPLITS, fractions, seed)
    write_split_tree(destination, stamp, parts, quiet=quiet)
    return SplitResult(counts=_counts(parts), skipped=skipped, undecodable=sorted(bad), notes=notes)


def count_tree(root: Path) -> dict[str, dict[str, int]]:
    """Images per split and class in a split tree (root/<split>/<class>/)."""
    return {
        split: {
            class_name: len(scan_class_folder(root / split / class_name).images)
            if (root / split / class_name).is_dir()
            else 0
            for class_name in CLASS_NAMES
        }
        for split in SPLITS
    }
