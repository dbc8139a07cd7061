"""Fast JPEG reading and writing for small images, through Pillow's own decoder and encoder.

`Image.open` and `Image.save` spend most of their time on small images in Python: parsing headers
and working out encoder arguments. These functions call Pillow's JPEG codec directly, with the
same results, and fall back where they cannot promise them: `plain_jpeg_size` answers None for
JPEGs that need the full path, and `JpegWriter` checks its output against `save` once.
They use private Pillow internals (`Image._getdecoder`, `Image._getencoder`); the tests check
both against the public API.
"""

from io import BytesIO

import numpy as np
from PIL import Image, ImageFile

# Start-of-frame markers of the JPEGs that Pillow decodes as plain RGB: baseline, extended and
# progressive Huffman coding.
_PLAIN_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2})


def plain_jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a plain three-component JPEG that Pillow's JPEG decoder turns into the
    pixels `load_rgb` gives; None for anything that needs the full path: another format, EXIF
    (orientation), an Adobe colour transform, grey or CMYK.

    Reading the frame header here skips Pillow's Python header parsing, which costs more than
    the decoding itself on small images.
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
            if position + 10 > len(data):
                return None
            height = int.from_bytes(data[position + 5 : position + 7], "big")
            width = int.from_bytes(data[position + 7 : position + 9], "big")
            if data[position + 9] != 3 or not width or not height:
                return None
            return width, height
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def decode_jpeg_into(data: bytes, image: Image.Image, box: tuple[int, int, int, int]) -> bool:
    """Decode a plain JPEG (see `plain_jpeg_size`) straight into a box of an RGB image, as
    `Image.frombytes(..., "jpeg", "RGB", "")` would; False if the data do not decode."""
    decoder = Image._getdecoder("RGB", "jpeg", ("RGB", ""))
    try:
        decoder.setimage(image.im, box)
        consumed, status = decoder.decode(data)
    except (OSError, ValueError):
        return False
    finally:
        decoder.cleanup()
    return consumed < 0 and status == 0


class JpegWriter:
    """Encodes RGB or RGBX images as JPEG at one quality, to the bytes `Image.save` gives.

    On small images `save` spends most of its time in Python, working out the same encoder
    arguments every time. Those are learnt once from a `save` of a probe image and handed to
    Pillow's JPEG encoder directly; if that does not give the probe's bytes exactly (another
    Pillow), every image goes through `save`.
    """

    def __init__(self, quality: int) -> None:
        self.quality = quality
        probe = Image.fromarray(np.arange(24 * 17 * 3, dtype=np.uint8).reshape(17, 24, 3))
        probes = [(probe, self._save(probe))]
        self._arguments = getattr(probe, "encoderconfig", None)
        probe = probe.convert("RGBX")
        probes.append((probe, self._save(probe)))
        try:
            self.direct = self._arguments is not None and all(
                self._encode(image) == expected for image, expected in probes
            )
        except Exception:  # any failure of the private path means: use the public one
            self.direct = False

    def _save(self, image: Image.Image) -> bytes:
        buffer = BytesIO()
        image.save(buffer, format="JPEG", quality=self.quality)
        return buffer.getvalue()

    def _encode(self, image: Image.Image) -> bytes:
        encoder = Image._getencoder(image.mode, "jpeg", "RGB", self._arguments)
        chunks = []
        try:
            encoder.setimage(image.im, (0, 0, *image.size))
            block = max(ImageFile.MAXBLOCK, image.size[0] * 4)
            while True:
                _, status, chunk = encoder.encode(block)
                chunks.append(chunk)
                if status:
                    break
        finally:
            encoder.cleanup()
        if status < 0:
            raise OSError(f"JPEG encoder error {status}")
        return b"".join(chunks)

    def encode(self, image: Image.Image) -> bytes:
        """The JPEG bytes of an RGB or RGBX image."""
        return self._encode(image) if self.direct else self._save(image)
