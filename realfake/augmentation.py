"""Offline image augmentation and moving its output into the training folder.

The transformations are those of Keras's legacy `ImageDataGenerator` (rotation, shifts, shear,
zoom, horizontal flip, nearest fill), combined into one affine matrix per image and applied by
Pillow. Each output's random parameters come from (seed, source path, copy index) alone, so the
result is the same whatever the number of workers and whichever outputs a killed run left behind.
"""

import hashlib
import json
import math
import multiprocessing
import os
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from realfake.cli import progress
from realfake.config import SEED
from realfake.errors import PipelineError
from realfake.fileops import (
    STAMP_NAME,
    atomic_write_bytes,
    files_equal,
    move_without_overwrite,
    read_stamp,
)
from realfake.images import list_images, load_rgb
from realfake.layout import canonical_class, class_folders

AUGMENTED_PREFIX = "aug_"
OUTPUT_SUFFIX = ".jpg"
JPEG_QUALITY = 95
TEMPORARY_SUFFIX = ".tmp"


@dataclass(frozen=True)
class AugmentationSettings:
    """The random transformation's ranges, with Keras's meaning for each.

    Args:
        rotation_range: degrees, uniform in [-r, r].
        width_shift_range: fraction of the width, uniform in [-s, s].
        height_shift_range: fraction of the height, uniform in [-s, s].
        shear_range: shear angle in degrees, uniform in [-s, s] (Keras's unit).
        zoom_range: each axis scaled independently by a factor uniform in [1 - z, 1 + z].
        horizontal_flip: mirror half of the outputs.
        image_size: square output size; None keeps each source's own size.
    """

    rotation_range: float = 20.0
    width_shift_range: float = 0.2
    height_shift_range: float = 0.2
    shear_range: float = 0.2
    zoom_range: float = 0.2
    horizontal_flip: bool = True
    image_size: int | None = None


DRAWS_PER_OUTPUT = 7


def output_draws(seed: int, relative_source: str, copy_index: int) -> np.ndarray:
    """Seven uniform numbers in [0, 1) for one output, from (seed, source path, copy index) alone.

    A keyed hash rather than a seeded generator: as independent, and about a hundred times
    cheaper than building a numpy Generator per output.
    """
    digest = hashlib.blake2b(
        f"{seed}\0{relative_source}\0{copy_index}".encode(), digest_size=8 * DRAWS_PER_OUTPUT
    ).digest()
    return (np.frombuffer(digest, dtype="<u8") >> np.uint64(11)) * (1.0 / (1 << 53))


def affine_matrices(
    draws: np.ndarray, width: int, height: int, settings: AugmentationSettings
) -> np.ndarray:
    """3x3 matrices, one per row of `draws`, mapping output (x, y) to input coordinates.

    Composed as Keras composes them (rotation, shift, shear, zoom about the centre, then the
    flip), in continuous coordinates where pixel (i, j) covers [i, i + 1) x [j, j + 1).
    """
    draws = np.atleast_2d(draws)
    count = len(draws)
    signed = draws[:, :6] * 2.0 - 1.0
    theta = np.deg2rad(signed[:, 0] * settings.rotation_range)
    shift_x = signed[:, 1] * settings.width_shift_range * width
    shift_y = signed[:, 2] * settings.height_shift_range * height
    shear = np.deg2rad(signed[:, 3] * settings.shear_range)
    zoom_x = 1.0 + signed[:, 4] * settings.zoom_range
    zoom_y = 1.0 + signed[:, 5] * settings.zoom_range
    flip = (draws[:, 6] < 0.5) & settings.horizontal_flip

    def stack(*rows) -> np.ndarray:
        matrices = np.zeros((count, 3, 3))
        matrices[:, 2, 2] = 1.0
        for (row, column), value in rows:
            matrices[:, row, column] = value
        return matrices

    # Keras's order and signs, on (x, y) = (column, row) coordinates; on square images the output
    # equals Keras's to within one grey level. On other shapes Keras shifts by the height along x
    # and turns about a misplaced centre; here each shift runs along its own axis, about the centre.
    cos, sin = np.cos(theta), np.sin(theta)
    rotation = stack(((0, 0), cos), ((0, 1), -sin), ((1, 0), sin), ((1, 1), cos))
    shift = stack(((0, 0), 1), ((1, 1), 1), ((0, 2), shift_x), ((1, 2), shift_y))
    shearing = stack(((0, 0), 1), ((0, 1), -np.sin(shear)), ((1, 1), np.cos(shear)))
    zoom = stack(((0, 0), zoom_x), ((1, 1), zoom_y))
    centre = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    uncentre = np.array([[1, 0, -width / 2], [0, 1, -height / 2], [0, 0, 1]])
    mirror = stack(
        ((0, 0), np.where(flip, -1.0, 1.0)), ((1, 1), 1), ((0, 2), np.where(flip, width, 0))
    )
    return centre @ rotation @ shift @ shearing @ zoom @ uncentre @ mirror


