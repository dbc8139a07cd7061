"""The classifier as specified: its layers and settings on every backbone, its loss and metrics,
and a saved .h5 that loads with plain Keras in a process that never imported this project.

Most tests use the tiny backbone; those about the ResNets themselves build them and are slow."""

import json
import subprocess
import sys

import numpy as np
import pytest

import realfake  # noqa: F401  (before TensorFlow)
from realfake.core.errors import PipelineError

HEAD = ["gaussian_noise", "avg_pool", "dense", "dropout", "predictions"]
HEAD_KINDS = ["GaussianNoise", "GlobalAveragePooling2D", "Dense", "Dropout", "Dense"]
RESNETS = {"resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152"}
RESIDUAL_BLOCKS = {
    "resnet50": 3 + 4 + 6 + 3,
    "resnet101": 3 + 4 + 23 + 3,
    "resnet152": 3 + 8 + 36 + 3,
}


@pytest.fixture(scope="module")
def model():
    """The classifier on the tiny backbone, compiled as training compiles it, built once."""
    from realfake.model import build_model
    from realfake.training.run import compile_model

    built = build_model(image_size=32, weights="none", dense_units=16, l2=1e-3, backbone="tiny")
    compile_model(built, 1e-3, 1e-5, 2.0, decay_steps=1000)
    return built


@pytest.fixture(scope="module")
def reference():
    """The reference classifier, ResNet101, built once for the tests about it."""
    from realfake.model import build_model

    return build_model(image_size=32, weights="none", dense_units=16, l2=1e-3)


def assert_specified_head(model, dense_units=16, l2=1e-3):
    """The head every backbone gets: noise, pooling, a regularised ReLU layer, dropout, softmax."""
    import keras

    assert [layer.name for layer in model.layers][3:] == HEAD
    assert [type(layer).__name__ for layer in model.layers][3:] == HEAD_KINDS
    assert model.get_layer("gaussian_noise").stddev == pytest.approx(0.1)
    assert model.get_layer("dropout").rate == pytest.approx(0.4)
    dense = model.get_layer("dense")
    assert dense.units == dense_units
    assert dense.activation.__name__ == "relu"
    assert isinstance(dense.kernel_regularizer, keras.regularizers.L2)
    assert dense.kernel_regularizer.l2 == pytest.approx(l2)
    predictions = model.get_layer("predictions")
    assert predictions.units == 2
    assert predictions.activation.__name__ == "softmax"
    assert model.output_shape == (None, 2)


def zeroed_and_other_gammas(base) -> tuple[list[str], dict]:
    """The names of a base's batch norms whose scale (gamma) is all zero, and the others' scales."""
    gammas = {
        layer.name: np.asarray(layer.gamma)
        for layer in base.layers
        if type(layer).__name__ == "BatchNormalization"
    }
    zeroed = sorted(name for name, gamma in gammas.items() if not gamma.any())
    return zeroed, {name: gamma for name, gamma in gammas.items() if name not in zeroed}


