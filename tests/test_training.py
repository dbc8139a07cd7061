"""The training stage: the stopping callback on scripted logs, batch-norm re-estimation, resuming
after kill -9, usage errors, runs of the tiny backbone, and one end-to-end run of the reference
ResNet101."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_BACKBONE, labelled_split_tree, make_tree

import realfake  # noqa: F401  (before TensorFlow)

REPO = Path(__file__).resolve().parents[1]
SPLIT_COUNTS = {"train": 16, "validation": 4, "test": 4}


def split_tree(root: Path, counts: dict[str, int] = SPLIT_COUNTS, seed: int = 0) -> Path:
    """data/{train,validation,test}/{Fake,Real} of small random JPEGs."""
    return labelled_split_tree(root, counts, seed)


def one_batch_norm_model(image_size=32):
    """A conv layer and one batch norm, whose statistics a test can compute by hand."""
    import keras

    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=4)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


def scripted_model():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    return model


def run_epochs(callback, model, logs_by_epoch):
    """Drive a callback with scripted logs; epoch k's weights are all k, to tell them apart."""
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, logs in enumerate(logs_by_epoch):
        model.set_weights([np.full(w.shape, float(epoch)) for w in model.get_weights()])
        callback.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    callback.on_train_end()
    return epoch


def test_stop_callback_stops_restores_and_saves_the_best_epoch(tmp_path):
    import keras

    from realfake.training.callbacks import StopTrainingOnValidationLoss

    model = scripted_model()
    model.stop_training = False
    path = tmp_path / "best.h5"
    callback = StopTrainingOnValidationLoss(grace_epochs=2, save_path=path, verbose=False)
    logs = [
        {"loss": 0.9, "val_loss": 1.5},  # above training loss, but within the grace epochs
        {"loss": 0.7, "val_loss": 0.8},
        {"loss": 0.6, "val_loss": 0.5},  # lowest validation loss
        {"loss": 0.5, "val_loss": 0.55},  # above training loss after the grace epochs: stop
        {"loss": 0.4, "val_loss": 0.3},  # never reached
    ]
    last = run_epochs(callback, model, logs)
    assert last == 3 and callback.stopped_epoch == 3
    assert callback.best_epoch == 2 and callback.best == pytest.approx(0.5)
    assert all(np.all(w == 2.0) for w in model.get_weights())
    saved = keras.models.load_model(path)
    assert all(np.all(w == 2.0) for w in saved.get_weights())


def test_stop_callback_never_stops_within_grace_and_restores_at_the_end():
    from realfake.training.callbacks import StopTrainingOnValidationLoss

    model = scripted_model()
    model.stop_training = False
    callback = StopTrainingOnValidationLoss(grace_epochs=3, verbose=False)
    logs = [{"loss": 0.5, "val_loss": v} for v in (0.9, 0.6, 0.7)]
    last = run_epochs(callback, model, logs)
    assert last == 2 and callback.stopped_epoch is None and not model.stop_training
    assert callback.best_epoch == 1
    assert all(np.all(w == 1.0) for w in model.get_weights())


def test_stop_callback_state_survives_a_resume():
    from realfake.training.callbacks import StopTrainingOnValidationLoss

    model = scripted_model()
    model.stop_training = False
    first = StopTrainingOnValidationLoss(grace_epochs=0, verbose=False)
    first.set_model(model)
    first.on_train_begin()
    model.set_weights([np.full(w.shape, 7.0) for w in model.get_weights()])
    first.on_epoch_end(0, {"loss": 1.0, "val_loss": 0.4})

    resumed = StopTrainingOnValidationLoss(grace_epochs=0, verbose=False)
    resumed.restore(first.state(), first.best_weights)
    resumed.set_model(model)
    resumed.on_train_begin()  # must not forget the restored best
    model.set_weights([np.full(w.shape, 8.0) for w in model.get_weights()])
    resumed.on_epoch_end(1, {"loss": 1.0, "val_loss": 0.45})
    resumed.on_train_end()
    assert resumed.best_epoch == 0
    assert all(np.all(w == 7.0) for w in model.get_weights())


def test_batch_norm_statistics_are_reestimated_from_training_batches():
    import keras
    import tensorflow as tf

    from realfake.training.callbacks import batch_norm_layers, recalibrate_batch_norm

    model = one_batch_norm_model()
    batch_norm = batch_norm_layers(model)[0]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, size=(24, 32, 32, 3)).astype(np.float32)
    batches = tf.data.Dataset.from_tensor_slices(images).batch(8)
    features = keras.Model(model.input, model.layers[2].output)  # the conv, before batch norm
    per_batch = [np.asarray(features(images[k : k + 8])) for k in range(0, 24, 8)]
    expected_mean = np.mean([b.mean(axis=(0, 1, 2)) for b in per_batch], axis=0)
    expected_variance = np.mean([b.var(axis=(0, 1, 2)) for b in per_batch], axis=0)

    used = recalibrate_batch_norm(model, batches, 3)
    assert used == 3
    # An even average would match exactly; the decayed one weights batches 1 : 1.5 : 2.25.
    weights = np.array([(2 / 3) ** 2, 2 / 3, 1.0])
    weights /= weights.sum()
    weighted_mean = np.tensordot(weights, [b.mean(axis=(0, 1, 2)) for b in per_batch], 1)
    np.testing.assert_allclose(batch_norm.moving_mean.numpy(), weighted_mean, rtol=1e-4, atol=1e-5)
    assert np.allclose(batch_norm.moving_mean.numpy(), expected_mean, rtol=0.2, atol=0.05)
    assert np.all(batch_norm.moving_variance.numpy() > 0.5 * expected_variance)
    assert batch_norm.momentum == pytest.approx(0.99)
    assert recalibrate_batch_norm(model, batches, 0) == 0


