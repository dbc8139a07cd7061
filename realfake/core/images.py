"""Image files: recognising them, checking they decode, and decoding them the one way that
training, evaluation and the app all share."""

import io
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from realfake.core.config import IMAGE_EXTENSIONS
from realfake.core.fileops import open_regular_file


def is_image_name(path: Path) -> bool:
    """True for a visible file whose extension is an image type."""
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside `folder`, sorted by name."""
    return sorted(path for path in folder.iterdir() if path.is_file() and is_image_name(path))


def is_decodable(path: str | Path) -> bool:
    """True when Pillow decodes the whole file; JPEGs at reduced scale, which still reads and
    checks all their compressed data but skips most of the inverse DCT."""
    try:
        # Opened as a regular file only: a named pipe named like an image would block the check.
        with open_regular_file(Path(path)) as handle, Image.open(handle) as image:
            image.draft(image.mode, (1, 1))  # a no-op for formats other than JPEG
            image.load()
        return True
    except Exception:  # Pillow raises many types for broken files
        return False


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode (16-bit, palette, CMYK, with alpha) to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.uint32)
        high = 65535 if array.max() > 255 else 255
        image = Image.fromarray((array * 255 // high).astype(np.uint8), mode="L")
    return image.convert("RGB")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG chunks that hold only text, which Pillow refuses at open when one expands past its limit
# (PngImagePlugin.MAX_TEXT_CHUNK, a defence against decompression bombs).
_PNG_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})


def png_chunks(data: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each whole chunk of a PNG's bytes, in order, until the chunks end or
    one runs past the data."""
    position = len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        end = position + 12 + int.from_bytes(data[position : position + 4], "big")
        if end > len(data):
            return
        yield data[position + 4 : position + 8], position, end
        position = end


def without_text_chunks(data: bytes) -> bytes | None:
    """A PNG's bytes with its text chunks left out, for decoding the pixels of a file whose text
    Pillow refuses; None when `data` is no PNG or holds no text chunk. The pixels do not depend
    on text chunks; a damaged chunk structure is left for the decoder to judge."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    kept, position, dropped = [PNG_SIGNATURE], len(PNG_SIGNATURE), False
    for kind, start, end in png_chunks(data):
        if kind in _PNG_TEXT_CHUNKS:
            dropped = True
        else:
            kept.append(data[start:end])
        position = end
    kept.append(data[position:])
    return b"".join(kept) if dropped else None


def png_text_past_limit(data: bytes, limit: int) -> bool:
    """True when a PNG's bytes hold a text chunk whose text, once expanded, is longer than
    `limit` bytes; each compressed text is expanded only up to that limit."""
    if not data.startswith(PNG_SIGNATURE):
        return False
    for kind, start, end in png_chunks(data):
        if kind not in _PNG_TEXT_CHUNKS:
            continue
        body = data[start + 8 : end - 4]
        _, _, text = body.partition(b"\x00")
        if kind == b"zTXt":
            compressed = text[1:]
        elif kind == b"iTXt" and text[:1] == b"\x01":
            compressed = text[2:].split(b"\x00", 2)[-1]
        else:
            compressed = None
        if compressed is None:
            if len(text) > limit:
                return True
            continue
        try:
            expanded = zlib.decompressobj().decompress(compressed, limit + 1)
        except zlib.error:
            continue  # a broken chunk is the decoder's to judge
        if len(expanded) > limit:
            return True
    return False


def load_rgb(source: Path | bytes, image_size: int | None = None) -> np.ndarray:
    """Decode an image file or its bytes to a uint8 RGB array, resized bilinearly to a square.

    EXIF orientation is applied and only the first frame of an animation is used. With
    `image_size` None the image keeps its own size. An image whose shorter side is more than
    twice `image_size` is decoded toward twice that side first: a JPEG at 1/2, 1/4 or 1/8 of its
    size (Pillow's draft mode), any other format decoded once and reduced by a whole factor before
    its pixels are converted; smaller images decode exactly as they always have. `source` may
    also be an image Pillow has opened, which is then decoded in place and left open, so its
    caller can derive other views from the same decode.
    """
    if isinstance(source, Image.Image):
        opened = source
    else:
        opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    try:
        image = opened
        image.seek(0)
        twice = None if image_size is None else 2 * image_size
        if twice is not None and min(image.size) > twice:
            # A no-op for formats other than JPEG; must come before the pixels are decoded.
            image.draft(image.mode, (twice, twice))
        # In place: a copy of a large image would double the memory its decode takes.
        ImageOps.exif_transpose(image, in_place=True)
        factor = 1 if twice is None else min(image.size) // twice
        if factor > 1:
            # reduce() takes neither bilevel, palette nor 16-bit images: convert those first.
            if image.mode in ("1", "P", "PA") or image.mode.startswith("I;16"):
                image = _to_rgb(image)
            image = image.reduce(factor)
        image = _to_rgb(image)
        if image_size is not None and image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
    finally:
        if opened is not source:  # a caller's open image stays open for the caller
            opened.close()
