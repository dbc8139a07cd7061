"""Offline image augmentation: randomly transformed copies of the training images.

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
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from realfake.core.config import SEED
from realfake.core.errors import PipelineError
from realfake.core.fastjpeg import JpegWriter, decode_jpeg_into, plain_jpeg_size
from realfake.core.fileops import STAMP_NAME, atomic_write_bytes, read_stamp
from realfake.core.images import list_images, load_rgb
from realfake.core.layout import canonical_class, class_folders
from realfake.core.progress import progress
from realfake.core.workers import prepare_worker

AUGMENTED_PREFIX = "aug_"
OUTPUT_SUFFIX = ".jpg"
JPEG_QUALITY = 95
TEMPORARY_SUFFIX = ".tmp"
PREVIEW_HEADER = 18  # pixels above the first row, for the column names


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


def draws_for(seed: int, outputs: list[tuple[str, int]]) -> np.ndarray:
    """Seven uniform numbers in [0, 1) per (source path, copy index), from the seed and that pair
    alone: one row per output, the same whichever other outputs share the call.

    A keyed hash rather than a seeded generator: as independent, and about a hundred times
    cheaper than building a numpy Generator per output.
    """
    digest = b"".join(
        hashlib.blake2b(
            f"{seed}\0{relative}\0{index}".encode(), digest_size=8 * DRAWS_PER_OUTPUT
        ).digest()
        for relative, index in outputs
    )
    words = np.frombuffer(digest, dtype="<u8").reshape(len(outputs), DRAWS_PER_OUTPUT)
    return (words >> np.uint64(11)) * (1.0 / (1 << 53))


def output_draws(seed: int, relative_source: str, copy_index: int) -> np.ndarray:
    """The seven draws of one output (a row of `draws_for`)."""
    return draws_for(seed, [(relative_source, copy_index)])[0]


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


def edge_padding(width: int, height: int, settings: AugmentationSettings) -> int:
    """Edge pixels to add on every side of a width x height image so that every point that any
    transformation within the settings' ranges reaches lies inside, bilinear neighbours included.

    A point of the output lies within half the diagonal of the centre; zoom stretches that by at
    most 1 + zoom, shear by at most 1 + |sin(shear)|, rotation not at all, and the shift moves it
    by at most its own length. The padding depends on these ranges alone, never on the drawn
    parameters, so an output's coordinates, and with them its pixels to the last bit, never
    depend on which other outputs happen to share its batch.
    """
    stretch = (1.0 + min(1.0, math.radians(settings.shear_range))) * (1.0 + settings.zoom_range)
    reach = stretch * math.hypot(width, height) / 2 + math.hypot(
        settings.width_shift_range * width, settings.height_shift_range * height
    )
    return math.ceil(max(0.0, reach - min(width, height) / 2)) + 2


def pad_edges(images: np.ndarray, padding: int) -> np.ndarray:
    """(images, height, width, ...) arrays, each repeated outwards from its edges by `padding`.

    Slice assignments rather than `np.pad(mode="edge")`, which is many times slower on small
    images: it copies the side margins three bytes at a time.
    """
    count, height, width = images.shape[:3]
    padded = np.empty(
        (count, height + 2 * padding, width + 2 * padding, *images.shape[3:]), images.dtype
    )
    rows = slice(padding, padding + height)
    padded[:, rows, padding : padding + width] = images
    padded[:, rows, :padding] = images[:, :, :1]
    padded[:, rows, padding + width :] = images[:, :, -1:]
    padded[:, :padding] = padded[:, padding : padding + 1]
    padded[:, padding + height :] = padded[:, padding + height - 1 : padding + height]
    return padded


def padded_tiles(canvas: Image.Image, count: int, padding: int) -> np.ndarray:
    """The `count` images stacked top to bottom in an RGB canvas, each edge-padded, as one
    (count, height, width) array of 4-byte RGBX pixels: Pillow's own layout for RGB, so the
    pixels go in and out of Pillow without repacking, and one pixel is one array element."""
    width, height = canvas.width, canvas.height // count
    pixels = np.frombuffer(canvas.tobytes("raw", "RGBX"), dtype=np.uint32)
    return pad_edges(pixels.reshape(count, height, width), padding)


def tile_image(tiles: np.ndarray, position: int) -> Image.Image:
    """One padded tile of `padded_tiles` as a Pillow image that shares its memory."""
    tile = tiles[position]
    return Image.frombuffer("RGBX", (tile.shape[1], tile.shape[0]), tile, "raw", "RGBX", 0, 1)


def padded_coefficients(matrices: np.ndarray, padding: int) -> list[list[float]]:
    """Pillow's six affine coefficients for each matrix from `affine_matrices`, applied to a
    source padded by `padding`."""
    coefficients = matrices[:, :2].reshape(len(matrices), 6)
    return (coefficients + np.array([0, 0, padding, 0, 0, padding])).tolist()


def transform_padded(tile: Image.Image, coefficients: list[float], size: tuple[int, int]):
    """Resample a padded source bilinearly through coefficients from `padded_coefficients`.

    Pillow fills points outside an image with a constant; Keras's nearest fill takes the nearest
    edge pixel instead, which is what the padding holds, reaching as far as any matrix can.
    """
    return tile.transform(
        size, Image.Transform.AFFINE, data=coefficients, resample=Image.Resampling.BILINEAR
    )


def augment_pixels(
    pixels: np.ndarray, draws: np.ndarray, settings: AugmentationSettings
) -> np.ndarray:
    """Augmented versions of one RGB array, one per row of `draws`, at the array's own size."""
    height, width = pixels.shape[:2]
    matrices = affine_matrices(np.atleast_2d(draws), width, height, settings)
    padding = edge_padding(width, height, settings)
    tile = tile_image(padded_tiles(Image.fromarray(pixels), 1, padding), 0)
    outputs = [
        transform_padded(tile, coefficients, (width, height))
        for coefficients in padded_coefficients(matrices, padding)
    ]
    return np.stack([np.asarray(output.convert("RGB")) for output in outputs])