@pytest.mark.slow
def test_the_reference_model_is_resnet101_with_the_specified_head(reference):
    import keras

    from realfake.evaluation.benchmarking import forward_flops

    assert [layer.name for layer in reference.layers][:3] == ["image", "preprocess", "resnet101"]
    kinds = [type(layer).__name__ for layer in reference.layers]
    assert kinds[:3] == ["InputLayer", "Rescaling", "Functional"]
    assert reference.input_shape == (None, 32, 32, 3)
    assert_specified_head(reference)

    base = reference.get_layer("resnet101")
    keras_resnet = keras.applications.ResNet101(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    # The same layers in the same order (the input layer's automatic name aside).
    assert [layer.name for layer in base.layers[1:]] == [
        layer.name for layer in keras_resnet.layers[1:]
    ]
    assert base.output_shape == (None, 1, 1, 2048)
    assert base.count_params() == keras_resnet.count_params()
    assert base.trainable
    # ResNet101's cost per 32x32 image, which the training benchmarks divide by.
    assert 0.30e9 < forward_flops(reference) < 0.33e9


def test_the_tiny_model_is_a_small_residual_net_under_the_specified_head(model):
    """The reference's head, preprocessing and nesting; a base of a few thousand weights whose
    feature map has ResNet's side at every input size (the input halved five times)."""
    from realfake.model import build_model

    assert [layer.name for layer in model.layers][:3] == ["image", "preprocess", "tiny"]
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds[:3] == ["InputLayer", "Rescaling", "Functional"]
    assert model.input_shape == (None, 32, 32, 3)
    assert_specified_head(model)
    base = model.get_layer("tiny")
    assert base.trainable and model.count_params() < 5_000
    assert base.output_shape == (None, 1, 1, 16)
    layer_kinds = {type(layer).__name__ for layer in base.layers}
    assert {"Conv2D", "BatchNormalization", "Add", "MaxPooling2D"} <= layer_kinds
    larger = build_model(image_size=224, dense_units=4, backbone="tiny").get_layer("tiny")
    assert larger.output_shape == (None, 7, 7, 16)  # as ResNet101's 7x7 at 224


def test_preprocessing_inside_the_model_maps_raw_pixels(model):
    preprocess = model.get_layer("preprocess")
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], dtype=np.float32)
    np.testing.assert_allclose(np.asarray(preprocess(pixels)), [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)


def test_compiled_with_adam_polynomial_decay_and_cross_entropy(model):
    import keras

    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.Adam)
    saved = optimizer.get_config()["learning_rate"]
    assert saved["class_name"] == "PolynomialDecay"
    schedule = keras.optimizers.schedules.PolynomialDecay.from_config(saved["config"])
    assert schedule.get_config()["decay_steps"] == 1000
    assert schedule.get_config()["power"] == 2.0
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(1000)) == pytest.approx(1e-5)
    assert float(schedule(500)) == pytest.approx((1e-3 - 1e-5) * 0.25 + 1e-5)
    compiled = model.get_compile_config()
    assert compiled["loss"]["class_name"] == "CategoricalCrossentropy"
    assert sorted(metric["config"]["name"] for metric in compiled["metrics"]) == [
        "accuracy",
        "auc",
        "f1",
        "precision",
        "recall",
    ]


def test_loss_is_binary_cross_entropy_of_fake_probability(model):
    """On one-hot labels and a two-way softmax, the training loss equals BCE of P(Fake)."""
    import keras

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 2)).astype(np.float32)
    # Through the softmax activation, as in the model (it caches logits on its output).
    probabilities = keras.activations.softmax(keras.ops.convert_to_tensor(logits))
    labels = rng.integers(0, 2, 16)
    one_hot = np.eye(2, dtype=np.float32)[labels]
    p_fake = np.asarray(probabilities)[:, 0].astype(np.float64)
    expected = -np.mean(np.where(labels == 0, np.log(p_fake), np.log(1 - p_fake)))
    assert float(model.loss(one_hot, probabilities)) == pytest.approx(expected, rel=1e-5)


def test_f1_on_one_hot_labels_is_fakes_f1():
    from sklearn.metrics import f1_score

    from realfake.training.callbacks import FakeClassLogs
    from realfake.training.run import training_metrics

    f1 = next(metric for metric in training_metrics() if metric.name == "f1")
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    p_fake = np.array([0.9, 0.4, 0.7, 0.2, 0.6, 0.1, 0.3, 0.8], dtype=np.float32)
    f1.update_state(np.eye(2, dtype=np.float32)[labels], np.stack([p_fake, 1 - p_fake], axis=1))
    per_class = np.asarray(f1.result())
    assert per_class.shape == (2,)
    expected_fake = f1_score(labels == 0, p_fake >= 0.5)
    assert per_class[0] == pytest.approx(expected_fake)
    assert per_class[1] == pytest.approx(f1_score(labels == 1, p_fake < 0.5))

    logs = {"f1": per_class, "val_f1": per_class, "loss": 0.5}
    FakeClassLogs().on_epoch_end(0, logs)
    assert logs == {"f1": pytest.approx(expected_fake), "val_f1": pytest.approx(expected_fake),
                    "loss": 0.5}  # fmt: skip