def transformed_images(
    images: np.ndarray, matrices: np.ndarray, image_index: np.ndarray
) -> Iterator[Image.Image]:
    """Resample images bilinearly through matrices; points outside take the nearest edge pixel.

    Pillow fills points outside an image with a constant, so the images are first padded once,
    by replicating their edges just far enough to hold every point any of the matrices reaches.

    Args:
        images: uint8 array (images, height, width, 3).
        matrices: (outputs, 3, 3) from `affine_matrices`.
        image_index: for each output, the index of its image in `images`.

    Yields:
        One RGB Pillow image per output, the size of the inputs.
    """
    height, width = images.shape[1:3]
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], dtype=float)
    reached = matrices[:, :2] @ corners.T  # (outputs, 2, corners)
    overflow = max(
        0.0,
        -reached[:, 0].min(initial=0.0),
        -reached[:, 1].min(initial=0.0),
        reached[:, 0].max(initial=0.0) - width,
        reached[:, 1].max(initial=0.0) - height,
    )
    padding = math.ceil(overflow) + 2
    used, position = np.unique(image_index, return_inverse=True)
    padded = np.pad(
        images[used], ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode="edge"
    )
    shifted = np.array([[1, 0, padding], [0, 1, padding], [0, 0, 1]]) @ matrices
    sources: dict[int, Image.Image] = {}
    for matrix, index in zip(shifted, position.tolist(), strict=True):
        if index not in sources:
            sources[index] = Image.fromarray(padded[index])
        yield sources[index].transform(
            (width, height),
            Image.Transform.AFFINE,
            data=tuple(matrix[:2].ravel()),
            resample=Image.Resampling.BILINEAR,
        )


def augment_pixels(
    pixels: np.ndarray, draws: np.ndarray, settings: AugmentationSettings
) -> np.ndarray:
    """Augmented versions of one RGB array, one per row of `draws`, at the array's own size."""
    draws = np.atleast_2d(draws)
    height, width = pixels.shape[:2]
    matrices = affine_matrices(draws, width, height, settings)
    outputs = transformed_images(pixels[None], matrices, np.zeros(len(draws), dtype=np.int64))
    return np.stack([np.asarray(image) for image in outputs])


# Start-of-frame markers of the JPEGs that Pillow decodes as plain RGB: baseline, extended and
# progressive Huffman coding.
_PLAIN_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2})


def _decode_plain_jpeg(data: bytes) -> np.ndarray | None:
    """Decode a plain three-component JPEG with Pillow's own JPEG decoder, skipping the Python
    header parsing that costs more than the decoding itself on small images.

    The pixels are those `load_rgb` gives (the tests check it); None for anything that needs its
    full path: another format, EXIF (orientation), an Adobe colour transform, grey or CMYK.
    """
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xE1, 0xEE, 0xDA):  # EXIF, Adobe, or image data before a frame header
            return None
        if marker in _PLAIN_JPEG_FRAMES:
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            if data[position + 9] != 3 or not width or not height:
                return None
            try:
                return np.asarray(Image.frombytes("RGB", (width, height), data, "jpeg", "RGB", ""))
            except (OSError, ValueError):
                return None
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def decode_source(path: Path | str, image_size: int | None) -> np.ndarray:
    """A source image as uint8 RGB, exactly as `load_rgb` decodes it, faster for plain JPEGs."""
    with open(path, "rb") as handle:
        data = handle.read()
    if image_size is None:
        pixels = _decode_plain_jpeg(data)
        if pixels is not None:
            return pixels
    return load_rgb(data, image_size)


