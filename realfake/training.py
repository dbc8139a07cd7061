"""Training machinery: the distribution strategy, compiling the classifier, and the callbacks that
stop, restore, re-estimate batch-norm statistics and checkpoint a run so that it can resume."""

import contextlib
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from realfake import speed
from realfake.config import CLASS_NAMES, POSITIVE_CLASS
from realfake.errors import PipelineError
from realfake.fileops import atomic_write_text
from realfake.inference import FAKE_INDEX, probability_fake, save_classifier


def select_strategy(name: str) -> tf.distribute.Strategy:
    """`default` (one device), `mirrored` (all visible GPUs), or `auto`: mirrored with 2+ GPUs."""
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise PipelineError(f"unknown strategy {name}: choose auto, default or mirrored")


def training_metrics() -> list[keras.metrics.Metric]:
    """Accuracy, and precision, recall, AUC and F1 with Fake as the positive class.

    The labels are one-hot rows, so F1Score gets the 2-D input it needs; it reports both classes
    and `FakeClassLogs` keeps Fake's value. AUC averages the per-column AUCs, which are equal for
    a two-way softmax, so it is the AUC of P(Fake).
    """
    return [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        keras.metrics.Precision(class_id=FAKE_INDEX, name="precision"),
        keras.metrics.Recall(class_id=FAKE_INDEX, name="recall"),
        keras.metrics.AUC(name="auc", multi_label=True, num_labels=len(CLASS_NAMES)),
        keras.metrics.F1Score(average=None, threshold=0.5, name="f1"),
    ]


@keras.saving.register_keras_serializable(package="realfake")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Rise linearly to `after(0)` over `warmup_steps` steps, then follow `after`, shifted.

    Large learning rates on a network trained from scratch diverge or stall in the first steps,
    while the batch statistics and the residual branches are still far from their working range.
    """

    def __init__(self, warmup_steps: int, after: keras.optimizers.schedules.LearningRateSchedule):
        self.warmup_steps = int(warmup_steps)
        self.after = after

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = float(self.warmup_steps)
        rising = self.after(0) * (step + 1.0) / warmup
        return keras.ops.where(
            step < warmup, rising, self.after(keras.ops.maximum(step - warmup, 0.0))
        )

    def get_config(self):
        return {
            "warmup_steps": self.warmup_steps,
            "after": keras.saving.serialize_keras_object(self.after),
        }

    @classmethod
    def from_config(cls, config):
        after = keras.saving.deserialize_keras_object(config["after"])
        return cls(config["warmup_steps"], after)


def learning_rate_schedule(
    learning_rate: float,
    end_learning_rate: float,
    decay_power: float,
    decay_steps: int,
    warmup_steps: int = 0,
) -> keras.optimizers.schedules.LearningRateSchedule:
    """PolynomialDecay from `learning_rate` to `end_learning_rate` over `decay_steps` steps in
    all; the first `warmup_steps` of them, if any, rise linearly to `learning_rate` instead."""
    warmup_steps = max(0, min(int(warmup_steps), decay_steps - 1))
    decay = keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate=learning_rate,
        decay_steps=max(1, decay_steps - warmup_steps),
        end_learning_rate=end_learning_rate,
        power=decay_power,
    )
    return LinearWarmup(warmup_steps, decay) if warmup_steps else decay


def compile_model(
    model: keras.Model,
    learning_rate: float,
    end_learning_rate: float,
    decay_power: float,
    decay_steps: int,
    warmup_steps: int = 0,
) -> None:
    """Adam with a polynomial learning-rate decay over `decay_steps` (after an optional linear
    warm-up, see `learning_rate_schedule`); binary cross-entropy.

    The loss is the binary cross-entropy of P(Fake), computed as categorical cross-entropy, which
    equals it exactly for one-hot labels and a two-way softmax. Keras's BinaryCrossentropy is not
    used because, under TensorFlow, it finds the logits cached on a softmax output and silently
    computes sigmoid cross-entropy of each logit instead: a different loss, whose value does not
    match the model's probabilities.
    """
    schedule = learning_rate_schedule(
        learning_rate, end_learning_rate, decay_power, decay_steps, warmup_steps
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=training_metrics(),
    )


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
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            if self.verbose:
                print(
                    f"restored the weights of epoch {self.best_epoch + 1} "
                    f"(lowest validation loss {self.best:.4f})",
                    file=sys.stderr,
                )
        if self.save_path is not None:
            Path(self.save_path).parent.mkdir(parents=True, exist_ok=True)
            self.model.save(self.save_path, include_optimizer=False)

    def state(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "stopped": self.stopped_epoch}

    def restore(self, state: dict, best_weights: list[np.ndarray] | None) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]
        self.stopped_epoch = state["stopped"]
        self.best_weights = best_weights
        self._restored = True


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on validation loss whose counters survive a resume."""

    def __init__(self, patience: int):
        super().__init__(monitor="val_loss", mode="min", patience=patience, verbose=1)
        self._resumed_state: dict | None = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resumed_state is not None:
            self.wait = self._resumed_state["wait"]
            self.best = self._resumed_state["best"]
            self.best_epoch = self._resumed_state["best_epoch"]

    def state(self) -> dict:
        return {"wait": self.wait, "best": self.best, "best_epoch": self.best_epoch}

    def restore(self, state: dict) -> None:
        self._resumed_state = state


