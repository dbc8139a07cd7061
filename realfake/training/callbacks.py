"""The Keras callbacks of a training run: scalar F1 in the logs, batch-norm re-estimation before
validation, the two stopping rules, progress lines for logs that are not a terminal, and the
per-epoch checkpoint. Each stopping rule keeps its own state and hands it over with `state()` /
`restore()`; the checkpoint gathers those into one `realfake.training.checkpoint.ResumeState`."""

import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from realfake.core.errors import PipelineError
from realfake.inference.classifier import FAKE_INDEX


class FakeClassLogs(keras.callbacks.Callback):
    """Replace the per-class F1 arrays in the logs by Fake's value, so logs stay scalars.

    Must come first in the callback list: later callbacks (CSV log, progress bar) see the change.
    """

    def on_epoch_end(self, epoch, logs=None):
        for key in ("f1", "val_f1"):
            if logs is not None and key in logs and np.ndim(logs[key]) > 0:
                logs[key] = float(np.asarray(logs[key])[FAKE_INDEX])


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """Every BatchNormalization layer of the model, nested models included, that is trainable."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


def recalibrate_batch_norm(model, images, batches: int, cache=None) -> int:
    """Set every trainable BN layer's moving statistics to their mean over `batches` batches.

    An exponential average with momentum 1 - 1/n, started from zero and divided by its total
    weight 1 - momentum^n, is an almost even average over the n batches; it lets Keras's own
    update do the work inside one compiled forward pass. Returns the number of batches used.
    """
    layers = batch_norm_layers(model)
    if batches <= 0 or not layers:
        return 0
    momentum = 1.0 - 1.0 / batches
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = momentum
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.zeros(layer.moving_variance.shape, np.float32))
    forward = getattr(cache, "_forward", None)
    if forward is None:
        # Traced once with this momentum; later calls reuse the graph, so it must not change.
        forward = tf.function(lambda x: model(x, training=True))
        if cache is not None:
            cache._forward = forward
    used = 0
    for batch in images.take(batches):
        forward(batch)
        used += 1
    total_weight = 1.0 - momentum**used
    for layer, old in zip(layers, saved, strict=True):
        layer.moving_mean.assign(layer.moving_mean / total_weight)
        layer.moving_variance.assign(layer.moving_variance / total_weight)
        layer.momentum = old
    return used


class BatchNormRecalibration(keras.callbacks.Callback):
    """Re-estimate batch-norm moving statistics from training batches before every validation.

    The moving averages kept during training (momentum 0.99) trail far behind weights that change
    fast, so the model in inference mode scores much worse than in training mode. Here each
    layer's moving mean and variance are set to the average of the batch statistics of `batches`
    training batches, computed with the current weights in training mode and no weight update.
    """

    def __init__(self, images, batches: int):
        super().__init__()
        self.images = images  # a tf.data dataset of pixel batches
        self.batches = batches
        self._forward = None

    def on_test_begin(self, logs=None):
        recalibrate_batch_norm(self.model, self.images, self.batches, self)


class AveragedWeightsForValidation(keras.callbacks.Callback):
    """Validate, and let the stopping rules judge and keep, the optimizer's exponential moving
    average of the weights (`use_ema`) instead of the last step's weights.

    Goes first among the callbacks: before validation (`on_test_begin`) it keeps the trained
    weights aside and puts the averages in, so the batch-norm re-estimation that follows measures
    the statistics of the averaged weights. Call `restore_trained` (through `RestoreTrained`)
    after the stopping rules have seen the epoch and before the checkpoint, so that training and
    a resumed run go on from the trained weights, not the average.
    """

    def __init__(self):
        super().__init__()
        self._trained: list[np.ndarray] | None = None

    def on_test_begin(self, logs=None):
        optimizer = self.model.optimizer
        if not getattr(optimizer, "use_ema", False) or self._trained is not None:
            return
        variables = self.model.trainable_variables
        self._trained = [variable.numpy() for variable in variables]
        optimizer._overwrite_model_variables_with_average_value(variables)

    def restore_trained(self) -> None:
        if self._trained is None:
            return
        for variable, value in zip(self.model.trainable_variables, self._trained, strict=True):
            variable.assign(value)
        self._trained = None


class RestoreTrained(keras.callbacks.Callback):
    """At the end of each epoch, give the trained weights back (`AveragedWeightsForValidation`)."""

    def __init__(self, averaged: AveragedWeightsForValidation):
        super().__init__()
        self.averaged = averaged

    def on_epoch_end(self, epoch, logs=None):
        self.averaged.restore_trained()


class StopTrainingOnValidationLoss(keras.callbacks.Callback):
    """Stop when validation loss exceeds training loss, after `grace_epochs` epochs.

    Keeps the weights of the epoch with the lowest validation loss, puts them back into the model
    when training ends (however it ends) and, given `save_path`, saves that model there.
    """

    def __init__(self, grace_epochs: int = 3, save_path: Path | None = None, verbose: bool = True):
        super().__init__()
        self.grace_epochs = grace_epochs
        self.save_path = save_path
        self.verbose = verbose
        self._restored = False
        self.reset()

    def reset(self) -> None:
        self.best = float("inf")
        self.best_epoch: int | None = None
        self.best_weights: list[np.ndarray] | None = None
        self.stopped_epoch: int | None = None

    def on_train_begin(self, logs=None):
        if not self._restored:
            self.reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if "val_loss" not in logs:
            raise PipelineError("StopTrainingOnValidationLoss needs validation data")
        loss, val_loss = float(logs["loss"]), float(logs["val_loss"])
        if val_loss < self.best:
            self.best, self.best_epoch = val_loss, epoch
            self.best_weights = self.model.get_weights()
        if epoch + 1 > self.grace_epochs and val_loss > loss:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(
                    f"epoch {epoch + 1}: validation loss {val_loss:.4f} exceeds training loss "
                    f"{loss:.4f}; stopping",
                    file=sys.stderr,
                )

    def on_train_end(self, logs=None):
        self.restore_best_weights(self.model)
        if self.save_path is not None:
            Path(self.save_path).parent.mkdir(parents=True, exist_ok=True)
            self.model.save(self.save_path, include_optimizer=False)

    def restore_best_weights(self, model: keras.Model) -> None:
        """Put the weights of the epoch with the lowest validation loss into `model`."""
        if self.best_weights is None:
            return
        model.set_weights(self.best_weights)
        if self.verbose:
            print(
                f"restored the weights of epoch {self.best_epoch + 1} "
                f"(lowest validation loss {self.best:.4f})",
                file=sys.stderr,
            )

    def state(self) -> dict:
        """What a resume needs besides the best weights (which travel as arrays)."""
        return {"best": self.best, "best_epoch": self.best_epoch, "stopped": self.stopped_epoch}

    def restore(self, state: dict, best_weights: list[np.ndarray] | None) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.stopped_epoch = state["stopped"]
        self.best_weights = best_weights
        self._restored = True


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on validation loss whose counters survive a resume."""

    def __init__(self, patience: int, verbose: int = 1):
        super().__init__(monitor="val_loss", mode="min", patience=patience, verbose=verbose)
        self._resumed_state: dict | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resumed_state is not None:
            self.wait = self._resumed_state["wait"]
            self.best = self._resumed_state["best"]
            self.best_epoch = self._resumed_state["best_epoch"]

    def state(self) -> dict:
        return {"wait": self.wait, "best": float(self.best), "best_epoch": self.best_epoch}

    def restore(self, state: dict) -> None:
        self._resumed_state = state


