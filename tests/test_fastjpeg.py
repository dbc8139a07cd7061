"""realfake.core.fastjpeg: the direct JPEG decoder and encoder give exactly what Pillow's public API
gives, and step aside where they cannot."""

from io import BytesIO

import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from realfake.core import fastjpeg
from realfake.core.fastjpeg import JpegWriter, decode_jpeg_into, plain_jpeg_size
from realfake.core.images import load_rgb

QUALITY = 95


def reference_decode(data: bytes) -> np.ndarray:
    with Image.open(BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def reference_encode(image: Image.Image, quality: int) -> bytes:
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def jpeg_bytes(seed: int, size: tuple[int, int], **options) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(9, 12, 3), dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).resize(size).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "options",
    [
        {"quality": 95},
        {"quality": 75, "subsampling": 0},
        {"quality": 90, "subsampling": 1},
        {"progressive": True},
        {"quality": 60, "optimize": True},
    ],
)
def test_fast_jpeg_decoding_gives_load_rgbs_pixels(tmp_path, options):
    data = jpeg_bytes(1, (45, 31), **options)
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    assert plain_jpeg_size(data) == (45, 31)
    image = Image.new("RGB", (45, 31))
    assert decode_jpeg_into(data, image, (0, 0, 45, 31))
    assert np.array_equal(np.asarray(image), reference_decode(data))
    assert np.array_equal(np.asarray(image), load_rgb(path))


def test_decoding_into_boxes_of_one_canvas_fills_each_box_with_its_image():
    first, second = jpeg_bytes(2, (20, 14)), jpeg_bytes(3, (20, 14), quality=70)
    canvas = Image.new("RGB", (20, 28))
    assert decode_jpeg_into(first, canvas, (0, 0, 20, 14))
    assert decode_jpeg_into(second, canvas, (0, 14, 20, 28))
    pixels = np.asarray(canvas)
    assert np.array_equal(pixels[:14], reference_decode(first))
    assert np.array_equal(pixels[14:], reference_decode(second))


def test_truncated_jpeg_does_not_decode():
    data = jpeg_bytes(4, (64, 64))
    cut = data[: len(data) // 2]
    assert plain_jpeg_size(cut) == (64, 64)  # the header survives
    assert not decode_jpeg_into(cut, Image.new("RGB", (64, 64)), (0, 0, 64, 64))


def test_jpegs_needing_the_full_decoder_are_not_plain(tmp_path):
    grey = BytesIO()
    Image.fromarray(np.full((8, 8), 90, dtype=np.uint8)).save(grey, format="JPEG")
    rotated = BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate on display
    Image.new("RGB", (16, 8), "red").save(rotated, format="JPEG", exif=exif)
    cmyk = BytesIO()
    Image.new("CMYK", (8, 8), (10, 20, 30, 40)).save(cmyk, format="JPEG")
    png = write_image(tmp_path / "x.png", seed=1).read_bytes()
    for data in (grey.getvalue(), rotated.getvalue(), cmyk.getvalue(), png, b"", b"\xff\xd8"):
        assert plain_jpeg_size(data) is None


@pytest.mark.parametrize("quality", [QUALITY, 75])
def test_direct_jpeg_encoding_gives_the_bytes_of_save(quality):
    writer = JpegWriter(quality)
    assert writer.direct  # on the Pillow this project pins; otherwise it falls back to save()
    rng = np.random.default_rng(3)
    for size in ((32, 32), (45, 31), (300, 7)):
        smooth = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(smooth).resize(size, Image.Resampling.BICUBIC)
        for candidate in (image, image.convert("RGBX")):
            assert writer.encode(candidate) == reference_encode(candidate, quality)


def test_jpeg_writer_falls_back_to_save_where_the_direct_path_differs(monkeypatch):
    def wrong(self, image):
        return b"not what save() writes"

    monkeypatch.setattr(fastjpeg.JpegWriter, "_encode", wrong)
    writer = JpegWriter(QUALITY)
    assert not writer.direct
    image = Image.fromarray(np.full((8, 8, 3), 120, dtype=np.uint8))
    assert writer.encode(image) == reference_encode(image, QUALITY)
