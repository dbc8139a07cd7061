"""Merging split datasets into one train/validation/test tree, journaled so that a merge killed
at any moment ends, when run again, as an uninterrupted one."""

import json
import os
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from realfake.core.config import CLASS_NAMES, KNOWN_SOURCES, SPLITS
from realfake.core.errors import PipelineError
from realfake.core.fileops import (
    STAMP_NAME,
    atomic_write_text,
    destination_is_done,
    file_digest,
    link_or_copy,
    read_stamp,
)
from realfake.core.layout import subset_folders, unwrap_dataset
from realfake.core.progress import progress
from realfake.data.splitting import (
    SPLIT_STAGES,
    SplitResult,
    count_tree,
    describe_found,
    find_undecodable,
    listing_fingerprint,
    require_classes,
    scan_class_folder,
)

MERGE_STAGING_NAME = ".merge.partial"
MERGE_JOURNAL_NAME = "commit.json"
MERGE_REPORT_NAME = "merge_report.json"


def trained_on(data: Path, image_size: int) -> dict:
    """What a model trained on the merged tree `data` learned from, for its card: the sources
    named in the merge report, described where KNOWN_SOURCES knows them, and the input size."""
    described: dict[str, list[str]] = {"dataset": [], "generator": [], "real_source": []}
    report_path = Path(data) / MERGE_REPORT_NAME
    try:
        sources = [source["name"] for source in json.loads(report_path.read_text())["sources"]]
    except (OSError, ValueError, KeyError, TypeError):
        sources = []
    for name in sources:
        known = KNOWN_SOURCES.get(name, {"dataset": name})
        for key, values in described.items():
            if known.get(key) and known[key] not in values:
                values.append(known[key])
    found = {key: " + ".join(values) for key, values in described.items() if values}
    if not sources:
        found["dataset"] = f"the images under {data} (no {MERGE_REPORT_NAME}: sources unknown)"
    return {**found, "input_size": f"{image_size} x {image_size} pixels"}


def split_dataset_layout(source: Path) -> dict[str, dict[str, Path]]:
    """Find the train/validation/test class folders of a split dataset."""
    if not source.is_dir():
        raise PipelineError(f"split dataset not found: {source}")
    root = unwrap_dataset(source)
    subsets = subset_folders(root)
    missing = [name for name in SPLITS if name not in subsets]
    if missing:
        raise PipelineError(
            f"{source} is not a split dataset: no {', '.join(missing)} folder "
            f"(found {describe_found(root, source)}); "
            "run data_split_d1.py or data_split_d2.py first"
        )
    return {split: require_classes(subsets[split], source) for split in SPLITS}


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


def _scan_sources(
    sources: Sequence[Path],
) -> tuple[list[tuple[str, str, str, Path]], list[dict], int, list[Path]]:
    """Every image of every source as (split, class, source name, path), each source's
    fingerprint, the count of files skipped, and the images still to check for decoding."""
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
    return entries, fingerprints, skipped, to_check


def _already_merged(destination: Path, skipped: int) -> SplitResult:
    """The result of a merge already done from the same sources, its leaks read from its report."""
    result = SplitResult(counts=count_tree(destination), skipped=skipped, already_done=True)
    try:
        report = json.loads((destination / MERGE_REPORT_NAME).read_text(encoding="utf-8"))
        leaks = report["identical_files_in_different_splits"]
        result.cross_split_groups = len(leaks)
        result.cross_split_files = sum(len(files) for files in leaks)
    except (OSError, ValueError, KeyError, TypeError):
        pass  # the report is informational; a missing one does not undo the merge
    return result


def _stage_files(
    named: list[tuple[str, str, str, Path]], staging: Path, quiet: bool
) -> list[list[str]]:
    """Link or copy every named file into a fresh staging folder; returns the sets of identical
    files found in more than one split, each sorted, as split/class/name."""
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
    return leaks


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
    entries, fingerprints, skipped, to_check = _scan_sources(sources)
    stamp = {"stage": "data_merger", "sources": fingerprints}
    done = [destination_is_done(destination / split, stamp) for split in SPLITS]
    if all(done):
        return _already_merged(destination, skipped)

    bad = set(find_undecodable(to_check, workers=workers, quiet=quiet))
    named = merged_names([entry for entry in entries if entry[3] not in bad])
    staging = destination / MERGE_STAGING_NAME
    leaks = _stage_files(named, staging, quiet)
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
