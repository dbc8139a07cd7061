"""Training speed on CPU: a fast path that keeps the model's mathematics and its saved form.

The fast path swaps the class of a compiled model's stock Adam optimizer for a subclass whose
update is one fused TensorFlow kernel per variable. The subclass adds no variables and no config,
and `remove_fast_path` swaps the class back, so the model saved afterwards is a plain Keras model.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import keras
import tensorflow as tf


def has_gpu() -> bool:
    """True when TensorFlow sees a GPU, where the stock kernels are kept."""
    return bool(tf.config.list_physical_devices("GPU"))


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