@dataclass(frozen=True)
class PlannedSource:
    """One source image and the augmented copies to make of it."""

    source: Path
    relative: str  # the source's path relative to the source folder, seeding its copies
    class_name: str
    outputs: tuple[tuple[int, Path], ...]  # (copy index, output path)


def is_augmented_name(name: str) -> bool:
    """True for a file this stage wrote."""
    return name.startswith(AUGMENTED_PREFIX)


def _output_keys(sources: list[Path]) -> dict[Path, str]:
    """The part of each output name that identifies its source: the stem, plus the extension
    where two sources share a stem (img.jpg and img.png)."""
    stems = Counter(path.stem for path in sources)
    return {
        path: path.stem if stems[path.stem] == 1 else f"{path.stem}_{path.suffix.lstrip('.')}"
        for path in sources
    }


def plan_augmentation(
    source_root: Path,
    dest_root: Path,
    *,
    copies: int | None = None,
    target_per_class: int | None = None,
    seed: int = SEED,
) -> list[PlannedSource]:
    """Decide every output's name and source from the source folder alone.

    With `copies`, each source image gets that many copies; with `target_per_class`, each class
    is topped up to that many images, the copies spread over the sources as evenly as possible
    (the ones that get one more are chosen by a seeded shuffle). Files already named `aug_...`
    count towards a class's total but are not used as sources. Copy indices that would give a
    name already present in the source class folder are skipped, so outputs never collide with
    existing images, also after earlier rounds were moved in.
    """
    if (copies is None) == (target_per_class is None):
        raise ValueError("give exactly one of copies and target_per_class")
    if not source_root.is_dir():
        raise PipelineError(f"source folder {source_root} does not exist")
    folders = class_folders(source_root)
    if not folders:
        raise PipelineError(
            f"no class folders (Fake, Real or an alias) in {source_root}; expected e.g. "
            f"{source_root}/Fake and {source_root}/Real"
        )
    plan: list[PlannedSource] = []
    for class_name, folder in sorted(folders.items()):
        images = list_images(folder)
        sources = [path for path in images if not is_augmented_name(path.name)]
        if copies is not None:
            counts = dict.fromkeys(sources, copies)
        else:
            needed = max(0, target_per_class - len(images))
            if needed and not sources:
                raise PipelineError(f"{folder} has no original images to augment")
            order = np.random.default_rng([seed, zlib.crc32(class_name.encode())]).permutation(
                len(sources)
            )
            base, extra = divmod(needed, len(sources)) if sources else (0, 0)
            counts = {
                sources[index]: base + (1 if rank < extra else 0)
                for rank, index in enumerate(order)
            }
        taken = {path.name for path in folder.iterdir()}
        keys = _output_keys(sources)
        planned_names: set[str] = set()
        for source in sources:
            outputs = []
            copy_index = 0
            while len(outputs) < counts[source]:
                name = f"{AUGMENTED_PREFIX}{keys[source]}_{copy_index}{OUTPUT_SUFFIX}"
                if name not in taken:
                    if name in planned_names:
                        raise PipelineError(
                            f"two sources in {folder} would both make {name}; rename one of them"
                        )
                    planned_names.add(name)
                    outputs.append((copy_index, dest_root / folder.name / name))
                copy_index += 1
            if outputs:
                relative = source.relative_to(source_root).as_posix()
                plan.append(PlannedSource(source, relative, class_name, tuple(outputs)))
    return plan


def _stamp(settings: AugmentationSettings, seed: int, plan: list[PlannedSource]) -> dict:
    """What identifies a run's output: its settings and the exact list of files it makes."""
    names = sorted(f"{item.relative}>{output.name}" for item in plan for _, output in item.outputs)
    return {
        "stage": "augmentation",
        "seed": seed,
        "settings": asdict(settings),
        "outputs": len(names),
        "plan_sha256": hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest(),
    }