class ProgressLog(keras.callbacks.Callback):
    """Print 'epoch 1/9: 12,800/63,174 images, 92 images/s, loss 0.41' every `interval` seconds.

    Keras's own line for logs that are not a terminal (verbose=2) comes once per epoch, which is
    tens of minutes apart on a CPU; a log that says nothing for that long looks like a hang.
    """

    def __init__(
        self,
        epochs: int,
        images_per_epoch: int,
        batch_size: int,
        interval: float = 60.0,
        stream=None,
        clock: Callable[[], float] = time.monotonic,
    ):
        super().__init__()
        self.epochs = epochs
        self.images_per_epoch = images_per_epoch
        self.batch_size = batch_size
        self.interval = interval
        self.stream = stream
        self.clock = clock
        self._epoch = 0
        self._epoch_started = 0.0
        self._last_line = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_started = self._last_line = self.clock()

    def on_train_batch_end(self, batch, logs=None):
        now = self.clock()
        if now - self._last_line < self.interval:
            return
        self._last_line = now
        images = min((batch + 1) * self.batch_size, self.images_per_epoch)
        elapsed = now - self._epoch_started
        rate = images / elapsed if elapsed > 0 else 0.0
        loss = (logs or {}).get("loss")
        line = (
            f"epoch {self._epoch + 1}/{self.epochs}: {images:,}/{self.images_per_epoch:,} images, "
            f"{rate:,.0f} images/s"
        )
        if loss is not None:
            line += f", loss {float(loss):.4g}"
        print(line, file=self.stream or sys.stderr, flush=True)


class EpochCheckpoint(keras.callbacks.Callback):
    """After every epoch, call `save(epoch, seconds)`, which writes the run's whole resume state
    as one checkpoint; this callback only times the epochs (seconds of training so far, resumed
    runs included), so no callback reads another's internals."""

    def __init__(self, save: Callable[[int, float], None], seconds: float = 0.0):
        super().__init__()
        self.save = save
        self.seconds = float(seconds)
        self._epoch_started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._epoch_started
        self.save(epoch, self.seconds)
