"""Training a classifier from a `TrainingConfig`, in three steps with one job each: `prepare`
(resume policy, data, model, checkpoint restore), `fit` (the epochs, with their callbacks and a
checkpoint after each) and `score_and_report` (threshold, test metrics, plots, the saved model and
its card). The callbacks live in `realfake.training.callbacks`, the checkpoint in
`realfake.training.checkpoint`."""

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import keras
import tensorflow as tf

from realfake.core.config import CLASS_NAMES, DEFAULT_BACKBONE
from realfake.core.errors import PipelineError
from realfake.core.fileops import atomic_write_text
from realfake.data.merging import trained_on
from realfake.inference.classifier import FAKE_INDEX, probability_fake, save_classifier
from realfake.inference.modelcard import training_card
from realfake.training import speed
from realfake.training.callbacks import (
    AveragedWeightsForValidation,
    BatchNormRecalibration,
    EpochCheckpoint,
    FakeClassLogs,
    ProgressLog,
    RestoreTrained,
    ResumableEarlyStopping,
    StopTrainingOnValidationLoss,
)
from realfake.training.checkpoint import (
    ResumeState,
    clear_checkpoint,
    load_checkpoint,
    restore_model,
    save_checkpoint,
)
from realfake.training.settings import TrainingConfig, run_settings


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
    label_smoothing: float = 0.0,
    weight_decay: float = 0.0,
    ema_momentum: float = 0.0,
) -> None:
    """Adam with a polynomial learning-rate decay over `decay_steps` (after an optional linear
    warm-up, see `learning_rate_schedule`); binary cross-entropy.

    `weight_decay` > 0 makes it AdamW: each step shrinks every kernel by learning rate x
    weight_decay, apart from the gradient (Loshchilov & Hutter 2019); batch-norm scales and
    offsets and biases are not decayed. `label_smoothing` moves the targets from 0 and 1 towards
    each other by half its value. `ema_momentum` > 0 keeps an exponential moving average of
    the weights with that momentum (`AveragedWeightsForValidation` validates and keeps it).

    The loss is the binary cross-entropy of P(Fake), computed as categorical cross-entropy, which
    equals it exactly for one-hot labels and a two-way softmax. Keras's BinaryCrossentropy is not
    used because, under TensorFlow, it finds the logits cached on a softmax output and silently
    computes sigmoid cross-entropy of each logit instead: a different loss, whose value does not
    match the model's probabilities.
    """
    schedule = learning_rate_schedule(
        learning_rate, end_learning_rate, decay_power, decay_steps, warmup_steps
    )
    # Keras's Adam takes decoupled weight decay itself (AdamW is Adam with it required), so the
    # optimizer stays a stock Adam and keeps the fast path.
    optimizer = keras.optimizers.Adam(
        learning_rate=schedule,
        weight_decay=weight_decay or None,
        use_ema=ema_momentum > 0,
        ema_momentum=ema_momentum or 0.99,
    )
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=training_metrics(),
    )


def settings_differences(saved: dict, current: dict) -> list[str]:
    """Names of settings that differ between a checkpoint and this run."""
    return sorted(key for key in set(saved) | set(current) if saved.get(key) != current.get(key))


def truncate_log(path: Path, first_epoch: int) -> None:
    """Drop CSV log rows of epochs >= first_epoch, written after the last checkpoint, and a last
    row cut short by a kill."""
    if not Path(path).is_file():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [
        row
        for row in rows[1:]
        if len(row) == len(rows[0]) and row[0].isdigit() and int(row[0]) < first_epoch
    ]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(kept)


def say(message: str) -> None:
    """One line about what the run is doing, on stderr, shown at once."""
    print(message, file=sys.stderr, flush=True)