def _prepare_destination(dest_root: Path, stamp: dict) -> None:
    """Refuse a destination holding anything but this same run's output; drop partial files."""
    if dest_root.exists():
        if not dest_root.is_dir():
            raise PipelineError(f"destination {dest_root} exists and is not a folder")
        previous = read_stamp(dest_root)
        if previous is not None:
            previous = {key: value for key, value in previous.items() if key != "complete"}
        has_content = any(dest_root.iterdir())
        if has_content and previous != stamp:
            raise PipelineError(
                f"destination {dest_root} holds other content (another augmentation run, or the "
                "source changed since); move it with move_augmented_images.py or delete it first"
            )
        for partial in dest_root.glob(f"*/.{AUGMENTED_PREFIX}*{TEMPORARY_SUFFIX}"):
            partial.unlink()
    dest_root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dest_root / STAMP_NAME, _stamp_bytes({**stamp, "complete": False}))


def _stamp_bytes(stamp: dict) -> bytes:
    return (json.dumps(stamp, indent=2, sort_keys=True) + "\n").encode("utf-8")


_worker_settings: tuple[AugmentationSettings, int] | None = None


def _init_worker(settings: AugmentationSettings, seed: int) -> None:
    global _worker_settings
    _worker_settings = (settings, seed)


# Output pixels planned in one go: enough to amortise numpy's per-call cost on small images, few
# enough to keep a worker's memory to some hundred MB on large ones.
PIXELS_PER_CALL = 1 << 21


# A worker's task per source, in plain strings: (source, relative path, class, ((k, folder,
# name), ...)); pickling Path objects to and from the workers cost more than the decoding.
Task = tuple[str, str, str, tuple[tuple[int, str, str], ...]]


def _task(item: PlannedSource) -> Task:
    outputs = tuple((index, str(path.parent), path.name) for index, path in item.outputs)
    return str(item.source), item.relative, item.class_name, outputs


