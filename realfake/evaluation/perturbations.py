"""Damage an image suffers on its way to a page: JPEG re-encoding, blur, noise and down-scaling,
each a family of levels from mild to severe, applied to decoded uint8 batches.

Each perturbation is deterministic: the same images and level give the same output. The
robustness report (`realfake.evaluation.robustness`) scores a model on these; the page names them
with `FAMILIES` and `format_level`; the Gaussian blur is shared with training augmentation
(`realfake.training.batch_augmentation`).
"""

import io
import math
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from PIL import Image

from realfake.core.config import SEED

CLEAN = "clean"


class Family(NamedTuple):
    """A kind of damage: its name, how one of its rows and one of its levels read, its levels."""

    title: str
    row_text: str
    level_text: str
    levels: tuple[float, ...]  # from mild to severe


FAMILIES: dict[str, Family] = {
    "jpeg": Family("JPEG", "JPEG quality {}", "quality {}", (95, 90, 75, 60, 40, 25, 10)),
    "blur": Family("blur", "blur sigma {}", "sigma {}", (0.5, 1.0, 1.5, 2.0)),
    "noise": Family("noise", "noise sigma {}", "sigma {}", (2, 4, 8, 16)),
    "downscale": Family("down-scale", "down-scale to {} px", "{} px", (24, 16, 12)),
}

# The Gaussian kernel reaches three standard deviations; the tails beyond hold 0.3% of its weight.
KERNEL_REACH = 3.0


@dataclass(frozen=True)
class Perturbation:
    """One row of the report: a family and its level (None for the clean images)."""

    family: str
    level: float | None = None

    def describe(self) -> str:
        """Words for the table: 'JPEG quality 75', 'blur sigma 1.5', 'down-scale to 16 px'."""
        if self.family == CLEAN:
            return CLEAN
        return FAMILIES[self.family].row_text.format(format_level(self.level))


def format_level(level: float | None) -> str:
    """A level as written in tables: whole numbers without a decimal point."""
    if level is None:
        return ""
    return f"{level:g}" if float(level).is_integer() else f"{level:.1f}"


def perturbations(image_size: int) -> list[Perturbation]:
    """The clean images first, then every family's levels from mild to severe.

    Down-scale sides at or above the model's input size are left out: they would not shrink.
    """
    rows = [Perturbation(CLEAN)]
    for family, (_, _, _, levels) in FAMILIES.items():
        for level in levels:
            if family == "downscale" and level >= image_size:
                continue
            rows.append(Perturbation(family, level))
    return rows


# Perturbations of decoded uint8 batches (n, side, side, 3), for the report.


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """Each image encoded as JPEG at this quality with Pillow, in memory, and decoded again."""
    output = np.empty_like(images)
    for index, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            output[index] = np.asarray(decoded.convert("RGB"))
    return output


def gaussian_noise(images: np.ndarray, sigma: float, seed: int = SEED) -> np.ndarray:
    """Each image plus Gaussian noise of this standard deviation (0-255 scale), rounded and clipped.

    Image k's noise comes from (seed, k, sigma) alone, so it does not depend on the batch order
    or on which other images are scored.
    """
    output = np.empty_like(images)
    level = int(round(float(sigma) * 1000))
    for index, image in enumerate(images):
        rng = np.random.default_rng([seed, index, level])
        noisy = image.astype(np.float64) + rng.normal(0.0, float(sigma), image.shape)
        output[index] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return output


def downscale(images: np.ndarray, side: int) -> np.ndarray:
    """Each image shrunk to side x side and enlarged back to its own size, bilinearly (the way
    images are resized when decoded)."""
    output = np.empty_like(images)
    height, width = images.shape[1:3]
    for index, image in enumerate(images):
        small = Image.fromarray(image).resize((int(side), int(side)), Image.Resampling.BILINEAR)
        output[index] = np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))
    return output


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    """Each image blurred with a Gaussian of this standard deviation in pixels (see
    `gaussian_blur`, which training augmentation shares)."""
    return gaussian_blur(images, float(sigma)).numpy()


def perturb(images: np.ndarray, perturbation: Perturbation, seed: int = SEED) -> np.ndarray:
    """The batch under one perturbation; the clean row returns the images themselves."""
    family, level = perturbation.family, perturbation.level
    if family == CLEAN:
        return images
    if family == "jpeg":
        return jpeg(images, int(level))
    if family == "blur":
        return blur(images, level)
    if family == "noise":
        return gaussian_noise(images, level, seed)
    if family == "downscale":
        return downscale(images, int(level))
    raise ValueError(f"unknown perturbation family {family!r}")


def perturbed_sets(
    images: np.ndarray,
    rows: Iterable[Perturbation],
    seed: int = SEED,
    ahead: int = 2,
) -> Iterator[tuple[Perturbation, np.ndarray]]:
    """(perturbation, perturbed images) in order, the next `ahead` prepared in threads meanwhile.

    Pillow's codecs and TensorFlow release the interpreter lock, so the next sets are made while
    the caller's model scores the current one; at most `ahead` sets wait in memory.
    """
    pending: deque = deque()
    remaining = iter(rows)
    with ThreadPoolExecutor(max_workers=ahead) as pool:

        def submit_next() -> None:
            for perturbation in remaining:
                pending.append((perturbation, pool.submit(perturb, images, perturbation, seed)))
                return

        for _ in range(ahead):
            submit_next()
        while pending:
            perturbation, future = pending.popleft()
            submit_next()
            yield perturbation, future.result()


def gaussian_blur(images, sigma, reach: int | None = None):
    """uint8 images (n, h, w, c) or one (h, w, c) blurred with a Gaussian of standard deviation
    `sigma` pixels: a scalar, or one per image. Sigma 0 returns the image unchanged.

    The kernel is separable: a vertical then a horizontal pass of shifted copies weighted by each
    image's own kernel, edges mirrored, so one batch can mix sigmas and the batch size may be
    unknown (the last batch of a tf.data pipeline). `reach` is the kernel's half-width in pixels
    (default: three of the largest sigmas, which must then be a Python number or constant).
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[None]
    count = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    sigma = tf.broadcast_to(tf.cast(sigma, tf.float32), [count])
    if reach is None:
        reach = int(math.ceil(KERNEL_REACH * float(tf.get_static_value(tf.reduce_max(sigma)))))
    reach = max(0, min(int(reach), height - 1, width - 1))
    offsets = tf.range(-reach, reach + 1, dtype=tf.float32)
    # A tiny sigma makes a one-tap kernel: exactly the identity, so sigma 0 changes nothing.
    spread = tf.maximum(sigma, 1e-3)[:, None]
    kernel = tf.exp(-0.5 * tf.square(offsets[None, :] / spread))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)
    weights = kernel[:, :, None, None, None]  # (n, taps, 1, 1, 1), broadcast over pixels

    pixels = tf.cast(images, tf.float32)
    padded = tf.pad(pixels, [[0, 0], [reach, reach], [0, 0], [0, 0]], mode="SYMMETRIC")
    pixels = tf.add_n(
        [weights[:, tap] * padded[:, tap : tap + height] for tap in range(2 * reach + 1)]
    )
    padded = tf.pad(pixels, [[0, 0], [0, 0], [reach, reach], [0, 0]], mode="SYMMETRIC")
    pixels = tf.add_n(
        [weights[:, tap] * padded[:, :, tap : tap + width] for tap in range(2 * reach + 1)]
    )
    blurred = tf.cast(tf.clip_by_value(tf.round(pixels), 0, 255), tf.uint8)
    return blurred[0] if single else blurred
