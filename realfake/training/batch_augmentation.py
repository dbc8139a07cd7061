"""Training-batch augmentation, TensorFlow ops seeded statelessly per (run seed, epoch, batch), so
a resumed run augments exactly as the uninterrupted one: mirror images and shifts
(`augmentation_layers`), whole-pixel crops (`pad_and_crop`), and the damage of the robustness
families (`augment_for_robustness`: blur, down-scale and back, JPEG re-encoding), with the ranges
CNNDetection (Wang et al. 2020) trains with for blur and JPEG. `realfake.training.pipeline` builds
the input pipeline from them.
"""

import math

from realfake.core.config import AUGMENTATIONS, SEED
from realfake.core.errors import PipelineError
from realfake.evaluation.perturbations import KERNEL_REACH, gaussian_blur

CROP_PADDING = 4  # pixels, as CIFAR training pads (He et al. 2016)
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


def augmentation_layers(mode: str = "flip-shift", seed: int = SEED):
    """The random transforms applied to training batches only (not part of the model).

    `flip`: horizontal mirror images, which keep every pixel value, so the fine traces that tell
    generated images apart survive. `flip-shift` adds shifts of up to 10%, whose sub-pixel
    resampling blurs those traces.
    """
    from keras import layers

    if mode not in AUGMENTATIONS:
        raise PipelineError(f"unknown augmentation {mode}: choose {' or '.join(AUGMENTATIONS)}")
    transforms = [layers.RandomFlip("horizontal", seed=seed)]
    if mode == "flip-shift":
        transforms.append(layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed + 1))
    return transforms


def augment_batch(images, transforms, seed):
    """Apply the `augmentation_layers` transforms to one batch with random draws made from the
    stateless seed `seed` (two integers), so the same (run seed, epoch, batch) always gets the
    same flips and shifts.

    Keras's layers draw from a generator whose state lives in the input pipeline: it restarts
    with every process (a resumed run would augment differently) and parallel batches race for
    it. So the draws are made here and the layers only apply them (`transform_images`).
    """
    import tensorflow as tf

    count = tf.shape(images)[0]
    flip_seed, height_seed, width_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=3)
    )
    mirrored = tf.random.stateless_uniform([count], seed=flip_seed) < 0.5  # RandomFlip
    images = tf.where(mirrored[:, None, None, None], tf.image.flip_left_right(images), images)
    for shift in transforms[1:]:  # RandomTranslation: fractions of the height and the width
        height, width = (tf.cast(tf.shape(images)[axis], tf.float32) for axis in (1, 2))
        down = tf.random.stateless_uniform(
            [count, 1], height_seed, minval=shift.height_lower, maxval=shift.height_upper
        )
        right = tf.random.stateless_uniform(
            [count, 1], width_seed, minval=shift.width_lower, maxval=shift.width_upper
        )
        translations = tf.concat([right * width, down * height], axis=1)  # Keras's (x, y) order
        images = shift.transform_images(
            images, {"translations": translations, "input_shape": tf.shape(images)}, training=True
        )
    return images


def pad_and_crop(images, seed, padding: int = CROP_PADDING):
    """A batch (n, h, w, c) with each image shifted by whole pixels: padded with `padding` black
    pixels on every side and cropped back to h x w at an offset drawn from the stateless `seed`
    (two integers). No pixel is resampled, so the fine traces of a generator survive."""
    import tensorflow as tf

    count = tf.shape(images)[0]
    height, width = images.shape[1], images.shape[2]
    row_seed, column_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    )
    top = tf.random.stateless_uniform([count, 1], row_seed, 0, 2 * padding + 1, dtype=tf.int32)
    left = tf.random.stateless_uniform([count, 1], column_seed, 0, 2 * padding + 1, dtype=tf.int32)
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    rows = tf.gather(padded, top + tf.range(height)[None], axis=1, batch_dims=1)
    return tf.gather(rows, left + tf.range(width)[None], axis=2, batch_dims=1)


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


def _blur_some(images, sigma_seed, choice_seed, probability: float, sigma_range):
    """Blur each image of the batch with `probability`, sigma uniform in `sigma_range`."""
    import tensorflow as tf

    count = tf.shape(images)[0]
    low, high = sigma_range
    sigma = tf.random.stateless_uniform([count], sigma_seed, low, high)
    chosen = tf.random.stateless_uniform([count], choice_seed) < probability
    # Only the chosen images go through the kernel: at probability 0.1 that is a tenth of
    # the work, and the blur is the costlier of the two.
    where = tf.where(chosen)
    blurred = gaussian_blur(
        tf.gather_nd(images, where),
        tf.gather_nd(sigma, where),
        reach=math.ceil(KERNEL_REACH * high),
    )
    return tf.tensor_scatter_nd_update(images, where, blurred)


def _downscale_some(images, seed, probability: float, side_range):
    """Down-scale and enlarge back each image of the batch with `probability`, the side uniform
    in `side_range` (both ends included) and the filter uniform among DOWNSCALE_FILTERS."""
    import tensorflow as tf

    count = tf.shape(images)[0]
    # Its own seeds, folded from the batch's: the blur's and JPEG's draws stay as they were.
    side_seed, filter_seed, choice_seed = tf.unstack(
        tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 3), num=3
        )
    )
    low, high = side_range
    sides = tf.random.stateless_uniform([count], side_seed, low, high + 1, dtype=tf.int32)
    filters = tf.random.stateless_uniform(
        [count], filter_seed, 0, len(DOWNSCALE_FILTERS), dtype=tf.int32
    )
    chosen = tf.random.stateless_uniform([count], choice_seed) < probability
    where = tf.where(chosen)
    resized = downscale_and_back(
        tf.gather_nd(images, where), tf.gather_nd(sides, where), tf.gather_nd(filters, where)
    )
    return tf.tensor_scatter_nd_update(images, where, resized)


def _reencode_some(images, quality_seed, choice_seed, probability: float, quality_range):
    """Re-encode each image of the batch as JPEG with `probability`, the quality uniform in
    `quality_range` (both ends included)."""
    import tensorflow as tf

    count = tf.shape(images)[0]
    low, high = quality_range
    quality = tf.random.stateless_uniform([count], quality_seed, low, high + 1, dtype=tf.int32)
    chosen = tf.random.stateless_uniform([count], choice_seed) < probability

    def reencode(arguments):
        image, image_quality, image_chosen = arguments
        return tf.cond(
            image_chosen,
            lambda: tf.reshape(tf.image.adjust_jpeg_quality(image, image_quality), tf.shape(image)),
            lambda: image,
        )

    return tf.map_fn(
        reencode,
        (images, quality, chosen),
        fn_output_signature=tf.TensorSpec(images.shape[1:], tf.uint8),
    )


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
    blur_seed, blur_choice_seed, jpeg_seed, jpeg_choice_seed = tf.unstack(
        tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
    )
    if blur_probability > 0:
        images = _blur_some(images, blur_seed, blur_choice_seed, blur_probability, blur_sigma_range)
    if downscale_probability > 0:
        images = _downscale_some(images, seed, downscale_probability, downscale_side_range)
    if jpeg_probability > 0:
        images = _reencode_some(
            images, jpeg_seed, jpeg_choice_seed, jpeg_probability, jpeg_quality_range
        )
    return images[0] if single else images