class TrainingCheckpoint(keras.callbacks.Callback):
    """After every epoch, save what a resume needs: weights with optimizer state, the epoch,
    the stop and early-stopping state and the best weights so far. Each file is replaced
    atomically and state.json is written last, so a kill at any moment leaves a usable checkpoint.
    """

    def __init__(self, directory: Path, settings: dict, stopper, early_stopping, extra=None):
        super().__init__()
        self.directory = Path(directory)
        self.settings = settings
        self.stopper = stopper
        self.early_stopping = early_stopping
        self.extra = extra if extra is not None else {}
        self._epoch_started = 0.0
        self.seconds = float(self.extra.get("seconds", 0.0))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds += time.perf_counter() - self._epoch_started
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / ".last-partial.weights.h5"
        self.model.save_weights(temporary)
        os.replace(temporary, self.directory / "last.weights.h5")
        best_name = None
        if self.stopper.best_epoch is not None:
            best_name = f"best-epoch{self.stopper.best_epoch + 1}.npz"
            if not (self.directory / best_name).exists():
                temporary = self.directory / ".best-partial.npz"
                with open(temporary, "wb") as handle:
                    np.savez(handle, *self.stopper.best_weights)
                os.replace(temporary, self.directory / best_name)
        state = {
            "epoch": epoch,
            "settings": self.settings,
            "stop": self.stopper.state(),
            "early_stopping": self.early_stopping.state(),
            "stopped": bool(self.model.stop_training),
            "best_weights": best_name,
            "seconds": self.seconds,
        }
        atomic_write_text(self.directory / "state.json", json.dumps(state, indent=2) + "\n")
        for old in self.directory.glob("best-epoch*.npz"):
            if old.name != best_name:
                old.unlink()


def read_checkpoint(directory: Path) -> dict | None:
    """The state of the last checkpointed epoch in `directory`, or None."""
    try:
        return json.loads((Path(directory) / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_best_weights(directory: Path, state: dict) -> list[np.ndarray] | None:
    """The best weights saved with a checkpoint, or None before any epoch finished."""
    if not state.get("best_weights"):
        return None
    with np.load(Path(directory) / state["best_weights"]) as archive:
        return [archive[f"arr_{index}"] for index in range(len(archive.files))]


def restore_checkpoint(model: keras.Model, directory: Path) -> None:
    """Load the last checkpoint's weights and optimizer state into a compiled model."""
    model.optimizer.build(model.trainable_variables)
    model.load_weights(Path(directory) / "last.weights.h5")


def clear_checkpoint(directory: Path) -> None:
    """Remove a checkpoint folder (a fresh run, or a finished one), and its parent if that is
    left empty (the default runs/training leaves no empty runs/ behind)."""
    directory = Path(directory)
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty, or the working directory: leave it
        directory.parent.rmdir()


def settings_differences(saved: dict, current: dict) -> list[str]:
    """Names of settings that differ between a checkpoint and this run."""
    return sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))


