"""Robustness: how a classifier's answers hold up when its images are re-encoded as JPEG, blurred,
made noisy or down-scaled, and the same JPEG re-encoding and blur as training augmentation.

The report scores every perturbed copy of a labelled set at the model card's threshold, which is
never re-chosen per perturbation (the fixed-threshold protocol: a deployed model does not know
which damage an upload suffered). Perturbations act on the decoded model-size uint8 images, the
pixels the model sees, and each is deterministic: the same images and level give the same output.

The training augmentation is TensorFlow ops for the tf.data input pipeline, seeded statelessly,
with the ranges CNNDetection (Wang et al. 2020) trains with: JPEG quality 30-100, blur sigma 0-3.
"""

import io
import math
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from realfake.cli import progress
from realfake.config import SEED
from realfake.inference import FAKE_INDEX

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

JPEG_QUALITY_RANGE = (30, 100)  # training augmentation, both ends included
BLUR_SIGMA_RANGE = (0.0, 3.0)
DOWNSCALE_SIDE_RANGE = (12, 32)  # both ends included; a side at the image's own size keeps it
# (down, up, antialias): the resampling filters Pillow and TensorFlow use. Pillow's bilinear and
# bicubic widen their kernel when they shrink (antialias); TensorFlow's area averages boxes.
DOWNSCALE_FILTERS = (
    ("nearest", "nearest", False),
    ("bilinear", "bilinear", True),
    ("bicubic", "bicubic", True),
    ("area", "bilinear", False),
    ("bilinear", "bilinear", False),
)
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


# The report.


