"""The classifier, defined once: ResNet101 without its top, then the specified head.

Preprocessing lives inside the model, so every caller feeds raw 0-255 RGB pixels, and the saved
model uses only built-in Keras layers (it loads with plain `keras.models.load_model`).
"""

import re
from pathlib import Path

import keras
from keras import layers

from realfake.config import CLASS_NAMES, IMAGE_SIZE
from realfake.errors import PipelineError

# ResNet's `preprocess_input` ("caffe" mode) flips RGB to BGR and subtracts these means (BGR order).
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
BASE_NAME = "resnet101"
# The last batch norm of each residual branch: conv2_block1_3_bn ... conv5_block3_3_bn.
RESIDUAL_BRANCH_END = re.compile(r"conv\d_block\d+_3_bn")


IMAGENET_WEIGHTS_FILE = "resnet101_weights_tf_dim_ordering_tf_kernels_notop.h5"
OFFLINE_MESSAGE = (
    "cannot download the ImageNet weights for ResNet101 (no internet?): use --weights none to "
    f"train from scratch, or --weights PATH with a local copy of {IMAGENET_WEIGHTS_FILE}"
)


def imagenet_weights_path() -> Path:
    """Keras's ResNet101 ImageNet weights without top: the cached file, downloaded once."""
    from keras.src.applications.resnet import BASE_WEIGHTS_PATH, WEIGHTS_HASHES

    try:
        return Path(
            keras.utils.get_file(
                IMAGENET_WEIGHTS_FILE,
                BASE_WEIGHTS_PATH + IMAGENET_WEIGHTS_FILE,
                cache_subdir="models",
                file_hash=WEIGHTS_HASHES["resnet101"][1],
            )
        )
    except Exception:  # no network surfaces as several exception types
        raise PipelineError(OFFLINE_MESSAGE) from None


def _imagenet_base(image_size: int, weights: str) -> keras.Model:
    """ResNet101 without top, loaded with ImageNet weights or a local weights file."""
    try:
        return keras.applications.ResNet101(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
        )
    except Exception as error:  # download failures surface as several exception types
        if weights != "imagenet":
            raise PipelineError(f"cannot load ResNet101 weights from {weights}: {error}") from None
        raise PipelineError(OFFLINE_MESSAGE) from None


def preprocessing_description(weights: str) -> str:
    """How the model maps raw pixels to the base's input, for the model card."""
    if weights == "none":
        return "raw RGB 0-255 in; inside the model: x / 127.5 - 1"
    return "raw RGB 0-255 in; inside the model: ResNet caffe preprocessing (BGR, mean subtracted)"


def build_model(
    image_size: int = IMAGE_SIZE,
    weights: str = "none",
    dense_units: int = 256,
    l2: float = 1e-4,
    dropout: float = 0.4,
    noise_stddev: float = 0.1,
    freeze_base: bool = False,
    zero_init_residual: bool = False,
) -> keras.Model:
    """Build the uncompiled ResNet101 classifier.

    Args:
        image_size: side of the square RGB input; ResNet101 accepts 32 and up.
        weights: "none" (random initialisation), "imagenet", or a path to a ResNet101 weights
            file without top (ImageNet preprocessing is then used).
        dense_units: width of the ReLU layer in the head.
        l2: L2 regularization factor of that layer's kernel.
        dropout: dropout rate after it.
        noise_stddev: standard deviation of the Gaussian noise added to the base's feature maps
            during training.
        freeze_base: keep the base's weights fixed (feature extraction).
        zero_init_residual: start the last batch-norm scale (gamma) of every residual branch at
            zero, so each block begins as the identity (Goyal et al., 2017); random weights only.
    """
    if image_size < 32:
        raise PipelineError(f"image size {image_size} is too small: ResNet101 needs at least 32")
    if weights != "none" and weights != "imagenet" and not Path(weights).is_file():
        raise PipelineError(f"weights file not found: {weights}")

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    if zero_init_residual and weights != "none":
        raise PipelineError("zero-initialised residual branches need --weights none")
    if weights == "none":
        base = keras.applications.ResNet101(
            include_top=False, weights=None, input_shape=(image_size, image_size, 3)
        )
        if zero_init_residual:
            for layer in base.layers:
                if RESIDUAL_BRANCH_END.fullmatch(layer.name):
                    layer.gamma.assign(keras.ops.zeros_like(layer.gamma))
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
    else:
        base = _imagenet_base(image_size, weights)
        # The RGB->BGR flip of preprocess_input is folded into conv1's kernel (its input channels
        # reversed), which is exact and leaves only a per-channel mean subtraction to do here.
        conv1 = base.get_layer("conv1_conv")
        conv1.kernel.assign(conv1.kernel.numpy()[:, :, ::-1, :])
        x = layers.Normalization(
            mean=list(reversed(IMAGENET_MEAN_BGR)), variance=[1.0, 1.0, 1.0], name="preprocess"
        )(inputs)
    base.name = BASE_NAME
    base.trainable = not freeze_base

    x = base(x)
    x = layers.GaussianNoise(noise_stddev, name="gaussian_noise")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(
        dense_units,
        activation="relu",
        kernel_regularizer=keras.regularizers.L2(l2),
        name="dense",
    )(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(
        len(CLASS_NAMES), activation="softmax", dtype="float32", name="predictions"
    )(x)
    return keras.Model(inputs, outputs, name="ai_real_image_classifier_resnet101")
