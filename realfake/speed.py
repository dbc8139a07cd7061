"""Training speed on CPU: oneDNN state, thread settings, FLOP counts, the matmul peak, and a fast
path that keeps the model's mathematics and its saved form.

The fast path swaps the class of a compiled model's stock Adam optimizer for a subclass whose
update is one fused TensorFlow kernel per variable. The subclass adds no variables and no config,
and `remove_fast_path` swaps the class back, so the model saved afterwards is a plain Keras model.
"""

import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager

import keras
import tensorflow as tf


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


def has_gpu() -> bool:
    """True when TensorFlow sees a GPU, where the stock kernels are kept."""
    return bool(tf.config.list_physical_devices("GPU"))


def configure_threads(intra_op: int = 0, inter_op: int = 0) -> None:
    """Set TensorFlow's thread pools; 0 keeps TensorFlow's choice. Call before any op runs."""
    if intra_op:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    if inter_op:
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def _handle(variable):
    """The resource handle of a Keras or TensorFlow variable."""
    if isinstance(variable, keras.Variable):
        variable = variable.value
    return variable.handle


class FusedAdam(keras.optimizers.Adam):
    """Adam whose per-variable update is TensorFlow's single ResourceApplyAdam kernel.

    Keras 3 updates each variable with about a dozen elementwise ops, each a full pass over
    memory; for ResNet101's 43 million weights that is a large share of a CPU training step. The
    kernel computes the same formula in one pass:
    m += (g - m)(1 - beta_1), v += (g^2 - v)(1 - beta_2),
    w -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon).
    AMSGrad and sparse gradients keep the stock update.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        local_step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, local_step),
            beta2_power=tf.pow(beta_2, local_step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


def _all_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of `model`, descending into nested models."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def apply_fast_path(model: keras.Model, force: bool = False) -> bool:
    """Switch a compiled model's stock Adam to FusedAdam, in place; True when switched.

    Nothing changes on a GPU, where the stock kernels are kept (unless `force`), nor for any
    other optimizer. The optimizer keeps its variables and config; call `remove_fast_path`
    before saving so the saved model names only built-in Keras classes.
    """
    optimizer = getattr(model, "optimizer", None)
    if type(optimizer) is not keras.optimizers.Adam or (has_gpu() and not force):
        return False
    optimizer.__class__ = FusedAdam
    model.train_function = None  # a step traced before the switch would keep the stock update
    return True


def remove_fast_path(model: keras.Model) -> bool:
    """Switch FusedAdam back to stock Adam, so the model saves as plain Keras; True if switched."""
    optimizer = getattr(model, "optimizer", None)
    if type(optimizer) is not FusedAdam:
        return False
    optimizer.__class__ = keras.optimizers.Adam
    model.train_function = None
    return True


@contextmanager
def fast_path(model: keras.Model, enabled: bool = True) -> Iterator[bool]:
    """Run a block (training) with the fast path on, and always leave the model plain after."""
    switched = apply_fast_path(model) if enabled else False
    try:
        yield switched
    finally:
        remove_fast_path(model)


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
