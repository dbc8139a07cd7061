"""The classifier, defined once: a base network without its top, then the specified head.

The base is a parameter (`backbone`): Keras's ResNet101 (the reference), ResNet50 or ResNet152,
or "tiny", a small residual net of a few thousand parameters built from the same kinds of layers,
for tests and quick demos. The base is nested in the model as one layer named after its backbone.

Preprocessing lives inside the model, so every caller feeds raw 0-255 RGB pixels, and the saved
model uses only built-in Keras layers (it loads with plain `keras.models.load_model`).
"""

import re
from pathlib import Path

import keras
from keras import layers

from realfake.core.config import BACKBONES, CLASS_NAMES, DEFAULT_BACKBONE, IMAGE_SIZE
from realfake.core.errors import PipelineError

# ResNet's `preprocess_input` ("caffe" mode) flips RGB to BGR and subtracts these means (BGR order).
IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
# The reference backbone, and so the name of the base layer inside the reference model.
BASE_NAME = DEFAULT_BACKBONE
# The last batch norm of each residual branch: conv2_block1_3_bn ... conv5_block3_3_bn.
RESIDUAL_BRANCH_END = re.compile(r"conv\d_block\d+_3_bn")
# The Keras application behind each ResNet backbone, and the name messages use for each backbone.
RESNETS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152"}
DISPLAY_NAMES = {**RESNETS, "tiny": "the tiny residual net"}
# Side of the smallest input: every base halves it five times.
MIN_IMAGE_SIZE = 32
# The tiny base's stages as (channels, stride): with its stem's two halvings the input is halved
# five times, as in ResNet, so its feature map has ResNet's side at every input size.
TINY_STAGES = ((8, 1), (8, 2), (16, 2), (16, 2))


def imagenet_weights_file(backbone: str = DEFAULT_BACKBONE) -> str:
    """The file name of Keras's ImageNet weights without top for a ResNet backbone."""
    return f"{backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5"


def offline_message(backbone: str = DEFAULT_BACKBONE) -> str:
    """What to do when the ImageNet weights of `backbone` cannot be downloaded."""
    return (
        f"cannot download the ImageNet weights for {RESNETS[backbone]} (no internet?): use "
        "--weights none to train from scratch, or --weights PATH with a local copy of "
        f"{imagenet_weights_file(backbone)}"
    )


def check_backbone(backbone: str, weights: str = "none") -> None:
    """Refuse an unknown backbone, and pretrained weights for one that has none."""
    if backbone not in BACKBONES:
        raise PipelineError(f"unknown backbone {backbone}: choose {', '.join(BACKBONES)}")
    if backbone not in RESNETS and weights != "none":
        raise PipelineError(
            f"the {backbone} backbone has no pretrained weights: use --weights none"
        )


def imagenet_weights_path(backbone: str = DEFAULT_BACKBONE) -> Path:
    """Keras's ImageNet weights without top for a ResNet backbone: the cached file, downloaded
    once."""
    from keras.src.applications.resnet import BASE_WEIGHTS_PATH, WEIGHTS_HASHES

    check_backbone(backbone, "imagenet")
    try:
        return Path(
            keras.utils.get_file(
                imagenet_weights_file(backbone),
                BASE_WEIGHTS_PATH + imagenet_weights_file(backbone),
                cache_subdir="models",
                file_hash=WEIGHTS_HASHES[backbone][1],
            )
        )
    except Exception:  # no network surfaces as several exception types
        raise PipelineError(offline_message(backbone)) from None


def _resnet_base(backbone: str, image_size: int, weights: str | None) -> keras.Model:
    """A Keras ResNet without top: random (weights None), ImageNet, or a local weights file."""
    application = getattr(keras.applications, RESNETS[backbone])
    try:
        return application(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3)
        )
    except Exception as error:  # download failures surface as several exception types
        if weights is None:
            raise
        if weights != "imagenet":
            raise PipelineError(
                f"cannot load {RESNETS[backbone]} weights from {weights}: {error}"
            ) from None
        raise PipelineError(offline_message(backbone)) from None