# Runs model_training.main (training_args choose the tiny backbone). After each epoch's callbacks
# (the checkpoint included) it writes the marker file epoch-<k> and sleeps EPOCH_SLEEP seconds; with
# KILL_AT_REPLACE=k it kills itself with SIGKILL right after the first file or folder renamed
# into the checkpoint folder in epoch k, between that write and whatever follows it.
RUNNER = """
import os, signal, sys, time
sys.path.insert(0, {tests!r})
import realfake
import keras

markers = os.environ["EPOCH_MARKERS"]
kill_epoch = int(os.environ.get("KILL_AT_REPLACE", "-1"))
checkpoint_dir = os.path.abspath(sys.argv[sys.argv.index("--checkpoint-dir") + 1])
epoch_now = [-1]
original_replace = os.replace

def replace(source, destination, **kwargs):
    original_replace(source, destination, **kwargs)
    inside = os.path.abspath(destination).startswith(checkpoint_dir + os.sep)
    if inside and epoch_now[0] == kill_epoch:
        os.kill(os.getpid(), signal.SIGKILL)

os.replace = replace

class Marker(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        epoch_now[0] = epoch

    def on_epoch_end(self, epoch, logs=None):
        open(os.path.join(markers, f"epoch-{{epoch}}"), "w").close()
        time.sleep(float(os.environ.get("EPOCH_SLEEP", "0")))

original_fit = keras.Model.fit

def fit(self, *args, callbacks=None, **kwargs):
    return original_fit(self, *args, callbacks=[*(callbacks or []), Marker()], **kwargs)

keras.Model.fit = fit
import model_training
sys.exit(model_training.main(sys.argv[1:]))
"""


def training_args(data: Path, out: Path, epochs: int = 6) -> list[str]:
    """A short run of the tiny backbone (its real head: GaussianNoise, Dropout and their random
    generators are trained too)."""
    return [
        "--data", str(data), "--backbone", TINY_BACKBONE, "--weights", "none",
        "--epochs", str(epochs), "--batch-size", "8",
        "--grace-epochs", "100", "--patience", "100", "--bn-batches", "2", "--quiet",
        "--model-path", str(out / "model.h5"), "--metrics-dir", str(out / "metrics"),
        "--checkpoint-dir", str(out / "checkpoint"),
    ]  # fmt: skip