@dataclass
class TrainingRun:
    """A prepared run: its data, compiled model, callbacks' state and where it resumes."""

    config: TrainingConfig
    settings: dict
    splits: dict
    model: keras.Model
    strategy: tf.distribute.Strategy
    stopper: StopTrainingOnValidationLoss
    early_stopping: ResumableEarlyStopping
    log_path: Path
    resumed: ResumeState | None = None  # the checkpoint this run continues from
    seconds: float = 0.0  # of training so far, earlier sessions included
    epochs_run: int = 0

    @property
    def initial_epoch(self) -> int:
        return 0 if self.resumed is None else self.resumed.epoch + 1

    @property
    def finished(self) -> bool:
        """Whether the resumed checkpoint already ends the run (stopped, or all epochs done)."""
        return self.resumed is not None and (
            self.resumed.stopped or self.initial_epoch >= self.config.epochs
        )


def checkpoint_to_resume(config: TrainingConfig, settings: dict):
    """The checkpoint to continue from (state, folder), or None for a fresh run, which also
    clears any old checkpoint; refuses a resume without a checkpoint or with other settings."""
    checkpoint_dir = Path(config.checkpoint_dir)
    if not config.resume:
        clear_checkpoint(checkpoint_dir)
        return None
    found = load_checkpoint(checkpoint_dir)
    if found is None:
        raise PipelineError(
            f"nothing to resume: no checkpoint in {checkpoint_dir}; run without --resume"
        )
    # Checkpoints written before the backbone was a setting are ResNet101's.
    saved = {"backbone": DEFAULT_BACKBONE, **found[0].settings}
    differences = settings_differences(saved, settings)
    if differences:
        raise PipelineError(
            "--resume needs the interrupted run's settings; these differ: "
            + ", ".join("--" + name.replace("_", "-") for name in differences)
        )
    return found


def base_weights(weights: str, backbone: str = DEFAULT_BACKBONE) -> str:
    """What build_model should load: ImageNet weights become the local file (downloaded once),
    so that a missing network or a backbone without such weights fails now, in one line, not
    after minutes of decoding."""
    from realfake.model import check_backbone, imagenet_weights_path

    check_backbone(backbone, weights)
    if weights != "imagenet":
        return weights
    return str(imagenet_weights_path(backbone))


def build_and_compile(
    config: TrainingConfig, weights: str, steps_per_epoch: int, strategy: tf.distribute.Strategy
) -> keras.Model:
    """The classifier the config describes, compiled with its schedule, under `strategy`."""
    from realfake.model import build_model

    with strategy.scope():
        model = build_model(
            image_size=config.image_size,
            weights=weights,
            dense_units=config.dense_units,
            l2=config.l2,
            freeze_base=config.freeze_base,
            zero_init_residual=config.zero_init_residual,
            backbone=config.backbone,
        )
        total_steps = steps_per_epoch * config.epochs
        compile_model(
            model,
            config.learning_rate,
            config.end_learning_rate,
            config.decay_power,
            decay_steps=total_steps,
            warmup_steps=round(config.warmup_fraction * total_steps),
            label_smoothing=config.label_smoothing,
            weight_decay=config.weight_decay,
            ema_momentum=config.ema_momentum,
        )
    return model


def restore_run(run: TrainingRun, state, folder: Path) -> None:
    """Put back everything a checkpoint holds: weights, optimizer, stopping state, the clock."""
    with run.strategy.scope():
        restore_model(run.model, folder, state)
    run.stopper.restore(state.stop, state.best_weights)
    run.early_stopping.restore(state.early_stopping)
    run.resumed, run.seconds, run.epochs_run = state, state.seconds, state.epoch + 1
    truncate_log(run.log_path, run.initial_epoch)
    say(f"resuming after epoch {run.initial_epoch} from {run.config.checkpoint_dir}")


