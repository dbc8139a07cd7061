"""The one inference contract: the loader, the validated card that belongs to its model, P(Fake)
under the card, the uncertain band, and that every consumer reaches P(Fake) through it."""

import ast
import html
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_modelcard import BAD_CARDS

import app as app_script
import evaluate_model
import predict
from realfake.inference import classifier as inference
from realfake.inference.modelcard import CardError, card_path, load_card, save_card

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def copied_model(saved_model, tmp_path) -> Path:
    """A private copy of the session's model and its card, free to damage."""
    path = tmp_path / "models" / "classifier.h5"
    path.parent.mkdir()
    shutil.copy(saved_model, path)
    save_card(path, load_card(saved_model))
    return path


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: the model card") and err.count("\n") == 1, err
    return err


def _load_card_refusal(model, data, output, capsys) -> str:
    with pytest.raises(CardError, match="model card") as caught:
        load_card(model)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def _evaluation_refusal(model, data, output, capsys) -> str:
    argv = ["--model", str(model), "--data", str(data), "--output", str(output), "--quiet"]
    assert evaluate_model.main(argv) == 1
    return _one_line_error(capsys)


def _batch_prediction_refusal(model, data, output, capsys) -> str:
    argv = [str(data), "--model", str(model), "--output", str(output / "scores.csv"), "--quiet"]
    assert predict.main(argv) == 1
    assert not (output / "scores.csv").exists()
    return _one_line_error(capsys)


def _app_check_refusal(model, data, output, capsys) -> str:
    assert app_script.main(["--model", str(model), "--check"]) == 1
    return _one_line_error(capsys)


def _page_refusal(model, data, output, capsys) -> str:
    from realfake.app.webapp import create_app

    page = create_app({"MODEL_PATH": str(model)}).test_client().get("/")
    assert page.status_code == 200  # the page says why, never a 500
    return html.unescape(page.get_data(as_text=True))


def _health_refusal(model, data, output, capsys) -> str:
    from realfake.app.webapp import create_app

    health = create_app({"MODEL_PATH": str(model)}).test_client().get("/health")
    assert health.status_code == 503 and health.get_json()["status"] == "unavailable"
    return health.get_json()["error"]


# Every consumer of a card, each tested alone (a fresh app each time, since an app remembers
# why its model failed): one that let a bad card through is not hidden by another that refused.
CARD_READERS = {
    "load_card": _load_card_refusal,
    "evaluate_model.py": _evaluation_refusal,
    "predict.py": _batch_prediction_refusal,
    "app.py --check": _app_check_refusal,
    "the page": _page_refusal,
    "/health": _health_refusal,
}


@pytest.mark.parametrize("reader", list(CARD_READERS))
def test_a_bad_card_is_refused_in_one_line_by_every_reader(
    reader, copied_model, image_tree, tmp_path, capsys
):
    data = image_tree({"Fake": 1, "Real": 1})
    for text, message in BAD_CARDS:
        card_path(copied_model).write_text(text, encoding="utf-8")
        refusal = CARD_READERS[reader](copied_model, data, tmp_path / "out", capsys)
        assert message in refusal, (text, refusal)


def test_a_card_left_from_another_model_is_refused_naming_both_files(copied_model, tmp_path):
    """The case of a run killed between writing its model and its card: old card, new model."""
    from realfake.model import build_model

    other = build_model(image_size=32, weights="none", dense_units=8, backbone="tiny")
    other.save(copied_model)  # a different model under the old card
    with pytest.raises(inference.ModelUnavailable) as caught:
        inference.load_classifier(copied_model)
    message = str(caught.value)
    assert str(card_path(copied_model)) in message and str(copied_model) in message
    assert "does not belong to the model" in message and "\n" not in message


def test_save_classifier_writes_the_model_first_and_a_card_that_names_it(saved_model, tmp_path):
    from realfake.core.fileops import file_digest
    from realfake.model import build_model

    model = build_model(image_size=32, weights="none", dense_units=8, backbone="tiny")
    path = tmp_path / "out" / "model.h5"
    inference.save_classifier(model, {"threshold": 0.25, "image_size": 32}, path)
    card = json.loads(card_path(path).read_text())
    assert card["model_sha256"] == file_digest(path)
    assert card["model_bytes"] == path.stat().st_size and card["model_file"] == "model.h5"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.h5", "model.json"]
    classifier = inference.load_classifier(path)
    assert classifier.threshold == 0.25