def _tiny_block(x, channels: int, stride: int, name: str):
    """A bottleneck residual block named as ResNet names its blocks (its last batch norm is
    `<name>_3_bn`), with a projection shortcut where the shape changes."""
    shortcut = x
    if stride != 1 or x.shape[-1] != channels:
        shortcut = layers.Conv2D(channels, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_0_bn")(shortcut)
    width = channels // 2
    y = layers.Conv2D(width, 1, strides=stride, name=f"{name}_1_conv")(x)
    y = layers.BatchNormalization(name=f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.Conv2D(width, 3, padding="same", name=f"{name}_2_conv")(y)
    y = layers.BatchNormalization(name=f"{name}_2_bn")(y)
    y = layers.Activation("relu", name=f"{name}_2_relu")(y)
    y = layers.Conv2D(channels, 1, name=f"{name}_3_conv")(y)
    y = layers.BatchNormalization(name=f"{name}_3_bn")(y)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.Activation("relu", name=f"{name}_out")(y)


def _tiny_base(image_size: int) -> keras.Model:
    """ResNet's shape in miniature: a strided stem, max pooling, then one bottleneck block per
    stage, so that batch norm, residual branches and the feature map behave as in the real one."""
    inputs = keras.Input(shape=(image_size, image_size, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="conv1_conv")(inputs)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="pool1_pool")(x)
    for stage, (channels, stride) in enumerate(TINY_STAGES, start=2):
        x = _tiny_block(x, channels, stride, name=f"conv{stage}_block1")
    return keras.Model(inputs, x, name="tiny")


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
    backbone: str = DEFAULT_BACKBONE,
) -> keras.Model:
    """Build the uncompiled classifier: the backbone's base, then the head.

    Long because it is one linear recipe, kept whole so the layer stack reads top to bottom in one
    place; a third of it is this Args list.

    Args:
        image_size: side of the square RGB input; every backbone accepts 32 and up.
        weights: "none" (random initialisation), "imagenet", or a path to the ResNet backbone's
            weights file without top (ImageNet preprocessing is then used); "tiny" has only
            "none".
        dense_units: width of the ReLU layer in the head.
        l2: L2 regularization factor of that layer's kernel.
        dropout: dropout rate after it.
        noise_stddev: standard deviation of the Gaussian noise added to the base's feature maps
            during training.
        freeze_base: keep the base's weights fixed (feature extraction).
        zero_init_residual: start the last batch-norm scale (gamma) of every residual branch at
            zero, so each block begins as the identity (Goyal et al., 2017); random weights only.
        backbone: one of config.BACKBONES; the base layer inside the model carries its name.
    """
    check_backbone(backbone, weights)
    name = DISPLAY_NAMES[backbone]
    if image_size < MIN_IMAGE_SIZE:
        raise PipelineError(
            f"image size {image_size} is too small: {name} needs at least {MIN_IMAGE_SIZE}"
        )
    if weights != "none" and weights != "imagenet" and not Path(weights).is_file():
        raise PipelineError(f"weights file not found: {weights}")

    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    if zero_init_residual and weights != "none":
        raise PipelineError("zero-initialised residual branches need --weights none")
    if weights == "none":
        if backbone in RESNETS:
            base = _resnet_base(backbone, image_size, None)
        else:
            base = _tiny_base(image_size)
        if zero_init_residual:
            for layer in base.layers:
                if RESIDUAL_BRANCH_END.fullmatch(layer.name):
                    layer.gamma.assign(keras.ops.zeros_like(layer.gamma))
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="preprocess")(inputs)
    else:
        base = _resnet_base(backbone, image_size, weights)
        # The RGB->BGR flip of preprocess_input is folded into conv1's kernel (its input channels
        # reversed), which is exact and leaves only a per-channel mean subtraction to do here.
        conv1 = base.get_layer("conv1_conv")
        conv1.kernel.assign(conv1.kernel.numpy()[:, :, ::-1, :])
        x = layers.Normalization(
            mean=list(reversed(IMAGENET_MEAN_BGR)), variance=[1.0, 1.0, 1.0], name="preprocess"
        )(inputs)
    base.name = backbone
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
    return keras.Model(inputs, outputs, name=f"ai_real_image_classifier_{backbone}")
