"""A small synthetic demo dataset in the exact layouts of the two Kaggle archives.

The images are stand-ins that let every stage run end to end without a download, not samples of
the real datasets. "Real" images are random crops of the photographs that ship with scikit-learn.
"Fake" images are crops of the same photographs carrying artifacts typical of image generators:
the checkerboard that transposed-convolution upsampling leaves, blocky nearest-neighbour
upsampling and over-smoothed patches. Everything is drawn from seeded generators, so the same seed
gives byte-identical archives.
"""

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

CIFAKE_IMAGE_SIZE = 32
FAKE_OR_REAL_IMAGE_SIZE = 64
JPEG_QUALITY = 92


@dataclass(frozen=True)
class DemoCounts:
    """How many images each demo archive holds, per class."""

    cifake_train: int = 300
    cifake_test: int = 60
    fake_or_real_train: int = 300
    fake_or_real_unlabelled_test: int = 40


def sample_photos() -> list[np.ndarray]:
    """The photographs bundled with scikit-learn (no download), as uint8 RGB arrays."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(image, dtype=np.uint8) for image in load_sample_images().images]


def random_crop(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> Image.Image:
    """A random square crop of a random photo, randomly mirrored, resized to `size`."""
    photo = photos[rng.integers(len(photos))]
    height, width = photo.shape[:2]
    side = int(rng.integers(max(size, 48), min(height, width) // 2))
    top = int(rng.integers(0, height - side + 1))
    left = int(rng.integers(0, width - side + 1))
    crop = photo[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return Image.fromarray(np.ascontiguousarray(crop)).resize(
        (size, size), Image.Resampling.LANCZOS
    )


def real_image(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> Image.Image:
    """A "real" demo image: a clean crop of a photograph."""
    return random_crop(rng, photos, size)


def fake_image(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> Image.Image:
    """A "fake" demo image: a crop rebuilt from half resolution with generator-like artifacts."""
    crop = random_crop(rng, photos, size)
    low = crop.resize((size // 2, size // 2), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        low = low.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.6, 1.2))))
    pixels = np.asarray(low.resize((size, size), Image.Resampling.NEAREST), dtype=np.float32)
    # A transposed convolution with stride 2 stamps the same 2x2 kernel over the whole image.
    # Zero-mean per channel so it adds pure stride-2 texture, scaled to a fixed strength.
    kernel = rng.normal(size=(2, 2, 3))
    kernel -= kernel.mean(axis=(0, 1))
    kernel *= float(rng.uniform(9.0, 14.0)) / np.sqrt((kernel**2).mean())
    pixels += np.tile(kernel, (size // 2, size // 2, 1))
    if rng.random() < 0.5:
        patch = int(size // 2)
        top, left = (int(value) for value in rng.integers(0, size - patch + 1, size=2))
        region = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).crop(
            (left, top, left + patch, top + patch)
        )
        smooth = np.asarray(region.filter(ImageFilter.GaussianBlur(radius=2.0)), np.float32)
        pixels[top : top + patch, left : left + patch] = smooth
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def encode(image: Image.Image, image_format: str) -> bytes:
    """The image's bytes as JPEG (fixed quality) or PNG."""
    buffer = io.BytesIO()
    if image_format == "JPEG":
        image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def _generator(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def cifake_members(
    photos: list[np.ndarray], counts: DemoCounts, seed: int
) -> Iterator[tuple[str, bytes]]:
    """Archive members laid out as Kaggle's CIFAKE: train|test/REAL|FAKE/*.jpg, 32x32 JPEGs."""
    for subset_index, (subset, count) in enumerate(
        (("train", counts.cifake_train), ("test", counts.cifake_test))
    ):
        for class_index, (folder, make) in enumerate((("FAKE", fake_image), ("REAL", real_image))):
            rng = _generator(seed, 2, subset_index, class_index)
            for index in range(count):
                # CIFAKE's own names look like "1000 (10).jpg"; keep the space and parentheses.
                name = f"{subset}/{folder}/{index} ({index % 10 + 1}).jpg"
                yield name, encode(make(rng, photos, CIFAKE_IMAGE_SIZE), "JPEG")
    # Kaggle's download carries macOS metadata files; the stages must skip them.
    yield "train/REAL/.DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(64)


def fake_or_real_members(
    photos: list[np.ndarray], counts: DemoCounts, seed: int
) -> Iterator[tuple[str, bytes]]:
    """Archive members laid out as the Fake-or-Real competition's: 64x64 PNGs.

    train/real_images, train/fake_images, an unlabelled test/images and
    test/sample_submission.csv.
    """
    size = FAKE_OR_REAL_IMAGE_SIZE
    for class_index, (folder, prefix, make) in enumerate(
        (("fake_images", "fake", fake_image), ("real_images", "real", real_image))
    ):
        rng = _generator(seed, 1, 0, class_index)
        for index in range(counts.fake_or_real_train):
            yield f"train/{folder}/{prefix}_{index:05d}.png", encode(make(rng, photos, size), "PNG")
    rng = _generator(seed, 1, 1)
    names = []
    for index in range(counts.fake_or_real_unlabelled_test):
        make = fake_image if rng.random() < 0.5 else real_image
        names.append(f"test_{index:05d}.png")
        yield f"test/images/{names[-1]}", encode(make(rng, photos, size), "PNG")
    rows = "".join(f"{name},0\n" for name in names)
    yield "test/sample_submission.csv", f"ImageId,Answer\n{rows}".encode()