def _augment_batch(tasks: list[Task]) -> list[tuple[str, int]]:
    """Write the planned copies of some sources; return (class, copies written) for each."""
    settings, seed = _worker_settings
    by_shape: dict[tuple, list[tuple[np.ndarray, Task]]] = {}
    for task in tasks:
        try:
            pixels = decode_source(task[0], settings.image_size)
        except Exception as error:  # Pillow raises many types for broken files
            raise PipelineError(
                f"cannot decode {task[0]} ({error}); remove broken files first with "
                "data_deleter.py --corrupt"
            ) from None
        by_shape.setdefault(pixels.shape, []).append((pixels, task))
    for (height, width, _), group in by_shape.items():
        images = np.stack([pixels for pixels, _ in group])
        jobs = [
            (position, relative, index, folder, name)
            for position, (_, (_, relative, _, outputs)) in enumerate(group)
            for index, folder, name in outputs
        ]
        step = max(1, PIXELS_PER_CALL // (height * width))
        for start in range(0, len(jobs), step):
            part = jobs[start : start + step]
            draws = np.stack([output_draws(seed, job[1], job[2]) for job in part])
            matrices = affine_matrices(draws, width, height, settings)
            image_index = np.array([job[0] for job in part])
            for augmented, (_, _, _, folder, name) in zip(
                transformed_images(images, matrices, image_index), part, strict=True
            ):
                # Written under a temporary name and renamed: an output that exists is complete.
                buffer = BytesIO()
                augmented.save(buffer, format="JPEG", quality=JPEG_QUALITY)
                temporary = f"{folder}{os.sep}.{name}{TEMPORARY_SUFFIX}"
                with open(temporary, "wb") as handle:
                    handle.write(buffer.getbuffer())
                os.replace(temporary, f"{folder}{os.sep}{name}")
    return [(task[2], len(task[3])) for task in tasks]


def default_workers() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass
class AugmentationReport:
    written: Counter
    already_there: int


def augment(
    plan: list[PlannedSource],
    dest_root: Path,
    settings: AugmentationSettings,
    *,
    seed: int = SEED,
    workers: int = 1,
    quiet: bool = False,
) -> AugmentationReport:
    """Make every planned output that is not there yet, in `workers` processes."""
    stamp = _stamp(settings, seed, plan)
    _prepare_destination(dest_root, stamp)
    existing: dict[Path, set[str]] = {}
    for folder in sorted({path.parent for item in plan for _, path in item.outputs}):
        folder.mkdir(parents=True, exist_ok=True)
        # One listing per folder instead of a stat per output: far cheaper on slow disks.
        existing[folder] = {entry.name for entry in os.scandir(folder)}
    pending = []
    for item in plan:
        outputs = tuple(
            (index, path) for index, path in item.outputs if path.name not in existing[path.parent]
        )
        if outputs:
            pending.append(replace(item, outputs=outputs))
    already_there = sum(len(item.outputs) for item in plan) - sum(
        len(item.outputs) for item in pending
    )
    tasks = [_task(item) for item in pending]
    batch_size = max(1, min(32, len(tasks) // (max(workers, 1) * 4)))
    batches = [tasks[start : start + batch_size] for start in range(0, len(tasks), batch_size)]
    if workers <= 1 or len(batches) < 2:
        _init_worker(settings, seed)
        results = map(_augment_batch, batches)
        pool = None
    else:
        pool = multiprocessing.get_context().Pool(
            min(workers, len(batches)), initializer=_init_worker, initargs=(settings, seed)
        )
        results = pool.imap_unordered(_augment_batch, batches)
    written: Counter = Counter()
    try:
        per_source = (result for batch in results for result in batch)
        for class_name, count in progress(
            per_source, total=len(pending), description="augmenting", quiet=quiet
        ):
            written[class_name] += count
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    atomic_write_bytes(dest_root / STAMP_NAME, _stamp_bytes({**stamp, "complete": True}))
    return AugmentationReport(written, already_there)


def write_preview(
    path: Path,
    source_root: Path,
    settings: AugmentationSettings,
    *,
    seed: int = SEED,
    rows: int = 6,
    columns: int = 6,
) -> None:
    """A PNG contact sheet: each row one source image, then its copies 0, 1, ... as the run
    would make them; sources are spread evenly over the classes and their files."""
    folders = class_folders(source_root) if source_root.is_dir() else {}
    per_class = [
        [p for p in list_images(folder) if not is_augmented_name(p.name)]
        for _, folder in sorted(folders.items())
    ]
    per_class = [images for images in per_class if images]
    if not per_class:
        raise PipelineError(f"no images in class folders of {source_root} to preview")
    chosen: list[Path] = []
    for row in range(rows):
        images = per_class[row % len(per_class)]
        rank = row // len(per_class)
        slots = math.ceil(rows / len(per_class))
        chosen.append(images[(rank * len(images)) // slots])
    cell = 96
    gap = 4
    separator = 12
    sheet_width = gap + cell + separator + columns * (cell + gap)
    sheet = Image.new("RGB", (sheet_width, gap + len(chosen) * (cell + gap)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, source in enumerate(chosen):
        pixels = load_rgb(source, settings.image_size)
        relative = source.relative_to(source_root).as_posix()
        draws = np.stack([output_draws(seed, relative, index) for index in range(columns)])
        tiles = [pixels, *augment_pixels(pixels, draws, settings)]
        top = gap + row * (cell + gap)
        for column, tile in enumerate(tiles):
            left = gap + (0 if column == 0 else cell + separator + (column - 1) * (cell + gap))
            image = Image.fromarray(tile)
            scale = cell / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
            sheet.paste(image.resize(size, resample), (left, top))
        draw.text((gap + 2, top + 2), canonical_class(source.parent.name) or "", fill="yellow")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


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


def _remove_emptied(source_root: Path, folders: list[Path]) -> list[Path]:
    """Remove emptied class folders, then the stamp and the source folder if nothing else is
    left; return the files that stay."""
    for folder in folders:
        for partial in folder.glob(f".{AUGMENTED_PREFIX}*{TEMPORARY_SUFFIX}"):
            partial.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
    remaining = [
        path
        for path in sorted(source_root.rglob("*"))
        if path.is_file() and path.name != STAMP_NAME
    ]
    if not remaining:
        (source_root / STAMP_NAME).unlink(missing_ok=True)
        for folder in sorted(
            (p for p in source_root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
        ):
            if not any(folder.iterdir()):
                folder.rmdir()
        source_root.rmdir()
    return remaining