def prepare(config: TrainingConfig) -> TrainingRun:
    """Check the resume policy and the weights, decode the splits, build and compile the model
    and, when resuming, restore everything the checkpoint holds."""
    from realfake.model import DISPLAY_NAMES
    from realfake.training.pipeline import check_split_folders, load_splits

    settings = run_settings(config)
    found = checkpoint_to_resume(config, settings)
    check_split_folders(config.data)
    weights = base_weights(config.weights, config.backbone)

    keras.utils.set_random_seed(config.seed)
    say(f"decoding the images of {config.data} at {config.image_size}x{config.image_size}")
    splits = load_splits(
        config.data, config.image_size, config.limit_per_class, config.seed, config.quiet
    )
    say(
        "images: "
        + "; ".join(
            f"{name} " + ", ".join(f"{cls} {n:,}" for cls, n in split.counts().items())
            for name, split in splits.items()
        )
    )
    steps_per_epoch = -(-len(splits["train"]) // config.batch_size)
    say(f"building {DISPLAY_NAMES[config.backbone]} (weights: {config.weights}) and its head")
    strategy = select_strategy(config.strategy)
    model = build_and_compile(config, weights, steps_per_epoch, strategy)
    run = TrainingRun(
        config=config,
        settings=settings,
        splits=splits,
        model=model,
        strategy=strategy,
        stopper=StopTrainingOnValidationLoss(config.grace_epochs),
        early_stopping=ResumableEarlyStopping(config.patience),
        log_path=Path(config.metrics_dir) / "training_log.csv",
    )
    if found is None:
        run.log_path.unlink(missing_ok=True)
    else:
        restore_run(run, *found)
    Path(config.metrics_dir).mkdir(parents=True, exist_ok=True)
    return run


def checkpoint_saver(run: TrainingRun):
    """The function the epoch checkpoint calls: gather the run's state into one ResumeState."""

    def save(epoch: int, seconds: float) -> None:
        run.seconds, run.epochs_run = seconds, epoch + 1
        state = ResumeState(
            settings=run.settings,
            epoch=epoch,
            seconds=seconds,
            stopped=bool(run.model.stop_training),
            stop=run.stopper.state(),
            early_stopping=run.early_stopping.state(),
            best_weights=run.stopper.best_weights,
        )
        save_checkpoint(run.config.checkpoint_dir, run.model, state)

    return save


def fit(run: TrainingRun) -> None:
    """Train the remaining epochs with a checkpoint after each, then put the best epoch's
    weights back into the model."""
    from realfake.training.pipeline import class_weights, make_dataset

    config, train_split = run.config, run.splits["train"]
    if not run.finished:
        steps_per_epoch = -(-len(train_split) // config.batch_size)
        train_data = make_dataset(
            train_split,
            config.batch_size,
            seed=config.seed,
            weights=class_weights(train_split.labels),
            augment=config.augment,
            robustness_probability=config.robustness_probability,
            epochs=(run.initial_epoch, config.epochs),
        )
        validation_data = make_dataset(run.splits["validation"], config.batch_size)
        # The same shuffled batches every time, so resumed runs re-estimate statistics identically.
        batch_norm_images = make_dataset(
            train_split, config.batch_size, seed=config.seed + 1, epochs=(0, 1)
        ).map(lambda images, labels: images)
        averaged = AveragedWeightsForValidation()  # does nothing without --ema-momentum
        callbacks = [
            FakeClassLogs(),
            averaged,
            BatchNormRecalibration(batch_norm_images, min(config.bn_batches, steps_per_epoch)),
            run.stopper,
            run.early_stopping,
            RestoreTrained(averaged),
            keras.callbacks.CSVLogger(str(run.log_path), append=True),
            EpochCheckpoint(checkpoint_saver(run), seconds=run.seconds),
        ]
        on_terminal = sys.stdout.isatty()
        if not config.quiet and not on_terminal:
            callbacks.append(
                ProgressLog(
                    config.epochs, len(train_split), config.batch_size, config.progress_seconds
                )
            )
        say(f"training epochs {run.initial_epoch + 1}-{config.epochs}")
        # The fast path changes only how Adam's update is computed, not what it computes.
        with speed.fast_path(run.model, enabled=config.fast_path):
            run.model.fit(
                train_data,
                validation_data=validation_data,
                epochs=config.epochs,
                initial_epoch=run.initial_epoch,
                steps_per_epoch=steps_per_epoch,
                shuffle=False,  # the dataset shuffles itself, per epoch
                callbacks=callbacks,
                verbose=0 if config.quiet else (1 if on_terminal else 2),
            )
    else:
        run.stopper.restore_best_weights(run.model)


def write_test_outputs(
    run: TrainingRun, test_probability, threshold: float, test_metrics: dict
) -> None:
    """Write the training curves, the test split's confusion matrix and ROC curve, the model's
    architecture and the test metrics into the metrics folder."""
    from realfake.evaluation.metrics import (
        plot_architecture,
        plot_confusion_matrix,
        plot_history,
        plot_roc,
        read_log,
    )

    metrics_dir = Path(run.config.metrics_dir)
    test = run.splits["test"]
    plot_history(read_log(run.log_path), metrics_dir)
    plot_confusion_matrix(
        test.labels, test_probability, threshold, metrics_dir / "confusion_matrix.png"
    )
    plot_roc(test.labels, test_probability, metrics_dir / "roc_curve.png")
    plot_architecture(run.model, metrics_dir / "model_architecture.png")
    atomic_write_text(metrics_dir / "test_metrics.json", json.dumps(test_metrics, indent=2) + "\n")


def score_and_report(run: TrainingRun) -> dict:
    """Choose the threshold on validation, score the test split, write the plots, the metrics,
    the model and its card; remove the checkpoint. Returns the card."""
    from realfake.evaluation.metrics import (
        choose_threshold,
        classification_metrics,
        format_metrics,
        uncertain_band,
    )
    from realfake.model import preprocessing_description

    config, model = run.config, run.model
    flip = config.test_time_flip
    validation, test = run.splits["validation"], run.splits["test"]
    validation_probability = probability_fake(model, validation.images, flip, config.batch_size)
    threshold = choose_threshold(validation.labels, validation_probability)
    validation_metrics = classification_metrics(
        validation.labels, validation_probability, threshold
    )
    test_probability = probability_fake(model, test.images, flip, config.batch_size)
    test_metrics = classification_metrics(test.labels, test_probability, threshold)
    say(f"validation: {format_metrics(validation_metrics)}")
    say(f"test: {format_metrics(test_metrics)}")

    write_test_outputs(run, test_probability, threshold, test_metrics)

    train_images = len(run.splits["train"])
    card = training_card(
        image_size=config.image_size,
        backbone=config.backbone,
        preprocessing=preprocessing_description(config.weights),
        weights=config.weights,
        threshold=threshold,
        uncertain_band=uncertain_band(validation.labels, validation_probability, threshold),
        test_time_flip=flip,
        training_data={name: split.counts() for name, split in run.splits.items()},
        trained_on=trained_on(Path(config.data), config.image_size),
        test_metrics=test_metrics,
        validation_metrics=validation_metrics,
        training_seconds=round(run.seconds, 1),
        images_per_second=round(
            train_images * run.epochs_run / run.seconds if run.seconds else 0.0, 2
        ),
        epochs_run=run.epochs_run,
        best_epoch=None if run.stopper.best_epoch is None else run.stopper.best_epoch + 1,
        settings=run.settings,
        fast_path=config.fast_path,
        tensorflow_version=tf.__version__,
        keras_version=keras.__version__,
    )
    save_classifier(model, card, Path(config.model_path))
    clear_checkpoint(config.checkpoint_dir)
    card["train_images"] = train_images
    return card


def train(config: TrainingConfig) -> dict:
    """Train, choose the threshold, score the test split and write every output; see
    model_training.py for the files written. Returns the model card."""
    run = prepare(config)
    fit(run)
    return score_and_report(run)