def subset_indices(labels: np.ndarray, per_class: int | None, seed: int = SEED) -> np.ndarray:
    """Sorted indices of a seeded random subset of at most `per_class` images of each class."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        if len(members) > per_class:
            members = rng.choice(members, size=per_class, replace=False)
        chosen.append(members)
    return np.sort(np.concatenate(chosen))


def robustness_row(
    perturbation: Perturbation,
    labels: np.ndarray,
    probability_fake: np.ndarray,
    threshold: float,
) -> dict:
    """Accuracy, AUC and both error rates of one perturbed set at the given (card's) threshold."""
    # Here, not at the top: the app reads FAMILIES without loading matplotlib and scikit-learn.
    from realfake.metrics import classification_metrics, predicted_fake

    labels = np.asarray(labels)
    is_fake = labels == FAKE_INDEX
    says_fake = predicted_fake(probability_fake, threshold)
    metrics = classification_metrics(labels, probability_fake, threshold)
    return {
        "family": perturbation.family,
        "level": perturbation.level,
        "perturbation": perturbation.describe(),
        "accuracy": metrics["accuracy"],
        "auc": metrics["auc"],
        "real_called_fake": float(np.mean(says_fake[~is_fake])) if (~is_fake).any() else math.nan,
        "fake_called_real": float(np.mean(~says_fake[is_fake])) if is_fake.any() else math.nan,
        "images": int(len(labels)),
    }


def robustness_report(
    classifier,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int = 64,
    seed: int = SEED,
    quiet: bool = False,
) -> list[dict]:
    """One row per perturbation (clean first), scored through the classifier at its threshold."""
    rows = perturbations(classifier.image_size)
    report = []
    for perturbation, perturbed in progress(
        perturbed_sets(images, rows, seed),
        total=len(rows),
        description="robustness",
        unit="row",
        quiet=quiet,
    ):
        probability_fake = classifier.probability_fake(perturbed, batch_size)
        report.append(robustness_row(perturbation, labels, probability_fake, classifier.threshold))
    return report


def format_table(rows: list[dict]) -> str:
    """The rows as an aligned text table, percentages for the rates."""
    header = ("perturbation", "accuracy", "AUC", "Real called Fake", "Fake called Real")
    lines = [f"{header[0]:<22}{header[1]:>9}{header[2]:>8}{header[3]:>18}{header[4]:>18}"]
    for row in rows:
        lines.append(
            f"{row['perturbation']:<22}{row['accuracy']:>9.1%}{row['auc']:>8.3f}"
            f"{row['real_called_fake']:>18.1%}{row['fake_called_real']:>18.1%}"
        )
    return "\n".join(lines)


def summary_lines(rows: list[dict]) -> list[str]:
    """One line per family for the model card: 'JPEG: 96% clean -> 51% at quality 10'."""
    clean = next((row for row in rows if row["family"] == CLEAN), None)
    lines = []
    for family, (title, _, level_text, _) in FAMILIES.items():
        family_rows = [row for row in rows if row["family"] == family]
        if not family_rows:
            continue
        severest = family_rows[-1]
        start = f"{clean['accuracy']:.0%} clean -> " if clean else ""
        level = level_text.format(format_level(severest["level"]))
        lines.append(f"{title}: {start}{severest['accuracy']:.0%} at {level}")
    return lines


def plot_robustness(rows: list[dict], path: Path, title: str) -> Path:
    """Accuracy against severity step, one line per family starting from the clean accuracy (its
    levels in order in the legend), and the 50% chance line."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    clean = next((row for row in rows if row["family"] == CLEAN), None)
    figure, axes = plt.subplots(figsize=(7.5, 4.8))
    markers = iter("osD^v<>")
    for family, (family_title, _, level_text, _) in FAMILIES.items():
        family_rows = [row for row in rows if row["family"] == family]
        if not family_rows:
            continue
        levels = ", ".join(format_level(row["level"]) for row in family_rows)
        points = [(0, clean["accuracy"])] if clean is not None else []
        points += [(step, row["accuracy"]) for step, row in enumerate(family_rows, start=1)]
        steps, accuracies = zip(*points, strict=True)
        axes.plot(
            steps,
            [100 * accuracy for accuracy in accuracies],
            marker=next(markers),
            label=f"{family_title} ({level_text.format(levels)})",
        )
    axes.axhline(50, linestyle="--", color="grey", label="chance (50%)")
    axes.set_xlabel("severity step (0 = clean images, then each family's levels in legend order)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("accuracy at the card's threshold (%)")
    axes.set_ylim(0, 105)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# Training augmentation: TensorFlow ops on uint8 batches, seeded statelessly.


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


def downscale_and_back(images, sides, filters):
    """uint8 images (n, h, w, c), image k shrunk to sides[k] x sides[k] and enlarged back to
    h x w with the filter pair DOWNSCALE_FILTERS[filters[k]], rounded to uint8."""
    import tensorflow as tf

    height, width = images.shape[1], images.shape[2]

    def resize_back(image, side, down, up, antialias):
        small = tf.image.resize(image[None], tf.stack([side, side]), down, antialias=antialias)
        return tf.image.resize(small, [height, width], up)[0]

    def one(arguments):
        image, side, choice = arguments
        pixels = tf.cast(image, tf.float32)
        branches = [
            (lambda down=down, up=up, aa=aa: resize_back(pixels, side, down, up, aa))
            for down, up, aa in DOWNSCALE_FILTERS
        ]
        return tf.switch_case(choice, branches)

    resized = tf.map_fn(
        one,
        (images, sides, filters),
        fn_output_signature=tf.TensorSpec([height, width, images.shape[3]], tf.float32),
    )
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def augment_for_robustness(
    images,
    seed,
    jpeg_probability: float = 0.0,
    blur_probability: float = 0.0,
    jpeg_quality_range: tuple[int, int] = JPEG_QUALITY_RANGE,
    blur_sigma_range: tuple[float, float] = BLUR_SIGMA_RANGE,
    downscale_probability: float = 0.0,
    downscale_side_range: tuple[int, int] = DOWNSCALE_SIDE_RANGE,
):
    """uint8 images (n, h, w, 3) or one (h, w, 3), each blurred with probability
    `blur_probability` (sigma uniform in `blur_sigma_range`, default 0-3), then down-scaled and
    enlarged back with probability `downscale_probability` (side uniform in
    `downscale_side_range`, both ends included, default 12-32, filter uniform among
    DOWNSCALE_FILTERS), then re-encoded as JPEG with probability `jpeg_probability` (quality
    uniform in `jpeg_quality_range`, both ends included, default 30-100): blur and JPEG in the
    order CNNDetection uses, a resize between them as a site would do before re-compressing.

    `seed` is a shape-[2] integer tensor; the same images and seed give the same output, and each
    image draws its own decisions, sigma, side, filter and quality from it.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    single = images.shape.rank == 3
    if single:
        images = images[None]
    count = tf.shape(images)[0]
    blur_seed, blur_choice_seed, jpeg_seed, jpeg_choice_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
    )
    if blur_probability > 0:
        low, high = blur_sigma_range
        sigma = tf.random.stateless_uniform([count], blur_seed, low, high)
        chosen = tf.random.stateless_uniform([count], blur_choice_seed) < blur_probability
        # Only the chosen images go through the kernel: at probability 0.1 that is a tenth of
        # the work, and the blur is the costlier of the two.
        where = tf.where(chosen)
        blurred = gaussian_blur(
            tf.gather_nd(images, where),
            tf.gather_nd(sigma, where),
            reach=math.ceil(KERNEL_REACH * high),
        )
        images = tf.tensor_scatter_nd_update(images, where, blurred)
    if downscale_probability > 0:
        # Its own seeds, folded from the batch's: the blur's and JPEG's draws stay as they were.
        side_seed, filter_seed, choice_seed = tf.unstack(
            tf.random.experimental.stateless_split(
                tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 3), num=3
            )
        )
        low, high = downscale_side_range
        sides = tf.random.stateless_uniform([count], side_seed, low, high + 1, dtype=tf.int32)
        filters = tf.random.stateless_uniform(
            [count], filter_seed, 0, len(DOWNSCALE_FILTERS), dtype=tf.int32
        )
        chosen = tf.random.stateless_uniform([count], choice_seed) < downscale_probability
        where = tf.where(chosen)
        resized = downscale_and_back(
            tf.gather_nd(images, where), tf.gather_nd(sides, where), tf.gather_nd(filters, where)
        )
        images = tf.tensor_scatter_nd_update(images, where, resized)
    if jpeg_probability > 0:
        low, high = jpeg_quality_range
        quality = tf.random.stateless_uniform([count], jpeg_seed, low, high + 1, dtype=tf.int32)
        chosen = tf.random.stateless_uniform([count], jpeg_choice_seed) < jpeg_probability

        def reencode(arguments):
            image, image_quality, image_chosen = arguments
            return tf.cond(
                image_chosen,
                lambda: tf.reshape(
                    tf.image.adjust_jpeg_quality(image, image_quality), tf.shape(image)
                ),
                lambda: image,
            )

        images = tf.map_fn(
            reencode,
            (images, quality, chosen),
            fn_output_signature=tf.TensorSpec(images.shape[1:], tf.uint8),
        )
    return images[0] if single else images
