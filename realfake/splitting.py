"""Splitting the raw datasets into train/validation/test and merging the splits into one tree.

Every output file is a hard link to (or, across filesystems, a copy of) an input file, so raw data
is never changed and outputs are byte-identical to inputs. Splits are drawn per class from the
sorted file names with a seeded shuffle, so the same input and seed give the same split.
"""

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from realfake.cli import progress
from realfake.config import CLASS_NAMES, SPLITS
from realfake.errors import PipelineError
from realfake.fileops import (
    STAMP_NAME,
    atomic_write_text,
    destination_is_done,
    file_digest,
    link_or_copy,
    read_stamp,
    staged_directory,
)
from realfake.images import is_image_name
from realfake.layout import class_folders, visible_subfolders

SPLIT_STAGES = ("data_split_d1", "data_split_d2")
SPLIT_ALIASES = {
    "train": frozenset({"train", "training"}),
    "validation": frozenset({"validation", "val", "valid"}),
    "test": frozenset({"test", "testing"}),
}
MERGE_STAGING_NAME = ".merge.partial"
MERGE_JOURNAL_NAME = "commit.json"
MERGE_REPORT_NAME = "merge_report.json"
# Below this many files a process pool costs more than it saves.
_POOL_THRESHOLD = 2_000
_MAX_NAMES_SHOWN = 50


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


def decodes(path: str | Path) -> bool:
    """True when Pillow decodes the whole file; JPEGs at reduced scale, which still reads and
    checks all their compressed data but skips most of the inverse DCT."""
    try:
        with Image.open(path) as image:
            image.draft(image.mode, (1, 1))  # a no-op for formats other than JPEG
            image.load()
        return True
    except Exception:  # Pillow raises many types for broken files
        return False


def _decodable_flags(paths: Sequence[str]) -> list[bool]:
    return [decodes(path) for path in paths]