def truncate_log(path: Path, first_epoch: int) -> None:
    """Drop CSV log rows of epochs >= first_epoch, written after the last checkpoint."""
    if not Path(path).is_file():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) < first_epoch]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(kept)


def run_settings(args) -> dict:
    """The settings that must match for --resume to continue a run."""
    names = (
        "data", "weights", "image_size", "batch_size", "epochs", "learning_rate",
        "end_learning_rate", "decay_power", "dense_units", "l2", "seed", "limit_per_class",
        "freeze_base", "augment", "grace_epochs", "patience", "bn_batches", "warmup_fraction",
        "zero_init_residual",
    )  # fmt: skip
    return {name: str(getattr(args, name)) for name in names}


def train(args) -> dict:
    """Train, choose the threshold, score the test split and write every output; see
    model_training.py for the arguments and the files written. Returns the model card."""
    from realfake.data import class_weights, load_splits, make_dataset
    from realfake.metrics import (
        choose_threshold,
        classification_metrics,
        format_metrics,
        plot_architecture,
        plot_confusion_matrix,
        plot_history,
        plot_roc,
        read_log,
        uncertain_band,
    )
    from realfake.model import build_model, preprocessing_description

    checkpoint_dir = Path(args.checkpoint_dir)
    metrics_dir = Path(args.metrics_dir)
    log_path = metrics_dir / "training_log.csv"
    settings = run_settings(args)
    state = read_checkpoint(checkpoint_dir)
    if args.resume:
        if state is None:
            raise PipelineError(
                f"nothing to resume: no checkpoint in {checkpoint_dir}; run without --resume"
            )
        differences = settings_differences(state["settings"], settings)
        if differences:
            raise PipelineError(
                "--resume needs the interrupted run's settings; these differ: "
                + ", ".join("--" + name.replace("_", "-") for name in differences)
            )
    else:
        clear_checkpoint(checkpoint_dir)
        state = None

    keras.utils.set_random_seed(args.seed)
    splits = load_splits(args.data, args.image_size, args.limit_per_class, args.seed, args.quiet)
    counts = {name: split.counts() for name, split in splits.items()}
    print(
        "images: "
        + "; ".join(
            f"{name} " + ", ".join(f"{cls} {n:,}" for cls, n in split_counts.items())
            for name, split_counts in counts.items()
        ),
        file=sys.stderr,
    )
    train_split = splits["train"]
    weights = class_weights(train_split.labels)
    steps_per_epoch = -(-len(train_split) // args.batch_size)

    strategy = select_strategy(args.strategy)
    with strategy.scope():
        model = build_model(
            image_size=args.image_size,
            weights=args.weights,
            dense_units=args.dense_units,
            l2=args.l2,
            freeze_base=args.freeze_base,
            zero_init_residual=args.zero_init_residual,
        )
        total_steps = steps_per_epoch * args.epochs
        compile_model(
            model,
            args.learning_rate,
            args.end_learning_rate,
            args.decay_power,
            decay_steps=total_steps,
            warmup_steps=round(args.warmup_fraction * total_steps),
        )

    stopper = StopTrainingOnValidationLoss(args.grace_epochs)
    early_stopping = ResumableEarlyStopping(args.patience)
    initial_epoch = 0
    if state is not None:
        with strategy.scope():
            restore_checkpoint(model, checkpoint_dir)
        initial_epoch = state["epoch"] + 1
        stopper.restore(state["stop"], load_best_weights(checkpoint_dir, state))
        early_stopping.restore(state["early_stopping"])
        truncate_log(log_path, initial_epoch)
        print(f"resuming after epoch {initial_epoch} from {checkpoint_dir}", file=sys.stderr)
    else:
        log_path.unlink(missing_ok=True)
    metrics_dir.mkdir(parents=True, exist_ok=True)

    train_data = make_dataset(
        train_split,
        args.batch_size,
        seed=args.seed,
        weights=weights,
        augment=args.augment,
        epochs=(initial_epoch, args.epochs),
    )
    validation_data = make_dataset(splits["validation"], args.batch_size)
    # The same shuffled batches every time, so resumed runs re-estimate statistics identically.
    batch_norm_images = make_dataset(
        train_split, args.batch_size, seed=args.seed + 1, epochs=(0, 1)
    ).map(lambda images, labels: images)
    checkpoint = TrainingCheckpoint(
        checkpoint_dir,
        settings,
        stopper,
        early_stopping,
        extra=state or {},
    )
    callbacks = [
        FakeClassLogs(),
        BatchNormRecalibration(batch_norm_images, min(args.bn_batches, steps_per_epoch)),
        stopper,
        early_stopping,
        keras.callbacks.CSVLogger(str(log_path), append=True),
        checkpoint,
    ]
    finished = state is not None and (state["stopped"] or initial_epoch >= args.epochs)
    if finished:
        stopper.set_model(model)
        stopper.on_train_end()
    else:
        verbose = 0 if args.quiet else (1 if sys.stdout.isatty() else 2)
        # The fast path changes only how Adam's update is computed, not what it computes.
        with speed.fast_path(model, enabled=args.fast_path):
            model.fit(
                train_data,
                validation_data=validation_data,
                epochs=args.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps_per_epoch,
                shuffle=False,  # the dataset shuffles itself, per epoch
                callbacks=callbacks,
                verbose=verbose,
            )
    final_state = read_checkpoint(checkpoint_dir) or {}
    epochs_run = final_state.get("epoch", -1) + 1
    training_seconds = checkpoint.seconds

    validation = splits["validation"]
    flip = args.test_time_flip
    validation_probability = probability_fake(model, validation.images, flip, args.batch_size)
    threshold = choose_threshold(validation.labels, validation_probability)
    validation_metrics = classification_metrics(
        validation.labels, validation_probability, threshold
    )
    test = splits["test"]
    test_probability = probability_fake(model, test.images, flip, args.batch_size)
    test_metrics = classification_metrics(test.labels, test_probability, threshold)
    print(f"validation: {format_metrics(validation_metrics)}", file=sys.stderr)
    print(f"test: {format_metrics(test_metrics)}", file=sys.stderr)

    plot_history(read_log(log_path), metrics_dir)
    plot_confusion_matrix(
        test.labels, test_probability, threshold, metrics_dir / "confusion_matrix.png"
    )
    plot_roc(test.labels, test_probability, metrics_dir / "roc_curve.png")
    plot_architecture(model, metrics_dir / "model_architecture.png")
    atomic_write_text(metrics_dir / "test_metrics.json", json.dumps(test_metrics, indent=2) + "\n")

    card = {
        "class_names": list(CLASS_NAMES),
        "positive_class": POSITIVE_CLASS,
        "image_size": args.image_size,
        "preprocessing": preprocessing_description(args.weights),
        "weights": args.weights,
        "threshold": threshold,
        "threshold_rule": "maximises balanced accuracy on the validation split",
        "uncertain_band": uncertain_band(validation.labels, validation_probability, threshold),
        "test_time_flip": flip,
        "training_data": counts,
        "test_metrics": test_metrics,
        "validation_metrics": validation_metrics,
        "training_seconds": round(training_seconds, 1),
        "images_per_second": round(
            len(train_split) * epochs_run / training_seconds if training_seconds else 0.0, 2
        ),
        "epochs_run": epochs_run,
        "best_epoch": None if stopper.best_epoch is None else stopper.best_epoch + 1,
        "settings": settings,
        "fast_path": args.fast_path,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    save_classifier(model, card, Path(args.model_path))
    clear_checkpoint(checkpoint_dir)
    card["train_images"] = len(train_split)
    return card
