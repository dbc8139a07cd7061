"""Reading the files of a batch run: each file's bytes read once, decoded for the model and
read for the extra columns (provenance), by a thread pool a few batches ahead of the model.

Decoding goes through `realfake.core.images.load_rgb`, the one decoder.
"""

import hashlib
import io
import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from realfake.core.images import load_rgb, without_text_chunks
from realfake.inference.batch_files import ImageFile


@dataclass(frozen=True)
class ExtraColumns:
    """A group of columns read from each file's raw bytes (provenance, for one)."""

    names: tuple[str, ...]
    read: Callable[[bytes], dict[str, str]]
    # What identifies its settings, so that a run does not continue another run's output.
    settings: dict = field(default_factory=dict)


def provenance_columns(trust_anchors: str | None = None) -> ExtraColumns:
    """The provenance columns: source of evidence, declared origin, generator, signature."""
    from realfake.inference.provenance import CSV_COLUMNS, read_provenance

    def read(data: bytes) -> dict[str, str]:
        return read_provenance(data, trust_anchors=trust_anchors).csv_fields()

    anchors = hashlib.sha256(trust_anchors.encode()).hexdigest() if trust_anchors else None
    return ExtraColumns(tuple(CSV_COLUMNS), read, {"provenance_trust_anchors": anchors})


@dataclass
class Decoded:
    """One file after reading: pixels for the model, or the reason there are none."""

    file: ImageFile
    pixels: np.ndarray | None
    width: int | None
    height: int | None
    error: str | None
    extra: dict[str, str]


def decode_file(file: ImageFile, image_size: int, extras: Sequence[ExtraColumns]) -> Decoded:
    """Read a file's bytes once; decode them for the model and read the extra columns from them."""
    from realfake.core.fileops import read_regular_file

    empty = {name: "" for group in extras for name in group.names}
    try:
        data = read_regular_file(file.path)
    except OSError as error:
        return Decoded(file, None, None, None, f"cannot read: {error.strerror}", empty)
    extra = {name: value for group in extras for name, value in group.read(data).items()}
    width = height = None
    try:
        width, height = displayed_size(data)
        pixels = load_rgb(data, image_size)
    except Exception as error:  # Pillow raises many types for broken files
        # Pillow refuses a PNG text chunk that expands past its limit; the text is provenance,
        # which the provenance reader finds unreadable; the pixels are still there.
        pixels_only = without_text_chunks(data)
        try:
            if pixels_only is None:
                raise
            width, height = displayed_size(pixels_only)
            pixels = load_rgb(pixels_only, image_size)
        except Exception:
            return Decoded(file, None, width, height, f"cannot decode: {_reason(error)}", extra)
    return Decoded(file, pixels, width, height, None, extra)


def displayed_size(data: bytes) -> tuple[int, int]:
    """(width, height) of an image as shown, after its EXIF orientation; reads the header only."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
        # Orientations 5-8 turn the picture a quarter, as load_rgb's exif_transpose does.
        if image.getexif().get(0x0112) in (5, 6, 7, 8):
            width, height = height, width
    return width, height


def _reason(error: Exception) -> str:
    """One stable line for a decoding failure (Pillow's messages can name object addresses)."""
    from PIL import UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "not an image format Pillow can read"
    text = str(error).splitlines()[0] if str(error) else ""
    return text if text and " at 0x" not in text else type(error).__name__


def decoded_batches(
    files: Sequence[ImageFile],
    image_size: int,
    batch_size: int,
    extras: Sequence[ExtraColumns],
    threads: int,
) -> Iterator[list[Decoded]]:
    """Batches of decoded files in order, decoded by a thread pool a few batches ahead, so that
    Pillow (which releases the GIL) works while the model runs; at most threads + 2 batches are
    in memory, however many files there are."""

    def decode_batch(start: int) -> list[Decoded]:
        return [decode_file(file, image_size, extras) for file in files[start : start + batch_size]]

    starts = iter(range(0, len(files), batch_size))
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        pending = deque(
            pool.submit(decode_batch, start) for start in itertools.islice(starts, threads + 1)
        )
        while pending:
            batch = pending.popleft().result()
            start = next(starts, None)
            if start is not None:
                pending.append(pool.submit(decode_batch, start))
            yield batch