def start_runner(
    tmp_path: Path, args: list[str], sleep: float = 0.0, kill_at_replace: int = -1
) -> subprocess.Popen:
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER.format(tests=str(REPO / "tests")))
    markers = Path(args[args.index("--checkpoint-dir") + 1]).parent / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        EPOCH_SLEEP=str(sleep),
        EPOCH_MARKERS=str(markers),
        KILL_AT_REPLACE=str(kill_at_replace),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return subprocess.Popen(
        [sys.executable, str(runner), *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_after_epoch(process: subprocess.Popen, markers: Path, epoch: int) -> None:
    """SIGKILL a training run once its epoch `epoch` (0-based) is checkpointed, and reap it."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if (markers / f"epoch-{epoch}").exists():
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.communicate()


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def saved_weights(path: Path) -> list[np.ndarray]:
    from realfake.inference.classifier import load_classifier

    return load_classifier(path).model.get_weights()


RESUME_EPOCHS = 3
# Every random training transform and the weight average, so that resume must restore them all.
RESUME_FLAGS = [
    "--augment", "flip,crop,jpeg:0.5,blur:0.5,downscale:0.5", "--ema-momentum", "0.9",
    "--weight-decay", "0.01", "--label-smoothing", "0.1", "--dense-units", "8",
]  # fmt: skip


@pytest.fixture(scope="module")
def resume_reference(tmp_path_factory):
    """One uninterrupted 3-epoch run with RESUME_FLAGS: its data folder and output folder."""
    root = tmp_path_factory.mktemp("resume")
    data = split_tree(root / "data")
    out = root / "reference"
    args = [*training_args(data, out, RESUME_EPOCHS), *RESUME_FLAGS]
    reference = start_runner(root, args)
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err[-2000:]
    return data, out


@pytest.mark.end_to_end
@pytest.mark.parametrize(
    "interruption", ["kill-9-after-first-checkpoint", "kill-inside-checkpoint"]
)
def test_resume_after_kill_matches_an_uninterrupted_run(resume_reference, tmp_path, interruption):
    """A run killed with SIGKILL and resumed writes the same training log, bit for bit, and
    saves the same weights as the run that was never interrupted: the model has GaussianNoise
    and Dropout, the batches are flipped, cropped, blurred, down-scaled and re-encoded, the weights
    are averaged (the average is validated and kept), and the kill comes either after the first
    epoch's checkpoint or in the middle of writing the second. Every kernel here is
    deterministic on CPU, so no tolerance is needed."""
    data, reference_dir = resume_reference
    resumed_dir = tmp_path / "resumed"
    args = [*training_args(data, resumed_dir, RESUME_EPOCHS), *RESUME_FLAGS]
    if interruption == "kill-9-after-first-checkpoint":
        interrupted = start_runner(tmp_path, args, sleep=30)
        kill_after_epoch(interrupted, resumed_dir / "markers", 0)
    else:
        interrupted = start_runner(tmp_path, args, kill_at_replace=1)
        interrupted.communicate(timeout=300)
    assert interrupted.returncode == -signal.SIGKILL, "the run finished before it was killed"
    assert not (resumed_dir / "model.h5").exists()

    resumed = start_runner(tmp_path, [*args, "--resume"])
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert "resuming after epoch" in err

    expected = read_csv(reference_dir / "metrics" / "training_log.csv")
    got = read_csv(resumed_dir / "metrics" / "training_log.csv")
    assert [row["epoch"] for row in got] == [str(e) for e in range(RESUME_EPOCHS)]
    assert got == expected
    for want, have in zip(
        saved_weights(reference_dir / "model.h5"), saved_weights(resumed_dir / "model.h5"),
        strict=True,
    ):  # fmt: skip
        np.testing.assert_array_equal(have, want)
    card = json.loads((resumed_dir / "model.json").read_text())
    reference_card = json.loads((reference_dir / "model.json").read_text())
    assert card["epochs_run"] == RESUME_EPOCHS
    assert card["test_metrics"] == reference_card["test_metrics"]
    assert card["threshold"] == reference_card["threshold"]
    assert not (resumed_dir / "checkpoint").exists()


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    import model_training

    data = split_tree(tmp_path / "data", {"train": 2, "validation": 1, "test": 1})
    code = model_training.main([*training_args(data, tmp_path / "out"), "--resume"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: nothing to resume") and err.count("\n") == 1


def test_resume_with_other_settings_is_refused(tmp_path, capsys):
    import model_training
    from realfake.training.settings import TrainingConfig, run_settings

    data = split_tree(tmp_path / "data", {"train": 2, "validation": 1, "test": 1})
    argv = training_args(data, tmp_path / "out")
    interrupted = TrainingConfig.from_mapping(model_training.build_parser().parse_args(argv))
    state = {"epoch": 1, "settings": run_settings(interrupted)}
    checkpoint = tmp_path / "out" / "checkpoint" / "epoch-0002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps(state))
    np.savez(checkpoint / "random.npz")
    assert model_training.main([*argv, "--resume", "--l2", "0.5", "--batch-size", "4"]) == 1
    err = capsys.readouterr().err
    assert err == "error: --resume needs the interrupted run's settings; these differ: " \
        "--batch-size, --l2\n"  # fmt: skip


def test_a_checkpoint_from_before_the_backbone_setting_is_resnet101s(tmp_path, capsys):
    """Checkpoints written before --backbone existed hold no backbone: they continue only as
    ResNet101 runs."""
    import model_training
    from realfake.training.settings import TrainingConfig, run_settings

    data = split_tree(tmp_path / "data", {"train": 2, "validation": 1, "test": 1})
    argv = training_args(data, tmp_path / "out")
    interrupted = TrainingConfig.from_mapping(model_training.build_parser().parse_args(argv))
    settings = run_settings(interrupted)
    del settings["backbone"]
    checkpoint = tmp_path / "out" / "checkpoint" / "epoch-0002"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text(json.dumps({"epoch": 1, "settings": settings}))
    np.savez(checkpoint / "random.npz")
    assert model_training.main([*argv, "--resume", "--l2", "0.5"]) == 1
    assert capsys.readouterr().err.endswith("these differ: --backbone, --l2\n")
    argv[argv.index("--backbone") + 1] = "resnet101"
    assert model_training.main([*argv, "--resume", "--l2", "0.5"]) == 1
    assert capsys.readouterr().err.endswith("these differ: --l2\n")


def test_the_tiny_backbone_without_weights_none_fails_in_one_line_before_any_decoding(
    tmp_path, capsys
):
    import model_training

    data = split_tree(tmp_path / "data", {"train": 1, "validation": 1, "test": 1})
    argv = training_args(data, tmp_path / "out")
    argv[argv.index("--weights") + 1] = "imagenet"
    assert model_training.main(argv) == 1
    err = capsys.readouterr().err
    assert err == "error: the tiny backbone has no pretrained weights: use --weights none\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--image-size", "16"], "--image-size must be at least 32"),
        (["--limit-per-class", "0"], "--limit-per-class must be at least 1"),
        (["--strategy", "tpu"], "invalid choice"),
        (["--augment", "rotate"], "invalid choice"),
        (["--backbone", "resnet18"], "invalid choice: 'resnet18'"),
    ],
)
def test_usage_errors(argv, message, capsys):
    import model_training

    with pytest.raises(SystemExit) as caught:
        model_training.main(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_missing_split_is_a_one_line_error(tmp_path, capsys):
    import model_training

    make_tree(tmp_path / "data", {"train/Fake": 1, "train/Real": 1})
    assert model_training.main(["--data", str(tmp_path / "data"), "--weights", "none"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "validation, test" in err and err.count("\n") == 1


def test_architecture_plot_warns_without_graphviz(tmp_path, monkeypatch, capsys):
    from realfake.evaluation.metrics import plot_architecture

    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    assert plot_architecture(one_batch_norm_model(), tmp_path / "model_architecture.png") is None
    assert not (tmp_path / "model_architecture.png").exists()
    err = capsys.readouterr().err
    assert err.startswith("warning: model_architecture.png not drawn") and "graphviz" in err


@pytest.mark.slow
def test_reference_end_to_end_run_writes_every_output(tmp_path, capsys):
    """The reference ResNet101, one epoch on a few images: every file, the card, and evaluation."""
    import evaluate_model
    import model_training

    data = make_tree(
        tmp_path / "data",
        {"train/FAKE": 8, "train/REAL": 8, "validation/Fake": 4, "validation/Real": 4,
         "test/Fake": 4, "test/Real": 3},
    )  # fmt: skip
    (data / "merge_report.json").write_text(json.dumps({"sources": [{"name": "cifake"}]}))
    model_path = tmp_path / "models" / "classifier.h5"
    metrics_dir = tmp_path / "metrics_graphs"
    code = model_training.main(
        [
            "--data", str(data), "--weights", "none", "--epochs", "1", "--batch-size", "8",
            "--dense-units", "8", "--bn-batches", "1", "--quiet", "--model-path", str(model_path),
            "--metrics-dir", str(metrics_dir), "--checkpoint-dir", str(tmp_path / "checkpoint"),
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "trained 1 epochs on 16 images" in out and "test accuracy" in out
    assert sorted(p.name for p in model_path.parent.iterdir()) == [
        "classifier.h5",
        "classifier.json",
    ]
    assert sorted(p.name for p in metrics_dir.iterdir()) == sorted(
        [f"training_{m}.png" for m in ("loss", "accuracy", "precision", "recall", "auc", "f1")]
        + ["confusion_matrix.png", "roc_curve.png", "model_architecture.png"]
        + ["training_log.csv", "test_metrics.json"]
    )
    assert not (tmp_path / "checkpoint").exists()
    log = read_csv(metrics_dir / "training_log.csv")
    assert len(log) == 1 and {"loss", "val_loss", "f1", "val_f1", "val_auc"} <= set(log[0])
    float(log[0]["val_f1"])  # a scalar (Fake's F1), not a per-class array

    card = json.loads(model_path.with_suffix(".json").read_text())
    assert card["class_names"] == ["Fake", "Real"] and card["positive_class"] == "Fake"
    assert card["image_size"] == 32 and card["weights"] == "none"
    assert card["backbone"] == "resnet101" and card["settings"]["backbone"] == "resnet101"
    assert card["training_data"] == {
        "train": {"Fake": 8, "Real": 8},
        "validation": {"Fake": 4, "Real": 4},
        "test": {"Fake": 4, "Real": 3},
    }
    assert 0.0 <= card["threshold"] <= 1.0
    assert set(card["test_metrics"]) >= {"loss", "accuracy", "precision", "recall", "auc", "f1"}
    assert card["trained_on"]["generator"] == "Stable Diffusion 1.4"  # from the merge report
    assert card["trained_on"]["input_size"] == "32 x 32 pixels"
    assert card["epochs_run"] == 1 and card["images_per_second"] > 0

    # Evaluation of the saved model on the test folder reproduces the card's test metrics.
    assert evaluate_model.main(
        ["--model", str(model_path), "--data", str(data / "test"), "--quiet",
         "--output", str(tmp_path / "evaluation")]
    ) == 0  # fmt: skip
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("accuracy", "precision", "recall", "f1", "threshold"):
        assert metrics[key] == pytest.approx(card["test_metrics"][key])
    assert metrics["auc"] == pytest.approx(card["test_metrics"]["auc"], abs=1e-6)
    assert metrics["loss"] == pytest.approx(card["test_metrics"]["loss"], rel=1e-4)


def test_split_loading_counts_weights_and_batches(tmp_path):
    from realfake.training.pipeline import class_weights, load_split, make_dataset

    folder = make_tree(tmp_path / "train", {"FAKE": 6, "real_images": 3})
    split = load_split(folder, 32, quiet=True)
    assert split.images.shape == (9, 32, 32, 3) and split.images.dtype == np.uint8
    assert split.counts() == {"Fake": 6, "Real": 3}
    assert load_split(folder, 32, limit_per_class=2, quiet=True).counts() == {"Fake": 2, "Real": 2}

    weights = class_weights(split.labels)
    assert weights == pytest.approx({0: 9 / 12, 1: 9 / 6})  # each class weighs the same in total
    assert class_weights(np.array([0, 1, 0, 1])) is None

    batches = list(make_dataset(split, 4, weights=weights, epochs=(0, 2)).as_numpy_iterator())
    assert len(batches) == 6  # 3 batches per epoch, two epochs
    images, labels, sample_weights = batches[0]
    assert images.dtype == np.float32 and images.max() > 1.0  # raw 0-255 pixels
    assert labels.shape == (4, 2) and np.all(labels.sum(axis=1) == 1)
    assert np.allclose(sample_weights, np.where(labels[:, 0] == 1, 9 / 12, 9 / 6))
    for epoch in (batches[:3], batches[3:]):  # each epoch is a permutation of the split
        seen = np.concatenate([b[0] for b in epoch]).reshape(9, -1)
        assert sorted(map(bytes, seen.astype(np.uint8))) == sorted(
            map(bytes, split.images.reshape(9, -1))
        )
    # A run resumed at epoch 1 gets the very batches an uninterrupted run got in epoch 1.
    resumed = list(make_dataset(split, 4, weights=weights, epochs=(1, 2)).as_numpy_iterator())
    for expected, got in zip(batches[3:], resumed, strict=True):
        assert all(np.array_equal(e, g) for e, g in zip(expected, got, strict=True))


def test_flip_augmentation_keeps_every_pixel_and_flip_shift_resamples(tmp_path):
    import model_training
    from realfake.core.errors import PipelineError
    from realfake.training.batch_augmentation import augmentation_layers
    from realfake.training.pipeline import load_split, make_dataset

    split = load_split(make_tree(tmp_path / "train", {"Fake": 6, "Real": 6}), 32, quiet=True)
    originals = split.images.astype(np.float32)
    unchanged = {bytes(image) for image in originals}
    views = unchanged | {bytes(image[:, ::-1]) for image in originals}

    def augmented(mode):
        dataset = make_dataset(split, 12, seed=5, augment=mode, epochs=(0, 4))
        return np.concatenate([images for images, _ in dataset.as_numpy_iterator()])

    flipped = augmented("flip")
    assert all(bytes(image) in views for image in flipped)  # each is an image or its mirror
    mirrored = sum(bytes(image) not in unchanged for image in flipped)
    assert 0 < mirrored < len(flipped)  # some mirrored, some not
    shifted = augmented("flip-shift")
    assert sum(bytes(image) in views for image in shifted) < len(shifted) / 2
    with pytest.raises(PipelineError, match="unknown augmentation"):
        augmentation_layers("rotate")

    parser = model_training.build_parser()
    assert parser.parse_args([]).augment is None
    assert parser.parse_args(["--augment"]).augment == "flip-shift"  # as before the choice
    assert parser.parse_args(["--augment", "flip"]).augment == "flip"


def test_a_seed_of_zero_is_refused_with_one_line(capsys):
    import model_training

    with pytest.raises(SystemExit) as raised:
        model_training.main(["--seed", "0"])
    assert raised.value.code == 2
    assert "error: --seed must not be 0" in capsys.readouterr().err


def test_warmup_rises_linearly_then_decays_polynomially_over_the_rest():
    from realfake.training.run import learning_rate_schedule

    schedule = learning_rate_schedule(2e-3, 0.0, 1.0, decay_steps=1000, warmup_steps=100)
    rates = [float(schedule(step)) for step in (0, 49, 99, 100, 550, 1000)]
    assert rates == pytest.approx([2e-5, 1e-3, 2e-3, 2e-3, 1e-3, 0.0], abs=1e-9)
    rising = [float(schedule(step)) for step in range(100)]
    assert all(b > a for a, b in zip(rising, rising[1:], strict=False))
    # Without warm-up it is Keras's own PolynomialDecay, unchanged.
    plain = learning_rate_schedule(1e-3, 1e-5, 2.0, decay_steps=1000)
    assert type(plain).__name__ == "PolynomialDecay"


def test_a_warmup_schedule_survives_the_optimizer_config_round_trip():
    import keras

    from realfake.training.run import learning_rate_schedule

    optimizer = keras.optimizers.Adam(learning_rate_schedule(1e-3, 0.0, 2.0, 500, 50))
    restored = keras.optimizers.Adam.from_config(optimizer.get_config())
    original, copy = optimizer._learning_rate, restored._learning_rate
    assert type(copy).__name__ == "LinearWarmup"
    for step in (0, 25, 50, 300, 500):
        assert float(copy(step)) == pytest.approx(float(original(step)))
    assert float(copy(25)) < float(copy(50)) and float(copy(500)) == 0.0


def test_bad_warmup_and_zero_init_combinations_are_refused_with_one_line(capsys):
    import model_training

    for argv, message in (
        (["--warmup-fraction", "1"], "--warmup-fraction must be at least 0 and below 1"),
        (["--warmup-fraction", "-0.1"], "--warmup-fraction must be at least 0 and below 1"),
        (["--zero-init-residual", "--weights", "imagenet"], "--zero-init-residual needs"),
    ):
        with pytest.raises(SystemExit) as raised:
            model_training.main(argv)
        assert raised.value.code == 2
        assert f"error: {message}" in capsys.readouterr().err


def test_clearing_a_checkpoint_leaves_no_empty_parent_but_keeps_a_used_one(tmp_path):
    from realfake.training.checkpoint import clear_checkpoint

    checkpoint = tmp_path / "runs" / "training"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.json").write_text("{}")
    clear_checkpoint(checkpoint)
    assert not (tmp_path / "runs").exists() and tmp_path.is_dir()

    checkpoint.mkdir(parents=True)
    (tmp_path / "runs" / "other.txt").write_text("kept")
    clear_checkpoint(checkpoint)
    assert not checkpoint.exists()
    assert (tmp_path / "runs" / "other.txt").read_text() == "kept"


def test_a_finished_checkpoint_is_rescored_with_test_time_flip_without_training(
    tmp_path, monkeypatch
):
    """--resume of a run whose epochs all finished trains nothing, and --test-time-flip may be
    added then: the threshold and metrics come from averaged predictions of the same weights."""
    import keras

    import model_training
    import realfake.training.run as training
    from realfake.evaluation.metrics import choose_threshold, classification_metrics
    from realfake.inference.classifier import probability_fake
    from realfake.training.pipeline import load_split

    monkeypatch.setattr(training, "clear_checkpoint", lambda directory: None)  # keep it
    data = split_tree(tmp_path / "data", {"train": 8, "validation": 6, "test": 6})
    out = tmp_path / "out"
    argv = [*training_args(data, out), "--epochs", "2"]
    assert model_training.main(argv) == 0
    log = (out / "metrics" / "training_log.csv").read_text()
    weights = keras.models.load_model(out / "model.h5", compile=False).get_weights()
    first_card = json.loads((out / "model.json").read_text())
    assert first_card["test_time_flip"] is False

    assert model_training.main([*argv, "--resume", "--test-time-flip"]) == 0
    assert (out / "metrics" / "training_log.csv").read_text() == log  # no epoch trained again
    model = keras.models.load_model(out / "model.h5", compile=False)
    for saved, restored in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, restored)
    card = json.loads((out / "model.json").read_text())
    assert card["test_time_flip"] is True
    assert card["epochs_run"] == first_card["epochs_run"] == 2
    assert card["training_seconds"] == first_card["training_seconds"]

    validation, test = (load_split(data / name, 32, quiet=True) for name in ("validation", "test"))
    threshold = choose_threshold(
        validation.labels,
        probability_fake(model, validation.images, test_time_flip=True, batch_size=8),
    )
    assert card["threshold"] == pytest.approx(threshold)
    expected = classification_metrics(
        test.labels,
        probability_fake(model, test.images, test_time_flip=True, batch_size=8),
        threshold,
    )
    for key in ("loss", "accuracy", "auc", "f1"):
        assert card["test_metrics"][key] == pytest.approx(expected[key], rel=1e-5, abs=1e-6)
    assert card["test_metrics"]["loss"] != pytest.approx(
        first_card["test_metrics"]["loss"], rel=1e-6
    )


def test_early_stopping_stops_after_patience_and_its_count_survives_a_resume():
    from realfake.training.callbacks import ResumableEarlyStopping

    losses = [1.0, 0.8, 0.9, 0.85, 0.7]  # epochs 2 and 3 bring no lower validation loss
    model = scripted_model()
    model.stop_training = False
    uninterrupted = ResumableEarlyStopping(patience=2, verbose=0)
    last = run_epochs(uninterrupted, model, [{"loss": 0.5, "val_loss": v} for v in losses])
    assert last == 3 and model.stop_training and uninterrupted.stopped_epoch == 3

    # The same run, interrupted after epoch 2 and resumed from the state saved then.
    model.stop_training = False
    first = ResumableEarlyStopping(patience=2, verbose=0)
    run_epochs(first, model, [{"loss": 0.5, "val_loss": v} for v in losses[:3]])
    assert not model.stop_training and first.state()["wait"] == 1
    resumed = ResumableEarlyStopping(patience=2, verbose=0)
    resumed.restore(first.state())
    resumed.set_model(model)
    resumed.on_train_begin()
    resumed.on_epoch_end(3, {"loss": 0.5, "val_loss": losses[3]})
    assert model.stop_training and resumed.stopped_epoch == 3
    assert resumed.best == pytest.approx(0.8) and resumed.best_epoch == 1


def test_progress_lines_come_every_interval_with_images_rate_and_loss():
    import io

    from realfake.training.callbacks import ProgressLog

    times = iter([0.0, 10.0, 61.0, 62.0, 125.0])
    stream = io.StringIO()
    callback = ProgressLog(9, 63_174, 64, interval=60, stream=stream, clock=lambda: next(times))
    callback.on_epoch_begin(0)
    for batch, loss in ((49, 0.9), (199, 0.41), (200, 0.4), (499, 0.3512)):
        callback.on_train_batch_end(batch, {"loss": loss})
    assert stream.getvalue().splitlines() == [
        "epoch 1/9: 12,800/63,174 images, 210 images/s, loss 0.41",
        "epoch 1/9: 32,000/63,174 images, 256 images/s, loss 0.3512",
    ]


def test_training_says_what_it_does_and_prints_progress_when_not_a_terminal(tmp_path, capsys):
    import model_training

    data = split_tree(tmp_path / "data", {"train": 8, "validation": 2, "test": 2})
    argv = [*training_args(data, tmp_path / "out", epochs=2), "--progress-seconds", "0.001"]
    argv.remove("--quiet")
    assert model_training.main(argv) == 0
    err = capsys.readouterr().err
    assert f"decoding the images of {data} at 32x32" in err
    assert "building the tiny residual net (weights: none) and its head" in err
    for line in ("epoch 1/2: 8/16 images", "epoch 1/2: 16/16 images", "epoch 2/2: 16/16 images"):
        assert line in err
    assert err.index("decoding") < err.index("building") < err.index("epoch 1/2: 8/16 images")


def test_the_cifake_recipe_fills_the_settings_and_explicit_flags_override_it():
    import model_training
    from realfake.training.settings import RECIPES, TrainingConfig

    parser = model_training.build_parser()
    plain = model_training.parse_arguments(parser, [])
    assert plain.weights == "imagenet" and plain.epochs == 60 and plain.augment is None
    parser = model_training.build_parser()
    args = model_training.parse_arguments(
        parser, ["--recipe", "cifake", "--epochs", "3", "--weights", "w.h5"]
    )
    config = TrainingConfig.from_mapping(args)
    assert config.epochs == 3 and config.weights == "w.h5"  # given on the command line
    for name, value in RECIPES["cifake"].items():
        if name not in ("epochs", "weights"):
            assert getattr(config, name) == value, name
    assert config.zero_init_residual and config.test_time_flip
    assert "--recipe cifake" in (REPO / "Makefile").read_text()


def test_the_recipe_table_keeps_the_first_reference_beside_the_robust_one():
    from realfake.training.settings import RECIPES, parse_augment

    first, robust = RECIPES["cifake-v1"], RECIPES["cifake"]
    assert first["augment"] == "flip"  # the first reference model's recipe, unchanged
    plan = parse_augment(robust["augment"])
    assert plan.layer_mode == "flip"
    assert all(plan.probability(name) > 0 for name in ("jpeg", "blur", "downscale"))
    # The same budget: nine passes at the same batch size, the same schedule.
    assert {key: value for key, value in robust.items() if key != "augment"} == {
        key: value for key, value in first.items() if key != "augment"
    }


def test_model_is_the_path_flag_and_model_path_a_hidden_alias():
    import model_training

    parser = model_training.build_parser()
    assert parser.parse_args(["--model", "a.h5"]).model_path == Path("a.h5")
    assert parser.parse_args(["--model-path", "b.h5"]).model_path == Path("b.h5")
    assert "--model-path" not in parser.format_help() and "--model PATH" in parser.format_help()


def test_help_answers_without_tensorflow_and_states_each_default_once():
    program = (
        "import sys, time\n"
        "start = time.perf_counter()\n"
        "import model_training\n"
        "text = model_training.build_parser().format_help()\n"
        "print(time.perf_counter() - start, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
        "print(text)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program],
        cwd=REPO,
        env=dict(os.environ, COLUMNS="200"),  # one line per option's help
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    first, text = completed.stdout.split("\n", 1)
    seconds, tensorflow_loaded, keras_loaded = first.split()
    assert float(seconds) < 1.0 and tensorflow_loaded == keras_loaded == "False"
    options = text.split("\n  -")  # one block per option
    assert all(block.count("(default:") <= 1 for block in options)
    for wrong in ("(default: True)", "(default: False)", "(default: None)"):
        assert wrong not in text
    assert "(default: 60)" in text and "(default: imagenet)" in text
    assert "examples:" in text and "--recipe cifake" in text


def test_offline_imagenet_weights_fail_in_one_line_before_any_decoding(
    tmp_path, monkeypatch, capsys
):
    import keras

    import model_training
    import realfake.training.pipeline

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/: no route")

    def decoding(*args, **kwargs):
        raise AssertionError("decoded the data before checking the weights")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    monkeypatch.setattr(realfake.training.pipeline, "load_splits", decoding)
    data = split_tree(tmp_path / "data", {"train": 1, "validation": 1, "test": 1})
    argv = training_args(data, tmp_path / "out")
    for flag in ("--weights", "none", "--backbone", TINY_BACKBONE):  # ResNet101, from ImageNet
        argv.remove(flag)
    assert model_training.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot download the ImageNet weights")
    assert "--weights none" in err and "--weights PATH" in err


@pytest.mark.slow
def test_weights_from_a_file_fold_the_caffe_preprocessing_into_the_model(tmp_path):
    """With --weights PATH the model takes raw RGB pixels, yet its base computes what Keras's
    ResNet101 with those weights computes on `preprocess_input(pixels)` (BGR, mean subtracted):
    the channel flip lives in conv1's kernel and the mean in the model's first layer."""
    import keras

    from realfake.model import BASE_NAME, build_model

    keras.utils.set_random_seed(3)
    weights_file = tmp_path / "resnet101_notop.weights.h5"
    random_base = keras.applications.ResNet101(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    random_base.save_weights(weights_file)
    pixels = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)

    model = build_model(image_size=32, weights=str(weights_file), dense_units=8)
    ours = model.get_layer(BASE_NAME)(model.get_layer("preprocess")(pixels), training=False)
    reference = keras.applications.ResNet101(
        include_top=False, weights=str(weights_file), input_shape=(32, 32, 3)
    )
    theirs = reference(keras.applications.resnet.preprocess_input(pixels.copy()), training=False)
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == (4, 1, 1, 2048) and np.abs(theirs).max() > 0
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


def test_the_training_package_takes_a_typed_config_and_never_sees_argparse():
    import ast
    import inspect

    from realfake.training import run as training
    from realfake.training.settings import TrainingConfig

    assert inspect.signature(training.train).parameters["config"].annotation is TrainingConfig
    for name in ("run", "settings", "callbacks", "checkpoint"):
        tree = ast.parse((REPO / "realfake" / "training" / f"{name}.py").read_text("utf-8"))
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in node.names
        } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "argparse" not in imported, name


def small_classifier(seed: int = 3):
    """A dense layer and a batch norm before a two-way softmax: kernels, biases and BN scales."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, name="hidden")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(x)
    return keras.Model(inputs, outputs)


def test_weight_decay_shrinks_kernels_only_and_keeps_the_fast_path():
    import keras

    from realfake.training import speed
    from realfake.training.run import compile_model

    model = small_classifier()
    compile_model(model, 0.1, 0.1, 1.0, decay_steps=10, weight_decay=0.5)
    assert type(model.optimizer) is keras.optimizers.Adam  # AdamW's update, stock Adam's class
    assert speed.apply_fast_path(model, force=True)
    before = {variable.path: variable.numpy() for variable in model.trainable_variables}
    # Zero gradients: Adam moves nothing, so every change is the decoupled decay.
    variables = model.trainable_variables
    model.optimizer.apply([np.zeros(v.shape, "float32") for v in variables], variables)
    speed.remove_fast_path(model)
    for variable in model.trainable_variables:
        want = before[variable.path] * (0.95 if variable.name == "kernel" else 1.0)
        np.testing.assert_allclose(variable.numpy(), want, rtol=1e-6, err_msg=variable.path)


def test_the_weight_average_is_validated_and_kept_while_training_goes_on_from_the_trained():
    import keras

    from realfake.training.callbacks import (
        AveragedWeightsForValidation,
        RestoreTrained,
        StopTrainingOnValidationLoss,
    )
    from realfake.training.run import compile_model

    model = small_classifier()
    compile_model(model, 0.05, 0.05, 1.0, decay_steps=40, ema_momentum=0.8)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = np.eye(2, dtype="float32")[(x[:, 0] > 0).astype(int)]
    seen: dict[str, list] = {}

    def weights(model):
        return [variable.numpy() for variable in model.trainable_variables]

    class Record(keras.callbacks.Callback):
        """Keeps the trainable weights under `name` at validation's start or an epoch's end."""

        def __init__(self, name: str, when: str):
            super().__init__()
            setattr(self, when, lambda *args, **kwargs: seen.__setitem__(name, weights(model)))

    class Averages(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            seen["average"] = [v.numpy() for v in model.optimizer._model_variables_moving_average]

    averaged = AveragedWeightsForValidation()
    stopper = StopTrainingOnValidationLoss(grace_epochs=100, verbose=False)
    callbacks = [
        Record("trained", "on_test_begin"), averaged, Record("validated", "on_test_begin"),
        Averages(), Record("judged", "on_epoch_end"), stopper, RestoreTrained(averaged),
        Record("continued", "on_epoch_end"),
    ]  # fmt: skip
    model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), verbose=0, callbacks=callbacks)
    assert any(
        not np.array_equal(trained, average)
        for trained, average in zip(seen["trained"], seen["average"], strict=True)
    )
    for name in ("validated", "judged"):  # validation and the stopping rule see the average
        for value, average in zip(seen[name], seen["average"], strict=True):
            np.testing.assert_array_equal(value, average)
    for value, trained in zip(seen["continued"], seen["trained"], strict=True):
        np.testing.assert_array_equal(value, trained)  # training goes on from its own weights
    np.testing.assert_array_equal(stopper.best_weights[0], seen["average"][0])  # kept: the average


def test_every_training_flag_takes_its_default_from_the_training_config():
    import argparse
    from dataclasses import fields

    import model_training
    from realfake.training.settings import TrainingConfig

    defaults = TrainingConfig()
    names = {field.name for field in fields(TrainingConfig)}
    checked = 0
    for action in model_training.build_parser()._actions:
        if action.dest in names and action.default is not argparse.SUPPRESS:
            assert action.default == getattr(defaults, action.dest), action.dest
            checked += 1
    assert checked >= len(names) - 2  # every field has its flag (--resume's default included)
