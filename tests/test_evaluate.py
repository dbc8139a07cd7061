"""evaluate_model.py and the metrics behind it: threshold choice, Fake-positive metrics, the files
written, the card's threshold applied, and one-line errors."""

import json
import shutil

import numpy as np
import pytest
from conftest import mirror
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

import evaluate_model
from realfake.evaluation.metrics import balanced_accuracy, choose_threshold, classification_metrics
from realfake.inference.modelcard import load_card, save_card

COUNTS = {"FAKE": 5, "REAL": 3}  # aliases, as the Kaggle archive names them


def last_json_line(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_choose_threshold_separates_and_prefers_the_middle():
    labels = np.array([0, 0, 0, 1, 1, 1])  # Fake = 0
    p_fake = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    threshold = choose_threshold(labels, p_fake)
    assert threshold == pytest.approx(0.5)  # every threshold in (0.3, 0.7] is perfect
    assert balanced_accuracy(labels, p_fake, threshold) == 1.0

    shifted = np.array([0.45, 0.42, 0.40, 0.2, 0.1, 0.05])
    threshold = choose_threshold(labels, shifted)
    assert 0.2 < threshold <= 0.40 and balanced_accuracy(labels, shifted, threshold) == 1.0


FAKE, REAL = 0, 1


@pytest.mark.parametrize(
    ("scored", "threshold"),
    [
        # Perfect anywhere in (0.4, 0.7]: 0.5 itself, not the midpoint 0.55.
        ([(0.1, REAL), (0.4, REAL), (0.7, FAKE), (0.9, FAKE)], 0.5),
        # Perfect only in (0.1, 0.3]: the midpoint between the scores either side.
        ([(0.05, REAL), (0.1, REAL), (0.3, FAKE), (0.45, FAKE)], 0.2),
        # Balanced accuracy 0.75 at the midpoints 0.15 and 0.375: the later one, nearer 0.5.
        ([(0.1, REAL), (0.2, FAKE), (0.3, REAL), (0.45, FAKE)], 0.375),
        # 0.75 at the midpoints 0.625 and 0.85: the earlier one, nearer 0.5.
        ([(0.55, REAL), (0.7, FAKE), (0.8, REAL), (0.9, FAKE)], 0.625),
        # One class only: every image on its side, at the lowest score or at 1.
        ([(0.2, FAKE), (0.3, FAKE), (0.4, FAKE)], 0.2),
        ([(0.6, REAL), (0.7, REAL), (0.8, REAL)], 1.0),
    ],
)
def test_choose_threshold_is_the_best_candidate_nearest_one_half(scored, threshold):
    probabilities, labels = (np.array(column) for column in zip(*scored, strict=True))
    assert choose_threshold(labels, probabilities) == pytest.approx(threshold, abs=1e-12)


def test_choose_threshold_is_not_pulled_to_the_majority_class():
    labels = np.array([0] * 2 + [1] * 8)
    p_fake = np.array([0.6, 0.55] + [0.58] + [0.1] * 7)
    threshold = choose_threshold(labels, p_fake)
    # Both Fakes found at the cost of one Real, rather than a perfect Real class and half the Fakes.
    assert balanced_accuracy(labels, p_fake, threshold) == pytest.approx((1.0 + 7 / 8) / 2)


def test_choose_threshold_maximises_balanced_not_plain_accuracy():
    labels = np.array([0] * 2 + [1] * 8)  # Fake = 0
    p_fake = np.array([0.6, 0.3] + [0.4, 0.35] + [0.1] * 6)
    threshold = choose_threshold(labels, p_fake)
    # Finding the second Fake costs two Reals: plain accuracy would stay at 0.5 (9/10 right),
    # balanced accuracy moves below 0.3 (both Fakes, 6 of 8 Reals).
    assert 0.1 < threshold <= 0.3
    assert balanced_accuracy(labels, p_fake, threshold) == pytest.approx((1.0 + 6 / 8) / 2)
    assert classification_metrics(labels, p_fake, threshold)["accuracy"] == pytest.approx(0.8)
    assert classification_metrics(labels, p_fake, 0.5)["accuracy"] == pytest.approx(0.9)


def test_classification_metrics_use_fake_as_positive():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    p_fake = np.clip(np.where(labels == 0, 0.65, 0.35) + rng.normal(0, 0.2, 50), 0.01, 0.99)
    metrics = classification_metrics(labels, p_fake, threshold=0.5)
    is_fake, says_fake = labels == 0, p_fake >= 0.5
    assert metrics["accuracy"] == pytest.approx(np.mean(is_fake == says_fake))
    assert metrics["precision"] == pytest.approx(precision_score(is_fake, says_fake))
    assert metrics["recall"] == pytest.approx(recall_score(is_fake, says_fake))
    assert metrics["f1"] == pytest.approx(f1_score(is_fake, says_fake))
    assert metrics["auc"] == pytest.approx(roc_auc_score(is_fake, p_fake))
    expected_loss = -np.mean(np.where(is_fake, np.log(p_fake), np.log(1 - p_fake)))
    assert metrics["loss"] == pytest.approx(expected_loss)
    assert metrics["positive_class"] == "Fake" and metrics["images"] == 50


def test_evaluate_writes_metrics_and_plots(saved_model, image_tree, tmp_path, capsys):
    import keras

    from realfake.training.pipeline import load_split

    data = image_tree(COUNTS, name="test")
    output = tmp_path / "evaluation"
    code = evaluate_model.main(
        ["--model", str(saved_model), "--data", str(data), "--output", str(output), "--quiet"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert sorted(p.name for p in output.iterdir()) == [
        "confusion_matrix.png",
        "metrics.json",
        "roc_curve.png",
    ]
    metrics = last_json_line(out)
    assert metrics == json.loads((output / "metrics.json").read_text())
    assert metrics["counts"] == {"Fake": 5, "Real": 3} and metrics["images"] == 8
    assert metrics["threshold"] == 0.5 and metrics["positive_class"] == "Fake"
    assert "evaluated 8 images (Fake 5, Real 3)" in out

    # The same numbers as scoring the model directly on the shared decoding, one image at a time
    # (as the app does) or in a batch.
    model = keras.models.load_model(saved_model, compile=False)
    split = load_split(data, 32, quiet=True)
    pixels = split.images.astype(np.float32)
    one_by_one = np.array([model.predict(image[None], verbose=0)[0, 0] for image in pixels])
    batched = model.predict(split.images.astype(np.float32), verbose=0)[:, 0]
    np.testing.assert_allclose(one_by_one, batched, atol=1e-6)
    expected = classification_metrics(split.labels, batched, 0.5)
    for key in ("accuracy", "precision", "recall", "f1", "auc"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6)


@pytest.mark.parametrize(("threshold", "accuracy"), [(0.0, 5 / 8), (1.0, 3 / 8)])
def test_evaluate_applies_the_cards_threshold(
    threshold, accuracy, saved_model, image_tree, tmp_path, capsys
):
    model_path = tmp_path / "copy.h5"
    shutil.copy(saved_model, model_path)
    save_card(model_path, {**load_card(saved_model), "threshold": threshold})
    data = image_tree(COUNTS, name="test")
    argv = ["--model", str(model_path), "--data", str(data), "--output", str(tmp_path / "e")]
    assert evaluate_model.main([*argv, "--quiet"]) == 0
    metrics = last_json_line(capsys.readouterr().out)
    assert metrics["threshold"] == threshold
    assert metrics["accuracy"] == pytest.approx(accuracy)  # all Fake, then all Real


def test_evaluate_threshold_flag_overrides_the_cards(saved_model, image_tree, tmp_path, capsys):
    model_path = tmp_path / "copy.h5"
    shutil.copy(saved_model, model_path)
    save_card(model_path, {**load_card(saved_model), "threshold": 0.0})
    data = image_tree(COUNTS, name="test")
    argv = ["--model", str(model_path), "--data", str(data), "--output", str(tmp_path / "e")]
    assert evaluate_model.main([*argv, "--quiet"]) == 0
    assert last_json_line(capsys.readouterr().out)["accuracy"] == pytest.approx(5 / 8)
    assert evaluate_model.main([*argv, "--threshold", "1", "--quiet"]) == 0
    metrics = last_json_line(capsys.readouterr().out)
    assert metrics["threshold"] == 1.0
    assert metrics["accuracy"] == pytest.approx(3 / 8)  # all Real under the given threshold
    assert load_card(model_path)["threshold"] == 0.0  # the card itself is left as it was


def test_evaluate_without_a_card_uses_threshold_half_and_the_image_alone(
    saved_model, image_tree, tmp_path, capsys
):
    from realfake.inference.classifier import probability_fake
    from realfake.training.pipeline import load_split

    model_path = tmp_path / "bare.h5"
    shutil.copy(saved_model, model_path)  # the model file alone, no .json beside it
    data = image_tree(COUNTS, name="test")
    argv = ["--model", str(model_path), "--data", str(data), "--output", str(tmp_path / "e")]
    assert evaluate_model.main([*argv, "--quiet"]) == 0
    out = capsys.readouterr().out
    metrics = last_json_line(out)
    assert metrics["threshold"] == 0.5 and metrics["test_time_flip"] is False
    assert "mirror images" not in out
    assert not model_path.with_suffix(".json").exists()

    import keras

    split = load_split(data, 32, quiet=True)
    model = keras.models.load_model(saved_model, compile=False)
    expected = classification_metrics(split.labels, probability_fake(model, split.images), 0.5)
    for key in ("loss", "accuracy", "auc"):
        assert metrics[key] == pytest.approx(expected[key], rel=1e-6)


def test_evaluate_errors_are_one_line(saved_model, image_tree, tmp_path, capsys):
    data = image_tree({"FAKE": 2}, name="only_fake")
    assert evaluate_model.main(["--model", str(saved_model), "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no Real folder" in err and err.count("\n") == 1

    assert evaluate_model.main(["--model", str(tmp_path / "none.h5"), "--data", str(data)]) == 1
    assert capsys.readouterr().err == (
        f"error: no model at {tmp_path / 'none.h5'} yet: "
        "train one with `python model_training.py --recipe cifake`\n"
    )

    with pytest.raises(SystemExit) as caught:
        evaluate_model.main(["--batch-size", "0"])
    assert caught.value.code == 2
    assert "--batch-size must be at least 1" in capsys.readouterr().err


def left_column_model():
    """A model whose P(Fake) depends only on the image's leftmost column, so that an image and its
    mirror image get different answers that can be worked out by hand."""
    import keras

    inputs = keras.Input((4, 4, 1))
    column = keras.layers.Cropping2D(((0, 0), (0, 3)))(inputs)
    mean = keras.layers.GlobalAveragePooling2D()(column)
    outputs = keras.layers.Dense(2, activation="softmax")(mean)
    model = keras.Model(inputs, outputs)
    model.layers[-1].set_weights([np.array([[1.0, -1.0]], np.float32), np.zeros(2, np.float32)])
    return model


def test_test_time_flip_averages_each_image_with_its_mirror_image():
    from realfake.inference.classifier import probability_fake

    images = np.arange(3 * 16, dtype=np.float32).reshape(3, 4, 4, 1) / 48.0
    model = left_column_model()

    def by_hand(column_mean):  # softmax of (m, -m), Fake first
        return 1.0 / (1.0 + np.exp(-2.0 * column_mean))

    left, right = images[:, :, 0, 0].mean(axis=1), images[:, :, -1, 0].mean(axis=1)
    plain = probability_fake(model, images, batch_size=2)
    averaged = probability_fake(model, images, batch_size=2, test_time_flip=True)
    np.testing.assert_allclose(plain, by_hand(left), rtol=1e-6)
    np.testing.assert_allclose(averaged, (by_hand(left) + by_hand(right)) / 2, rtol=1e-6)
    assert np.all(np.abs(averaged - plain) > 1e-3)
    np.testing.assert_array_equal(mirror(images)[:, :, ::-1], images)
    # Averaged, an image and its mirror image get the same answer.
    np.testing.assert_allclose(
        probability_fake(model, mirror(images), test_time_flip=True), averaged, rtol=1e-6
    )


def test_evaluate_follows_the_cards_test_time_flip(saved_model, image_tree, tmp_path, capsys):
    import keras

    from realfake.inference.classifier import probability_fake
    from realfake.training.pipeline import load_split

    data = image_tree(COUNTS, name="test")
    split = load_split(data, 32, quiet=True)
    model = keras.models.load_model(saved_model, compile=False)
    results = {}
    for flip in (False, True):
        model_path = tmp_path / f"flip-{flip}.h5"
        shutil.copy(saved_model, model_path)
        save_card(model_path, {**load_card(saved_model), "test_time_flip": flip})
        argv = ["--model", str(model_path), "--data", str(data), "--output", str(tmp_path / "e")]
        assert evaluate_model.main(argv) == 0
        out = capsys.readouterr().out
        assert ("with their mirror images" in out) == flip
        results[flip] = last_json_line(out)
        assert results[flip]["test_time_flip"] is flip
        expected = classification_metrics(
            split.labels,
            probability_fake(model, split.images, test_time_flip=flip, batch_size=64),
            0.5,
        )
        assert results[flip]["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert results[True]["loss"] != pytest.approx(results[False]["loss"], rel=1e-6)