_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)


def write_output(folder: str, name: str, data: bytes) -> None:
    """Write an output under a temporary name and rename it: an output that exists is complete.

    No fsync: a killed process cannot lose what it wrote, since the data already sit in the
    kernel, and the rename is atomic, so kill -9 never leaves a partial file under a final name.
    Only a power cut or an operating-system crash could, and guarding against that would cost a
    disk flush per small file; after one, `data_deleter.py --corrupt` finds broken outputs.
    """
    temporary = f"{folder}{os.sep}.{name}{TEMPORARY_SUFFIX}"
    handle = os.open(temporary, _WRITE_FLAGS, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(handle, view) :]
    finally:
        os.close(handle)
    os.replace(temporary, f"{folder}{os.sep}{name}")


@dataclass(frozen=True)
class PlannedSource:
    """One source image and the augmented copies to make of it."""

    source: Path
    relative: str  # the source's path relative to the source folder, seeding its copies
    class_name: str
    dest_folder: Path  # where its copies go
    outputs: tuple[tuple[int, str], ...]  # (copy index, output file name)


def is_augmented_name(name: str) -> bool:
    """True for a file this stage wrote."""
    return name.startswith(AUGMENTED_PREFIX)


def _output_keys(names: list[str]) -> list[str]:
    """The part of each output name that identifies its source file: the stem, plus the
    extension where two sources share a stem (img.jpg and img.png)."""
    split = [os.path.splitext(name) for name in names]
    stems = Counter(stem for stem, _ in split)
    return [
        stem if stems[stem] == 1 else f"{stem}_{extension.lstrip('.')}" for stem, extension in split
    ]


def _copy_counts(
    class_name: str,
    folder: Path,
    image_count: int,
    source_count: int,
    copies: int | None,
    target_per_class: int | None,
    seed: int,
) -> list[int]:
    """How many copies each of a class's source images gets, in their order: `copies` each, or
    enough to top the class's `image_count` images up to `target_per_class`, spread evenly."""
    if copies is not None:
        return [copies] * source_count
    needed = max(0, target_per_class - image_count)
    if needed and not source_count:
        raise PipelineError(f"{folder} has no original images to augment")
    order = np.random.default_rng([seed, zlib.crc32(class_name.encode())]).permutation(source_count)
    base, extra = divmod(needed, source_count) if source_count else (0, 0)
    counts = [0] * source_count
    for rank, index in enumerate(order.tolist()):
        counts[index] = base + (1 if rank < extra else 0)
    return counts


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
        counts = _copy_counts(
            class_name, folder, len(images), len(sources), copies, target_per_class, seed
        )
        taken = set(os.listdir(folder))
        names = [path.name for path in sources]
        class_dest = dest_root / folder.name
        planned_names: set[str] = set()
        for source, name, key, count in zip(
            sources, names, _output_keys(names), counts, strict=True
        ):
            outputs = []
            copy_index = 0
            while len(outputs) < count:
                output = f"{AUGMENTED_PREFIX}{key}_{copy_index}{OUTPUT_SUFFIX}"
                if output not in taken:
                    if output in planned_names:
                        raise PipelineError(
                            f"two sources in {folder} would both make {output}; rename one of them"
                        )
                    planned_names.add(output)
                    outputs.append((copy_index, output))
                copy_index += 1
            if outputs:
                relative = f"{folder.name}/{name}"  # the path below source_root
                plan.append(PlannedSource(source, relative, class_name, class_dest, tuple(outputs)))
    return plan


