"""What the speed benchmarks measure besides training itself: the CPU and its feature flags,
TensorFlow's oneDNN state and thread pools, FLOP counts of the model and the matmul peak.

Training does not use these; `realfake.training.speed` holds what it does use (the fused Adam fast
path).
"""

import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import tensorflow as tf

from realfake.core.config import DEFAULT_BACKBONE


def onednn_enabled() -> bool:
    """True when this process's TensorFlow runs its oneDNN (MKL) kernels."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, or the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    """The CPU feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def configure_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """Set TensorFlow's thread pools; 0 keeps TensorFlow's choice. Call before any op runs."""
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of `model`, descending into nested models."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def forward_flops(model: keras.Model) -> int:
    """Multiply-add FLOPs (2 per multiply-accumulate) of one image's forward pass.

    Counts convolutions and dense layers, the work that the matrix-multiply peak measures;
    elementwise layers (batch normalization, activations, pooling, additions) are not counted.
    """
    total = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.Conv2D):
            height, width, channels_out = layer.output.shape[1:]
            kernel_height, kernel_width, channels_in, _ = layer.kernel.shape
            total += 2 * height * width * channels_out * kernel_height * kernel_width * channels_in
        elif isinstance(layer, keras.layers.Dense):
            inputs, outputs = layer.kernel.shape
            total += 2 * inputs * outputs
    return int(total)


def training_flops(model: keras.Model) -> int:
    """FLOPs of one image's training step: forward, plus gradients of inputs and of weights."""
    return 3 * forward_flops(model)


def matmul_peak(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> float:
    """Measured matrix-multiply rate in FLOP/s: the best of `repeats` timed size^3 products."""
    a = tf.random.uniform((size, size), dtype=dtype)
    b = tf.random.uniform((size, size), dtype=dtype)
    product = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    product(a, b).numpy()  # warm-up: tracing and oneDNN primitive creation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def onednn_setting() -> str:
    """The TF_ENABLE_ONEDNN_OPTS value this process started TensorFlow with, or 'unset'."""
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset")


def save_untrained_classifier(
    path: Path, image_size: int = 32, dense_units: int = 256, backbone: str = DEFAULT_BACKBONE
) -> Path:
    """A randomly initialised classifier saved with a card, as training saves one (threshold 0.5):
    it costs exactly what a trained one does, for benchmarks and test fixtures."""
    from realfake.inference.classifier import save_classifier
    from realfake.model import build_model, preprocessing_description

    card = {
        "class_names": ["Fake", "Real"],
        "positive_class": "Fake",
        "image_size": image_size,
        "backbone": backbone,
        "preprocessing": preprocessing_description("none"),
        "weights": "none",
        "threshold": 0.5,
    }
    model = build_model(
        image_size=image_size, weights="none", dense_units=dense_units, backbone=backbone
    )
    return save_classifier(model, card, Path(path))
