"""Image files: recognising them, checking they decode, and decoding them the one way that
training, evaluation and the app all share."""

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from realfake.config import IMAGE_EXTENSIONS


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
        with Image.open(path) as image:
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


def load_rgb(source: Path | bytes, image_size: int | None = None) -> np.ndarray:
    """Decode an image file or its bytes to a uint8 RGB array, resized bilinearly to a square.

    EXIF orientation is applied and only the first frame of an animation is used. With
    `image_size` None the image keeps its own size.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.seek(0)
        image = _to_rgb(ImageOps.exif_transpose(image))
        if image_size is not None and image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