def _stamp(settings: AugmentationSettings, seed: int, plan: list[PlannedSource]) -> dict:
    """What identifies a run's output: its settings and the exact list of files it makes."""
    names = sorted(f"{item.relative}>{name}" for item in plan for _, name in item.outputs)
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
_worker_writer: JpegWriter | None = None


def _init_worker(
    settings: AugmentationSettings, seed: int, writer: JpegWriter, parent_pid: int | None = None
) -> None:
    global _worker_settings, _worker_writer
    if parent_pid is not None:
        prepare_worker(parent_pid)
    _worker_settings = (settings, seed)
    _worker_writer = writer


# Source pixels, padded, decoded in one go: enough to amortise numpy's per-call cost on small
# images, few enough to keep a worker's memory to some tens of MB on large ones.
PIXELS_PER_CALL = 1 << 19


# A worker's task per source, in plain strings: (source, relative path, class, output folder,
# ((k, name), ...)); pickling Path objects to and from the workers cost more than the decoding.
Task = tuple[str, str, str, str, tuple[tuple[int, str], ...]]


def _task(item: PlannedSource, folder: str, outputs: tuple[tuple[int, str], ...]) -> Task:
    return str(item.source), item.relative, item.class_name, folder, outputs


def _broken(path: str, error: Exception) -> PipelineError:
    return PipelineError(
        f"cannot decode {path} ({error}); remove broken files first with data_deleter.py --corrupt"
    )