@pytest.mark.slow
def test_saved_h5_loads_in_a_fresh_process_with_identical_predictions(reference, tmp_path):
    """The ResNet101 classifier through plain keras.models.load_model: no project code, no
    custom objects."""
    path = tmp_path / "model.h5"
    reference.save(path, include_optimizer=False)
    pixels = np.random.default_rng(1).integers(0, 256, size=(4, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "pixels.npy", pixels)
    expected = reference.predict(pixels, verbose=0)
    script = (
        "import sys, json, numpy as np, keras\n"
        f"model = keras.models.load_model({str(path)!r})\n"
        f"pixels = np.load({str(tmp_path / 'pixels.npy')!r})\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, model.predict(pixels, verbose=0))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('realfake'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)


@pytest.mark.parametrize("backbone", sorted(RESNETS))
def test_unavailable_imagenet_weights_name_the_alternatives(backbone, monkeypatch):
    """Without internet Keras cannot fetch the weights; the error says what to do instead."""
    import keras

    from realfake.model import imagenet_weights_path

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(PipelineError) as caught:
        imagenet_weights_path(backbone)
    message = str(caught.value)
    assert "\n" not in message
    assert "--weights none" in message and "--weights PATH" in message
    assert f"{RESNETS[backbone]} (no internet?)" in message
    assert f"{backbone}_weights_tf_dim_ordering_tf_kernels_notop.h5" in message


def test_missing_weights_file_is_reported(tmp_path):
    from realfake.model import build_model

    with pytest.raises(PipelineError, match="weights file not found"):
        build_model(image_size=32, weights=str(tmp_path / "absent.h5"))


@pytest.mark.parametrize("weights", ["imagenet", "a file"])
def test_the_tiny_backbone_refuses_pretrained_weights(weights, tmp_path):
    from realfake.model import build_model

    if weights == "a file":
        weights = str(tmp_path / "weights.h5")
        (tmp_path / "weights.h5").write_bytes(b"")
    with pytest.raises(PipelineError, match="the tiny backbone has no pretrained weights"):
        build_model(weights=weights, backbone="tiny")


def test_an_unknown_backbone_is_refused_with_the_choices():
    from realfake.model import build_model

    with pytest.raises(PipelineError) as caught:
        build_model(backbone="resnet18")
    assert str(caught.value) == (
        "unknown backbone resnet18: choose resnet50, resnet101, resnet152, tiny"
    )


def test_zero_init_residual_zeroes_the_last_scale_of_every_residual_branch():
    """The tiny base has one residual block per stage, four in all; only their third BN starts
    at zero."""
    from realfake.model import build_model

    model = build_model(dense_units=8, zero_init_residual=True, backbone="tiny")
    zeroed, others = zeroed_and_other_gammas(model.get_layer("tiny"))
    assert zeroed == [f"conv{stage}_block1_3_bn" for stage in (2, 3, 4, 5)]
    assert others and all(np.all(gamma == 1.0) for gamma in others.values())


@pytest.mark.slow
def test_every_resnet_backbone_is_the_keras_network_under_the_same_head():
    """ResNet50, ResNet101 and ResNet152: the base is Keras's network of that name under the
    same head and preprocessing, and zero-init residual starts the last batch-norm scale of each
    of its 16, 33 or 50 residual blocks at zero."""
    import keras

    from realfake.model import build_model

    for backbone, blocks in RESIDUAL_BLOCKS.items():
        model = build_model(dense_units=16, l2=1e-3, zero_init_residual=True, backbone=backbone)
        names = [layer.name for layer in model.layers]
        assert names[:3] == ["image", "preprocess", backbone]
        assert type(model.get_layer("preprocess")).__name__ == "Rescaling"
        assert_specified_head(model)
        base = model.get_layer(backbone)
        keras_resnet = getattr(keras.applications, RESNETS[backbone])(
            include_top=False, weights=None, input_shape=(32, 32, 3)
        )
        assert [layer.name for layer in base.layers[1:]] == [
            layer.name for layer in keras_resnet.layers[1:]
        ]
        zeroed, others = zeroed_and_other_gammas(base)
        assert len(zeroed) == blocks, backbone
        assert all(name.endswith("_3_bn") for name in zeroed)
        assert all(np.all(gamma == 1.0) for gamma in others.values())
        del model, base, keras_resnet


def test_zero_init_residual_refuses_loaded_weights(tmp_path):
    from realfake.model import build_model

    with pytest.raises(PipelineError, match="--weights none"):
        build_model(image_size=32, weights="imagenet", zero_init_residual=True)