def find_undecodable(
    paths: Sequence[Path], workers: int | None = None, quiet: bool = False
) -> list[Path]:
    """Return the paths Pillow cannot fully decode, checking in parallel on large inputs."""
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(paths) < _POOL_THRESHOLD:
        flags = [
            decodes(path)
            for path in progress(paths, total=len(paths), description="check", quiet=quiet)
        ]
    else:
        chunk = max(64, min(2_000, len(paths) // (workers * 8) + 1))
        names = [os.fspath(path) for path in paths]  # strings pickle far faster than Paths
        chunks = [names[start : start + chunk] for start in range(0, len(names), chunk)]
        flags = []
        with ProcessPoolExecutor(max_workers=workers) as pool:
            bar = progress(
                pool.map(_decodable_flags, chunks),
                total=len(chunks),
                description=f"check ({chunk} files per step)",
                quiet=quiet,
            )
            for chunk_flags in bar:
                flags.extend(chunk_flags)
    return [path for path, ok in zip(paths, flags, strict=True) if not ok]


def _subset_folders(root: Path) -> dict[str, Path]:
    """Map 'train'/'validation'/'test' to the sub-folders of `root` named as one of them."""
    found: dict[str, Path] = {}
    for child in visible_subfolders(root):
        lowered = child.name.lower()
        for split, aliases in SPLIT_ALIASES.items():
            if lowered in aliases and split not in found:
                found[split] = child
    return found


def _describe_found(root: Path, source: Path | None = None) -> str:
    """What a folder holds, for error messages: its sub-folders, or its file count."""
    names = [f"{child.name}/" for child in visible_subfolders(root)]
    files = sum(1 for path in root.iterdir() if path.is_file() and not path.name.startswith("."))
    found = ", ".join(names) if names else f"no folders, {files:,} files"
    if source is not None and root != source:
        found += f" in {root.relative_to(source).as_posix()}/"
    return found


def _require_classes(folder: Path, source: Path) -> dict[str, Path]:
    classes = class_folders(folder)
    missing = [name for name in CLASS_NAMES if name not in classes]
    if missing:
        where = folder.relative_to(source).as_posix() if folder != source else "."
        raise PipelineError(
            f"{source}: {where} lacks the class folder(s) {', '.join(missing)} "
            f"(found {_describe_found(folder)}; expected e.g. REAL/FAKE or real_images/fake_images)"
        )
    return classes


def unwrap_dataset(folder: Path) -> Path:
    """Descend through single wrapping folders, stopping at a split or class folder's parent."""
    while True:
        children = visible_subfolders(folder)
        if len(children) != 1 or _subset_folders(folder) or class_folders(folder):
            return folder
        if any(path.is_file() and not path.name.startswith(".") for path in folder.iterdir()):
            return folder
        folder = children[0]


def _require_source(source: Path) -> Path:
    if not source.is_dir():
        raise PipelineError(f"source folder not found: {source}")
    return unwrap_dataset(source)


def cifake_layout(source: Path) -> dict[str, dict[str, Path]]:
    """Find CIFAKE's train/ and test/ class folders (also under one wrapping folder)."""
    root = _require_source(source)
    subsets = _subset_folders(root)
    missing = [name for name in ("train", "test") if name not in subsets]
    if missing:
        raise PipelineError(
            f"{source} does not look like CIFAKE: no {' or '.join(missing)} folder "
            f"(found {_describe_found(root, source)}; "
            "expected train/ and test/ with REAL and FAKE inside)"
        )
    return {name: _require_classes(subsets[name], source) for name in ("train", "test")}


def fake_or_real_layout(source: Path) -> tuple[dict[str, Path], list[str]]:
    """Find Fake-or-Real's labelled train/ class folders; also return notes on what is ignored."""
    root = _require_source(source)
    notes: list[str] = []
    if len(class_folders(root)) == len(CLASS_NAMES):
        return _require_classes(root, source), notes
    subsets = _subset_folders(root)
    if "train" not in subsets:
        raise PipelineError(
            f"{source} does not look like Fake-or-Real: no train folder "
            f"(found {_describe_found(root, source)}; "
            "expected train/real_images and train/fake_images)"
        )
    classes = _require_classes(subsets["train"], source)
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


# --- merging --------------------------------------------------------------------------------


def split_dataset_layout(source: Path) -> dict[str, dict[str, Path]]:
    """Find the train/validation/test class folders of a split dataset."""
    if not source.is_dir():
        raise PipelineError(f"split dataset not found: {source}")
    root = unwrap_dataset(source)
    subsets = _subset_folders(root)
    missing = [name for name in SPLITS if name not in subsets]
    if missing:
        raise PipelineError(
            f"{source} is not a split dataset: no {', '.join(missing)} folder "
            f"(found {_describe_found(root, source)}); "
            "run data_split_d1.py or data_split_d2.py first"
        )
    return {split: _require_classes(subsets[split], source) for split in SPLITS}


def merged_names(
    entries: Sequence[tuple[str, str, str, Path]],
) -> list[tuple[str, str, str, Path]]:
    """Give each (split, class, source name, path) a unique output name in its class folder.

    Every file is prefixed with its source's name; should two still collide, later ones (in
    sorted order) get a numeric suffix, so names never depend on anything but the inputs.
    """
    used: dict[tuple[str, str], set[str]] = defaultdict(set)
    named: list[tuple[str, str, str, Path]] = []
    for split, class_name, source_name, path in sorted(
        entries, key=lambda entry: (entry[0], entry[1], entry[2], entry[3].name)
    ):
        taken = used[split, class_name]
        name = f"{source_name}_{path.name}"
        counter = 1
        while name.lower() in taken:
            counter += 1
            name = f"{source_name}_{path.stem}~{counter}{path.suffix}"
        taken.add(name.lower())
        named.append((split, class_name, name, path))
    return named


def _roll_forward(destination: Path) -> None:
    """Finish moving a fully built merge into place, if an interrupted run left one."""
    staging = destination / MERGE_STAGING_NAME
    journal = staging / MERGE_JOURNAL_NAME
    if not journal.is_file():
        return
    for split in SPLITS:
        staged, final = staging / split, destination / split
        if not staged.exists():
            continue  # moved already
        if final.exists():
            if final.is_dir() and not any(final.iterdir()):
                final.rmdir()
            elif read_stamp(final) == read_stamp(staged):
                shutil.rmtree(staged)  # the same, deterministic output is already in place
                continue
            else:
                raise PipelineError(
                    f"{final} changed while a merge was being completed; remove it and "
                    f"{staging}, then run the merge again"
                )
        os.rename(staged, final)
    report = staging / MERGE_REPORT_NAME
    if report.exists():
        os.replace(report, destination / MERGE_REPORT_NAME)
    journal.unlink()
    shutil.rmtree(staging)


def merge_splits(
    sources: Sequence[Path], destination: Path, workers: int | None = None, quiet: bool = False
) -> SplitResult:
    """Merge split datasets into destination/{train,validation,test}/{Fake,Real}.

    The three split folders are built together in a hidden staging folder, a journal marks the
    build complete, and only then are they renamed into place; a run that finds a journal first
    finishes those renames, so a merge killed at any moment ends as an uninterrupted one.
    """
    _roll_forward(destination)
    names = [source.name for source in sources]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise PipelineError(f"two sources share the name {duplicates[0]}; rename one of them")
    entries: list[tuple[str, str, str, Path]] = []
    fingerprints = []
    skipped = 0
    to_check: list[Path] = []
    for source in sorted(sources, key=lambda path: path.name):
        layout = split_dataset_layout(source)
        source_images = []
        for split in SPLITS:
            for class_name in CLASS_NAMES:
                listing = scan_class_folder(layout[split][class_name])
                skipped += len(listing.skipped)
                source_images.extend(listing.images)
                entries.extend((split, class_name, source.name, path) for path in listing.images)
        fingerprints.append(
            {"name": source.name, "files": listing_fingerprint(source, source_images)}
        )
        # Splits made by this project already left out undecodable files.
        if (read_stamp(source) or {}).get("stage") not in SPLIT_STAGES:
            to_check.extend(source_images)
    stamp = {"stage": "data_merger", "sources": fingerprints}
    done = [destination_is_done(destination / split, stamp) for split in SPLITS]
    if all(done):
        result = SplitResult(counts=count_tree(destination), skipped=skipped, already_done=True)
        try:
            report = json.loads((destination / MERGE_REPORT_NAME).read_text(encoding="utf-8"))
            leaks = report["identical_files_in_different_splits"]
            result.cross_split_groups = len(leaks)
            result.cross_split_files = sum(len(files) for files in leaks)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # the report is informational; a missing one does not undo the merge
        return result

    bad = set(find_undecodable(to_check, workers=workers, quiet=quiet))
    named = merged_names([entry for entry in entries if entry[3] not in bad])
    staging = destination / MERGE_STAGING_NAME
    if staging.exists():
        shutil.rmtree(staging)  # an interrupted build: start again
    for split in SPLITS:
        for class_name in CLASS_NAMES:
            (staging / split / class_name).mkdir(parents=True)
    digests: dict[str, list[str]] = defaultdict(list)
    staging_root = os.fspath(staging)
    try:
        for split, class_name, name, path in progress(
            named, total=len(named), description="merge", quiet=quiet
        ):
            target = os.path.join(staging_root, split, class_name, name)
            link_or_copy(path, target)
            digests[file_digest(target)].append(f"{split}/{class_name}/{name}")
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    leaks = [
        sorted(files)
        for files in digests.values()
        if len({file.split("/", 1)[0] for file in files}) > 1
    ]
    leaks.sort()
    counts = defaultdict(lambda: dict.fromkeys(CLASS_NAMES, 0))
    for split, class_name, _, _ in named:
        counts[split][class_name] += 1
    counts = {split: dict(counts[split]) for split in SPLITS}
    report = {
        "sources": fingerprints,
        "counts": counts,
        "undecodable_files_left_out": [str(path) for path in sorted(bad)],
        "identical_files_in_different_splits": leaks,
    }
    atomic_write_text(staging / MERGE_REPORT_NAME, json.dumps(report, indent=2) + "\n")
    stamp_text = json.dumps(stamp, indent=2, sort_keys=True) + "\n"
    for split in SPLITS:
        atomic_write_text(staging / split / STAMP_NAME, stamp_text)
    atomic_write_text(staging / MERGE_JOURNAL_NAME, stamp_text)
    _roll_forward(destination)
    return SplitResult(
        counts=counts,
        skipped=skipped,
        undecodable=sorted(bad),
        cross_split_groups=len(leaks),
        cross_split_files=sum(len(files) for files in leaks),
    )


def add_workers_argument(parser: argparse.ArgumentParser) -> None:
    """Add --workers, the number of processes that check images decode."""
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes that check every image decodes (default: one per CPU)",
    )


def print_split_summary(result: SplitResult, source: object, destination: Path) -> None:
    """Print notes and undecodable files on stderr, then the one summary line on stdout."""
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    if result.undecodable:
        print(
            f"warning: left out {len(result.undecodable):,} files that are not decodable images: "
            + ", ".join(str(path) for path in result.undecodable[:_MAX_NAMES_SHOWN])
            + (
                f" and {len(result.undecodable) - _MAX_NAMES_SHOWN:,} more"
                if len(result.undecodable) > _MAX_NAMES_SHOWN
                else ""
            ),
            file=sys.stderr,
        )
    parts = ", ".join(
        f"{split} {sum(result.counts[split].values()):,} "
        f"({', '.join(f'{name} {count:,}' for name, count in result.counts[split].items())})"
        for split in SPLITS
    )
    verb = "already done" if result.already_done else "wrote"
    print(
        f"{verb}: {result.total:,} images from {source} in {destination}: {parts}; "
        f"skipped {result.skipped:,} non-image files, left out {len(result.undecodable):,} "
        "undecodable"
    )