def _read_bytes(path: str) -> bytes:
    """A file's bytes, with half the Python overhead of `open(path, "rb").read()`."""
    handle = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        chunks = []
        while chunk := os.read(handle, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(handle)
    return b"".join(chunks)


def _read_sources(tasks: list[Task], image_size: int | None) -> dict:
    """Group the tasks by source size; each source as its JPEG bytes where those decode straight
    into place, else as pixels from `load_rgb`."""
    groups: dict[tuple[int, int], list[tuple[bytes | np.ndarray, Task]]] = {}
    for task in tasks:
        try:
            data = _read_bytes(task[0])
            size = plain_jpeg_size(data) if image_size is None else None
            if size is None:
                data = load_rgb(data, image_size)
                size = (data.shape[1], data.shape[0])
        except Exception as error:  # Pillow raises many types for broken files
            raise _broken(task[0], error) from None
        groups.setdefault(size, []).append((data, task))
    return groups


def _augment_group(group: list, width: int, height: int, padding: int) -> None:
    """Write every planned output of sources of one size: decode them all into one canvas, pad
    them all in one numpy call, then transform, encode and write each output."""
    settings, seed = _worker_settings
    canvas = Image.new("RGB", (width, height * len(group)))
    for position, (data, task) in enumerate(group):
        box = (0, position * height, width, (position + 1) * height)
        if isinstance(data, bytes) and not decode_jpeg_into(data, canvas, box):
            try:  # the full decoder, for its error message or for what it can still read
                data = load_rgb(data)
            except Exception as error:  # Pillow raises many types for broken files
                raise _broken(task[0], error) from None
            if data.shape[:2] != (height, width):
                raise _broken(task[0], ValueError("its size is not the one in its header"))
        if not isinstance(data, bytes):
            canvas.paste(Image.fromarray(data), box[:2])
    tiles = padded_tiles(canvas, len(group), padding)
    jobs = [
        (position, relative, index, folder, name)
        for position, (_, (_, relative, _, folder, outputs)) in enumerate(group)
        for index, name in outputs
    ]
    draws = draws_for(seed, [(job[1], job[2]) for job in jobs])
    coefficients = padded_coefficients(affine_matrices(draws, width, height, settings), padding)
    images: dict[int, Image.Image] = {}
    encode = _worker_writer.encode
    size = (width, height)
    for output, (position, _, _, folder, name) in zip(coefficients, jobs, strict=True):
        tile = images.get(position)
        if tile is None:
            tile = images[position] = tile_image(tiles, position)
        write_output(folder, name, encode(transform_padded(tile, output, size)))


def _augment_batch(tasks: list[Task]) -> list[tuple[str, int]]:
    """Write the planned copies of some sources; return (class, copies written) for each."""
    settings, _ = _worker_settings
    for (width, height), group in _read_sources(tasks, settings.image_size).items():
        padding = edge_padding(width, height, settings)
        step = max(1, PIXELS_PER_CALL // ((width + 2 * padding) * (height + 2 * padding)))
        for start in range(0, len(group), step):
            _augment_group(group[start : start + step], width, height, padding)
    return [(task[2], len(task[4])) for task in tasks]


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
    existing: dict[Path, tuple[str, set[str]]] = {}
    for folder in sorted({item.dest_folder for item in plan}):
        folder.mkdir(parents=True, exist_ok=True)
        # One listing per folder instead of a stat per output: far cheaper on slow disks.
        existing[folder] = (str(folder), set(os.listdir(folder)))
    tasks = []
    for item in plan:
        folder, there = existing[item.dest_folder]
        outputs = tuple(output for output in item.outputs if output[1] not in there)
        if outputs:
            tasks.append(_task(item, folder, outputs))
    already_there = sum(len(item.outputs) for item in plan) - sum(len(task[4]) for task in tasks)
    # Large batches amortise the per-batch numpy work; eight per worker keep both busy to the end.
    batch_size = max(1, min(256, math.ceil(len(tasks) / (max(workers, 1) * 8))))
    batches = [tasks[start : start + batch_size] for start in range(0, len(tasks), batch_size)]
    # Made here, before any worker starts: forked workers inherit it with Pillow's JPEG plugin
    # already loaded, instead of each spending as long on that as on a hundred images.
    writer = JpegWriter(JPEG_QUALITY)
    if workers <= 1 or len(batches) < 2:
        _init_worker(settings, seed, writer)
        results = map(_augment_batch, batches)
        pool = None
    else:
        pool = multiprocessing.get_context().Pool(
            min(workers, len(batches)),
            initializer=_init_worker,
            initargs=(settings, seed, writer, os.getpid()),
        )
        results = pool.imap_unordered(_augment_batch, batches)
    written: Counter = Counter()
    try:
        per_source = (result for batch in results for result in batch)
        for class_name, count in progress(
            per_source, total=len(tasks), description="augmenting", quiet=quiet
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
    """A PNG contact sheet: a header row naming the columns, then each row one source image
    (its class on a dark label) and its copies 1, 2, ... as the run would make them; sources are
    spread evenly over the classes and their files."""
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
    sheet = Image.new(
        "RGB", (sheet_width, PREVIEW_HEADER + gap + len(chosen) * (cell + gap)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for column in range(columns + 1):
        left = gap + (0 if column == 0 else cell + separator + (column - 1) * (cell + gap))
        draw.text((left + 2, 4), "original" if column == 0 else f"copy {column}", fill="black")
    for row, source in enumerate(chosen):
        pixels = load_rgb(source, settings.image_size)
        relative = source.relative_to(source_root).as_posix()
        draws = np.stack([output_draws(seed, relative, index) for index in range(columns)])
        tiles = [pixels, *augment_pixels(pixels, draws, settings)]
        top = PREVIEW_HEADER + gap + row * (cell + gap)
        for column, tile in enumerate(tiles):
            left = gap + (0 if column == 0 else cell + separator + (column - 1) * (cell + gap))
            image = Image.fromarray(tile)
            scale = cell / max(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BILINEAR
            sheet.paste(image.resize(size, resample), (left, top))
        label = canonical_class(source.parent.name) or ""
        if label:  # white on a dark box reads on light and dark images alike
            box = draw.textbbox((gap + 3, top + 3), label)
            draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill="black")
            draw.text((gap + 3, top + 3), label, fill="white")
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = BytesIO()
    sheet.save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
