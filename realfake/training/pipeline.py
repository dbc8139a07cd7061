"""Input data for training and evaluation: a split folder decoded once into a uint8 array, its
counts and class weights, and the tf.data pipelines that feed the model from that array."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realfake.core.config import CLASS_NAMES, ROBUSTNESS_AUGMENTATIONS, SEED, SPLITS
from realfake.core.errors import PipelineError
from realfake.core.images import list_images, load_rgb
from realfake.core.layout import class_folders
from realfake.core.progress import progress
from realfake.training.batch_augmentation import (
    augment_batch,
    augment_for_robustness,
    augmentation_layers,
    pad_and_crop,
)
from realfake.training.settings import parse_augment


@dataclass
class Split:
    """The decoded images of one split folder, their labels (Fake=0, Real=1) and file paths."""

    images: np.ndarray
    labels: np.ndarray
    paths: list[Path]

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Images per class name."""
        return {name: int(np.sum(self.labels == index)) for index, name in enumerate(CLASS_NAMES)}


def find_class_images(folder: Path, limit_per_class: int | None = None, seed: int = SEED):
    """List (path, label) for the images of a folder holding Fake/Real (or alias) sub-folders.

    With `limit_per_class`, a seeded random subset of that many images per class is kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PipelineError(f"data folder not found: {folder}")
    found = class_folders(folder)
    missing = [name for name in CLASS_NAMES if name not in found]
    if missing:
        raise PipelineError(
            f"{folder} has no {' or '.join(missing)} folder: expected sub-folders "
            f"{' and '.join(CLASS_NAMES)} (or aliases such as REAL/FAKE)"
        )
    rng = np.random.default_rng(seed)
    items: list[tuple[Path, int]] = []
    for label, name in enumerate(CLASS_NAMES):
        paths = list_images(found[name])
        if not paths:
            raise PipelineError(f"no images in {found[name]}")
        if limit_per_class is not None and len(paths) > limit_per_class:
            chosen = sorted(rng.choice(len(paths), size=limit_per_class, replace=False))
            paths = [paths[index] for index in chosen]
        items.extend((path, label) for path in paths)
    return items


def load_split(
    folder: Path,
    image_size: int,
    limit_per_class: int | None = None,
    seed: int = SEED,
    quiet: bool = False,
    description: str = "decode",
) -> Split:
    """Decode every image of a class-folder tree with `load_rgb` into one uint8 array."""
    items = find_class_images(folder, limit_per_class, seed)
    images = np.empty((len(items), image_size, image_size, 3), dtype=np.uint8)
    for index, (path, _) in enumerate(
        progress(items, total=len(items), description=description, quiet=quiet)
    ):
        try:
            images[index] = load_rgb(path, image_size)
        except Exception as error:  # Pillow raises many types for broken files
            raise PipelineError(f"cannot decode {path}: {error}") from None
    labels = np.array([label for _, label in items], dtype=np.int64)
    return Split(images, labels, [path for path, _ in items])


def check_split_folders(data_dir: Path) -> None:
    """Refuse, in one line, a data folder without train/, validation/ and test/."""
    missing = [split for split in SPLITS if not (Path(data_dir) / split).is_dir()]
    if missing:
        raise PipelineError(
            f"{data_dir} lacks {', '.join(missing)}: expected {data_dir}/"
            "{train,validation,test}/{Fake,Real} (made by the data split stage)"
        )


def load_splits(
    data_dir: Path,
    image_size: int,
    limit_per_class: int | None = None,
    seed: int = SEED,
    quiet: bool = False,
) -> dict[str, Split]:
    """Decode data_dir/{train,validation,test}; each must hold both classes."""
    data_dir = Path(data_dir)
    check_split_folders(data_dir)
    return {
        split: load_split(data_dir / split, image_size, limit_per_class, seed, quiet, split)
        for split in SPLITS
    }


def class_weights(labels: np.ndarray) -> dict[int, float] | None:
    """Weights n / (classes * n_class) that balance the loss, or None when classes are balanced."""
    counts = np.bincount(labels, minlength=len(CLASS_NAMES))
    if counts.min() == counts.max():
        return None
    if counts.min() == 0:
        raise PipelineError("the training data lacks a class")
    return {index: len(labels) / (len(counts) * int(count)) for index, count in enumerate(counts)}


def one_hot(labels: np.ndarray) -> np.ndarray:
    """Labels as float32 one-hot rows (the model's two softmax outputs)."""
    return np.eye(len(CLASS_NAMES), dtype=np.float32)[labels]


def make_dataset(
    split: Split,
    batch_size: int,
    seed: int = SEED,
    weights: dict[int, float] | None = None,
    augment: str | None = None,
    epochs: tuple[int, int] | None = None,
    robustness_probability: float = 0.1,
):
    """A tf.data pipeline of (float32 pixels 0-255, one-hot labels[, sample weights]) batches.

    The decoded uint8 array is the cache: each epoch only shuffles, casts and batches it. With
    `epochs=(first, last)` the batches of epochs first..last-1 follow one another, each epoch in
    an order fixed by (seed, epoch), so a resumed run sees exactly the batches an uninterrupted
    one would have seen. Without it, one pass in file order. `augment` names the training-batch
    transforms, comma-separated (`realfake.training.settings.parse_augment`): at most one of
    `augmentation_layers`' modes, `crop` (`pad_and_crop`), and `jpeg`, `blur` and `downscale`
    (`realfake.training.batch_augmentation.augment_for_robustness`, each image with its family's
    probability, `robustness_probability` where none is written); all drawn per (seed, epoch,
    batch) likewise. None: none.

    Long because the per-epoch pipeline is built from closures over the split, the plan and the
    seed that tf.data traces; as separate functions each would need all of them passed in.
    """
    import tensorflow as tf

    plan = parse_augment(augment, robustness_probability)
    jpeg, blur, downscale = (plan.probability(name) for name in ROBUSTNESS_AUGMENTATIONS)
    # Made here, not inside the pipeline's traced functions, which cannot create variables.
    transforms = augmentation_layers(plan.layer_mode) if plan.layer_mode else []
    tensors = [split.images, one_hot(split.labels)]
    if weights is not None:
        tensors.append(np.array([weights[int(label)] for label in split.labels], np.float32))
    examples = tf.data.Dataset.from_tensor_slices(tuple(tensors))

    def cast(images, *rest):
        return (tf.cast(images, tf.float32), *rest)

    def batches_of_epoch(epoch, shuffle: bool):
        order_seed = tf.constant(seed, tf.int64) * 1_000_003 + epoch
        ordered = examples.shuffle(len(split), seed=order_seed) if shuffle else examples
        batches = ordered.batch(batch_size)
        if jpeg or blur or downscale:

            def degrade(index, batch):  # on the uint8 pixels, as a messenger or a site would
                images, *rest = batch
                seed_pair = tf.stack([order_seed, -1 - index])  # apart from the flips' seeds
                degraded = augment_for_robustness(
                    images, seed_pair, jpeg, blur, downscale_probability=downscale
                )
                return (degraded, *rest)

            batches = batches.enumerate().map(degrade, num_parallel_calls=tf.data.AUTOTUNE)
        batches = batches.map(cast, num_parallel_calls=tf.data.AUTOTUNE)
        if not transforms and not plan.crop:
            return batches

        def apply(index, batch):
            images, *rest = batch
            seed_pair = tf.stack([order_seed, index])
            if transforms:
                images = augment_batch(images, transforms, seed_pair)
            if plan.crop:
                crop_seed = tf.random.experimental.stateless_fold_in(seed_pair, 5)
                images = pad_and_crop(images, crop_seed)
            return (images, *rest)

        return batches.enumerate().map(apply, num_parallel_calls=tf.data.AUTOTUNE)

    if epochs is None:
        dataset = batches_of_epoch(tf.constant(0, tf.int64), shuffle=False)
    else:
        dataset = tf.data.Dataset.range(*epochs).flat_map(
            lambda epoch: batches_of_epoch(epoch, shuffle=True)
        )
    return dataset.prefetch(tf.data.AUTOTUNE)