def test_a_kill_while_the_model_is_written_leaves_the_previous_model_and_card(
    copied_model, monkeypatch
):
    from realfake.model import build_model

    before = copied_model.read_bytes(), card_path(copied_model).read_bytes()
    model = build_model(image_size=32, weights="none", dense_units=8, backbone="tiny")

    def dies_midway(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF\r\n half a model")
        raise KeyboardInterrupt

    monkeypatch.setattr(type(model), "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        inference.save_classifier(model, {"threshold": 0.1}, copied_model)
    assert (copied_model.read_bytes(), card_path(copied_model).read_bytes()) == before
    assert inference.load_classifier(copied_model).threshold == 0.5


def test_a_kill_between_the_model_and_its_card_is_caught_by_every_reader(
    copied_model, monkeypatch, capsys
):
    from realfake.model import build_model

    model = build_model(image_size=32, weights="none", dense_units=8, backbone="tiny")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(inference, "save_card", killed)
    with pytest.raises(KeyboardInterrupt):
        inference.save_classifier(model, {"threshold": 0.1}, copied_model)
    monkeypatch.undo()
    assert app_script.main(["--model", str(copied_model), "--check"]) == 1
    assert "does not belong to the model" in capsys.readouterr().err


def test_the_model_decides_the_image_size_and_a_card_that_disagrees_is_refused(copied_model):
    card = load_card(copied_model)
    save_card(copied_model, {**card, "image_size": 64})
    with pytest.raises(inference.ModelUnavailable, match="says image size 64 but the model"):
        inference.load_classifier(copied_model)


def test_a_folder_given_as_the_model_is_named_as_a_folder(tmp_path):
    with pytest.raises(inference.ModelUnavailable, match="is a folder, not a model file"):
        inference.load_classifier(tmp_path)


def test_without_a_card_the_defaults_apply(saved_model, tmp_path):
    path = tmp_path / "bare.h5"
    shutil.copy(saved_model, path)
    classifier = inference.load_classifier(path)
    assert (classifier.threshold, classifier.test_time_flip, classifier.uncertain_band) == (
        0.5,
        False,
        None,
    )
    assert classifier.image_size == 32


def test_predictions_follow_the_cards_threshold_and_uncertain_band(copied_model):
    card = load_card(copied_model)
    save_card(copied_model, {**card, "threshold": 0.4, "uncertain_band": {"low": 0.3, "high": 0.6}})
    classifier = inference.load_classifier(copied_model)
    cases = [(0.2, "Real", "Real"), (0.35, "Real", "Uncertain"), (0.5, "Fake", "Uncertain")]
    for probability, label, verdict in cases + [(0.7, "Fake", "Fake")]:
        prediction = inference.Prediction(probability, 1 - probability, 0.4, (0.3, 0.6))
        assert (prediction.label, prediction.verdict) == (label, verdict)
    assert classifier.uncertain_band == (0.3, 0.6)
    # A threshold given instead of the card's has no band of its own.
    assert inference.load_classifier(copied_model, threshold=0.9).uncertain_band is None


def _band_end(probability, wrong, threshold, side, window):
    """Where the farthest run of `window` same-side neighbours with one wrong answer in ten
    ends, counted by hand: the image `window - 1` places past that side's farthest wrong one."""
    on_side = probability < threshold if side == "low" else probability >= threshold
    ranked = np.sort(np.abs(probability[on_side] - threshold))
    farthest_wrong = np.abs(probability[on_side & wrong] - threshold).max()
    rank = int(np.nonzero(ranked == farthest_wrong)[0][0])
    return ranked[rank + window - 1]


def test_uncertain_band_is_where_validation_answers_are_often_wrong():
    from realfake.evaluation.metrics import uncertain_band

    # Fake = 0, threshold 0.5. Near it (distance under 0.1), 20 of 40 answers are wrong; far from
    # it (distance 0.3-0.5), 60 answers are all right. 20% wrong overall: counted from the
    # threshold outwards, the band would take in every image, confident ones included.
    rng = np.random.default_rng(0)
    near = 0.5 + rng.uniform(-0.1, 0.1, 40)
    near_labels = np.where(near >= 0.5, 0, 1)  # right ...
    wrong = rng.choice(40, 20, replace=False)
    near_labels[wrong] = 1 - near_labels[wrong]  # ... but for half of them
    far = np.concatenate([rng.uniform(0.0, 0.2, 30), rng.uniform(0.8, 1.0, 30)])
    far_labels = np.where(far >= 0.5, 0, 1)
    probability = np.concatenate([near, far])
    labels = np.concatenate([near_labels, far_labels])
    is_wrong = (probability >= 0.5) != (labels == 0)

    band = uncertain_band(labels, probability, 0.5, error_rate=0.1, min_images=10)
    # Every wrong answer is inside the band, and no confident answer is.
    assert (
        band["low"] <= probability[is_wrong].min() and probability[is_wrong].max() <= band["high"]
    )
    assert far.min() < band["low"] < 0.5 < band["high"] < far.max()
    # One wrong answer in a run of 10 is the 10% that qualifies, so on each side the farthest
    # qualifying run starts at that side's farthest wrong answer, and the band ends exactly at
    # the run's tenth image: the two ends are found apart.
    assert band["low"] == 0.5 - _band_end(probability, is_wrong, 0.5, "low", 10)
    assert band["high"] == 0.5 + _band_end(probability, is_wrong, 0.5, "high", 10)
    assert band["high"] - 0.5 != pytest.approx(0.5 - band["low"])
    assert "10 (below) or 10 (above) validation images" in band["rule"]

    # A model without mistakes has an empty band; one wrong everywhere has a band over everything.
    clean = uncertain_band(far_labels, far, 0.5)
    assert (clean["low"], clean["high"]) == (0.5, 0.5)
    everywhere = uncertain_band(1 - far_labels, far, 0.5)
    assert (everywhere["low"], everywhere["high"]) == (far.min(), far.max())


def test_uncertain_band_confident_mistakes_on_one_side_leave_the_other_sides_verdicts():
    from realfake.evaluation.metrics import uncertain_band

    # Threshold 0.6. Called Real: 100 images from 0.0 to 0.59, one in five an AI image (wrong),
    # spread all the way down. Called Fake: 100 images from 0.61 to 1.0, all right. The low end
    # reaches the farthest mistakes; the Fake side, with none, keeps its every verdict.
    below = np.linspace(0.59, 0.0, 100)
    below_labels = np.where(np.arange(100) % 5 == 0, 0, 1)
    above = np.linspace(0.61, 1.0, 100)
    probability = np.concatenate([below, above])
    labels = np.concatenate([below_labels, np.zeros(100, dtype=int)])

    band = uncertain_band(labels, probability, 0.6)
    assert band["high"] == 0.6
    assert band["low"] < 0.05
    # Mistakes on the Fake side instead take in the Fake side only.
    flipped = uncertain_band(1 - labels, 1.0 - probability, 0.4)
    assert flipped["low"] == 0.4
    assert flipped["high"] > 0.95


def test_uncertain_band_runs_grow_with_the_validation_set_and_need_their_share_wrong():
    from realfake.evaluation.metrics import uncertain_band

    # 400 images, all said Fake: runs of 20 (5% of them), each needing 2 wrong answers. The four
    # nearest the threshold are wrong, and one lone answer far out: 1 in 20 is under 10%.
    distance = np.linspace(0.001, 0.4, 400)
    labels = np.zeros(400, dtype=int)
    labels[[0, 1, 2, 3, 300]] = 1
    band = uncertain_band(labels, 0.5 + distance, 0.5)
    assert "20 (above) validation images" in band["rule"]
    # The last run with two wrong answers starts at the third image and ends at the 22nd; the
    # side without images adds nothing.
    assert (band["low"], band["high"]) == (0.5, 0.5 + distance[21])
    assert band["rule"] == (
        "P(Fake) from 0.500 to 0.522: on each side of the threshold, the farthest point where, "
        "of 10 (below) or 20 (above) validation images at neighbouring distances from it, at "
        "least 10% were misclassified"
    )
    # The run's size is each side's own 5%: 400 more images below, all right, leave it at 20.
    more = uncertain_band(
        np.concatenate([labels, np.ones(400, dtype=int)]),
        np.concatenate([0.5 + distance, 0.5 - distance]),
        0.5,
    )
    assert (more["low"], more["high"]) == (0.5, 0.5 + distance[21])


def test_uncertain_band_needs_a_whole_run_and_stays_within_probabilities():
    from realfake.evaluation.metrics import uncertain_band

    probability = np.linspace(0.0, 0.7, 10)  # all said Real at threshold 0.8, all wrong
    wrong_everywhere = np.zeros(10, dtype=int)
    band = uncertain_band(wrong_everywhere, probability, 0.8)
    assert (band["low"], band["high"]) == (0.0, 0.8)  # ten images: exactly one run
    nine = uncertain_band(wrong_everywhere[:9], probability[:9], 0.8)
    assert (nine["low"], nine["high"]) == (0.8, 0.8)  # too few for a run: no band


def test_the_threshold_itself_says_fake():
    from realfake.evaluation.metrics import predicted_fake

    assert predicted_fake(np.array([0.3, 0.5, 0.7]), 0.5).tolist() == [False, True, True]


def test_training_writes_a_band_that_holds_its_threshold(trained_card):
    band = trained_card["uncertain_band"]
    assert band["low"] <= trained_card["threshold"] <= band["high"]
    assert "validation images" in band["rule"]


@pytest.fixture(scope="module")
def trained_card(trained_model):
    """The card of the session's 1-epoch run of the tiny model on the tiny tree."""
    return load_card(trained_model)


def test_training_records_the_backbone_and_the_loader_needs_nothing_else(trained_model):
    card = load_card(trained_model)
    assert card["backbone"] == card["settings"]["backbone"] == "tiny"
    classifier = inference.load_classifier(trained_model)
    assert classifier.backbone == "tiny"
    assert classifier.probability_fake(np.zeros((1, 32, 32, 3), np.uint8)).shape == (1,)


def test_a_card_without_a_backbone_is_read_as_resnet101s(copied_model):
    """Cards written before the backbone was recorded describe the reference ResNet101."""
    card = load_card(copied_model)
    assert inference.load_classifier(copied_model).backbone == card["backbone"] == "tiny"
    del card["backbone"]
    save_card(copied_model, card)
    assert inference.load_classifier(copied_model).backbone == "resnet101"


def _python_sources() -> list[Path]:
    folders = [PROJECT / "realfake", PROJECT / "bench"]
    return sorted(PROJECT.glob("*.py")) + [p for f in folders for p in sorted(f.rglob("*.py"))]


def _calls(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            function = node.func
            names.add(
                function.attr
                if isinstance(function, ast.Attribute)
                else getattr(function, "id", "")
            )
    return names


def test_only_the_inference_module_loads_models_or_flips_images_at_test_time():
    allowed = PROJECT / "realfake" / "inference" / "classifier.py"
    offenders = {
        str(path.relative_to(PROJECT)): sorted(_calls(path) & {"load_model", "reverse"})
        for path in _python_sources()
        if path != allowed
    }
    assert {name: calls for name, calls in offenders.items() if calls} == {}
    assert {"load_model", "reverse"} <= _calls(allowed)


def test_evaluation_the_app_and_training_reach_probability_through_one_function(
    saved_model, image_tree, tmp_path, monkeypatch, trained_card
):
    seen = []
    real_forward = inference.forward

    def spy(model, test_time_flip):
        seen.append(test_time_flip)
        return real_forward(model, test_time_flip)

    monkeypatch.setattr(inference, "forward", spy)
    data = image_tree({"Fake": 2, "Real": 2})
    argv = ["--model", str(saved_model), "--data", str(data), "--output", str(tmp_path / "e")]
    assert evaluate_model.main([*argv, "--quiet"]) == 0
    assert len(seen) == 1

    from realfake.app.serving import Predictor

    Predictor(saved_model, smoothgrad_samples=1).predict_arrays(np.zeros((2, 32, 32, 3), np.uint8))
    assert len(seen) >= 2

    import realfake.training.run

    assert realfake.training.run.probability_fake is inference.probability_fake
    assert "probability_fake" in _calls(PROJECT / "realfake" / "training" / "run.py")


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        (("model_sha256",), "does not say which model file it describes (no model_sha256)"),
        (
            ("model_file", "model_bytes", "model_sha256"),
            "(no model_file, model_bytes, model_sha256)",
        ),
    ],
)
def test_a_card_that_does_not_name_its_model_is_refused(drop, message, copied_model):
    card = json.loads(card_path(copied_model).read_text())
    text = json.dumps({key: value for key, value in card.items() if key not in drop})
    card_path(copied_model).write_text(text, encoding="utf-8")
    with pytest.raises(CardError) as caught:
        load_card(copied_model)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_an_empty_card_is_refused_beside_a_model(copied_model):
    card_path(copied_model).write_text("{}", encoding="utf-8")
    with pytest.raises(CardError, match="does not say which model file it describes"):
        load_card(copied_model)


def test_a_key_given_twice_is_refused_not_silently_the_last(copied_model):
    text = card_path(copied_model).read_text().rstrip().rstrip("}") + ', "threshold": 0.01}'
    card_path(copied_model).write_text(text, encoding="utf-8")
    with pytest.raises(CardError, match='gives the key "threshold" twice'):
        load_card(copied_model)


def test_a_card_that_starts_with_a_byte_order_mark_is_read(copied_model):
    card = load_card(copied_model)
    card_path(copied_model).write_text(card_path(copied_model).read_text(), encoding="utf-8-sig")
    assert card_path(copied_model).read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_card(copied_model) == card
