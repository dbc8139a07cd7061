"""The model card on its own, without a model: every bad card refused in one line naming it, the
edges of each range accepted, and a card refused beside a model file it does not describe."""

import json
from pathlib import Path

import pytest

from realfake.inference.modelcard import (
    CardError,
    card_path,
    check_card_matches,
    load_card,
    model_identity,
    save_card,
    validate_card,
)

# Cards that every reader must refuse, with the words of the refusal (the readers' tests in
# test_inference.py use the same list).
BAD_CARDS = [
    ('{"threshold": 0.5, "image_si', "is not valid JSON"),
    ("[1, 2]", "must be a JSON object, not list"),
    ('"a string"', "must be a JSON object, not str"),
    ('{"threshold": "abc"}', 'threshold must be a number from 0 to 1, not "abc"'),
    ('{"threshold": 1.5}', "threshold must be a number from 0 to 1, not 1.5"),
    ('{"image_size": "big"}', 'image_size must be a whole number of pixels, 1-8192, not "big"'),
    ('{"image_size": true}', "image_size must be a whole number"),
    ('{"test_metrics": "x"}', 'test_metrics must be an object of numbers, not "x"'),
    ('{"training_data": {"train": {"Fake": -1}}}', "training_data must be an object of counts"),
    ('{"test_time_flip": "yes"}', 'test_time_flip must be true or false, not "yes"'),
    ('{"class_names": ["Real", "Fake"]}', "class_names must be the list ['Fake', 'Real']"),
    (
        '{"backbone": "resnet18"}',
        'backbone must be one of resnet50, resnet101, resnet152, tiny, not "resnet18"',
    ),
    (
        '{"threshold": 0.9, "uncertain_band": {"low": 0.1, "high": 0.2}}',
        "must contain the threshold 0.9",
    ),
]

# Each value on the refused side of one edge of its key's range, beside its accepted neighbour.
EDGES = [
    ("threshold", 0.0, -0.001),
    ("threshold", 1.0, 1.001),
    ("image_size", 1, 0),
    ("image_size", 8192, 8193),
    ("uncertain_band", {"low": 0.5, "high": 0.5}, {"low": 0.6, "high": 0.5}),
    ("uncertain_band", {"low": 0.0, "high": 1.0}, {"low": -0.1, "high": 1.0}),
    ("uncertain_band", {"low": 0.0, "high": 1.0}, {"low": 0.0, "high": 1.1}),
    ("training_data", {"train": {"Fake": 0}}, {"train": {"Fake": 1.5}}),
    ("test_metrics", {"auc": None, "note": "x", "f1": 1}, {"auc": [1]}),
    ("model_bytes", 0, -1),
    ("model_sha256", "0" * 64, "0" * 63),
    ("model_sha256", "ab" * 32, "AB" * 32),
    ("training_seconds", 0, -1),
    ("epochs_run", 0, -1),
    ("best_epoch", None, 0),
    ("best_epoch", 1, True),
    ("positive_class", "Fake", "Real"),
    ("robustness", [{"blur": 1}], [1]),
    ("robustness_summary", ["line"], [1]),
    ("trained_on", {}, []),
    ("weights", "none", None),
]


@pytest.mark.parametrize(("text", "message"), BAD_CARDS)
def test_a_bad_card_is_refused_in_one_line_naming_it(text, message, tmp_path):
    model = tmp_path / "classifier.h5"
    card_path(model).write_text(text, encoding="utf-8")
    with pytest.raises(CardError) as caught:
        load_card(model)
    refusal = str(caught.value)
    assert refusal.startswith(f"the model card {card_path(model)}") and message in refusal
    assert "\n" not in refusal


@pytest.mark.parametrize(("key", "accepted", "refused"), EDGES)
def test_each_range_holds_its_edge_and_refuses_one_step_past_it(key, accepted, refused):
    assert validate_card({key: accepted}) == {key: accepted}
    with pytest.raises(CardError, match=f"^the model card model card: {key} must be "):
        validate_card({key: refused})


def test_the_band_may_end_at_its_threshold_but_must_hold_it():
    band = {"low": 0.2, "high": 0.4}
    for threshold in (0.2, 0.3, 0.4):
        validate_card({"threshold": threshold, "uncertain_band": band})
    for threshold in (0.19, 0.41):
        with pytest.raises(CardError, match=f"must contain the threshold {threshold}$"):
            validate_card({"threshold": threshold, "uncertain_band": band})


@pytest.mark.parametrize("key", ["test_metrics", "validation_metrics"])
def test_an_infinite_metric_is_refused_and_a_missing_one_is_not(key):
    validate_card({key: {"loss": 1e308, "auc": float("nan")}})
    with pytest.raises(CardError, match=f": {key}.loss is infinite$"):
        validate_card({key: {"accuracy": 0.5, "loss": float("inf")}})


def test_a_long_value_is_shown_cut_short():
    with pytest.raises(CardError) as caught:
        validate_card({"weights": ["x" * 100]})
    assert str(caught.value).endswith(f'not ["{"x" * 35}...')


def test_no_card_is_none_and_a_saved_card_reads_back_with_its_models_identity(tmp_path):
    model = tmp_path / "classifier.h5"
    assert load_card(model) is None
    model.write_bytes(b"model bytes")
    card = {"threshold": 0.4, "model_sha256": "f" * 64}  # an old identity is replaced
    path = save_card(model, card)
    assert path == tmp_path / "classifier.json"
    identity = {"model_file": "classifier.h5", "model_bytes": 11}
    assert load_card(model) == {"threshold": 0.4, **identity, **model_identity(model)}
    assert json.loads(path.read_text(encoding="utf-8"))["model_bytes"] == 11


def test_a_card_beside_another_model_file_is_refused_naming_both(tmp_path):
    model = tmp_path / "classifier.h5"
    model.write_bytes(b"the first model")
    save_card(model, {"threshold": 0.5})
    first_hash = model_identity(model)["model_sha256"]
    for other in (b"the other model", b"a longer other model"):  # same size, then another size
        model.write_bytes(other)
        with pytest.raises(CardError) as caught:
            load_card(model)
        refusal = str(caught.value)
        assert f"the model card {card_path(model)} does not belong to the model {model}" in refusal
        assert f"a model file of 15 bytes with SHA-256 {first_hash[:12]}..." in refusal
        assert f"this one has {len(other):,} bytes" in refusal and "\n" not in refusal
    assert load_card(model, check_model=False)["threshold"] == 0.5


def test_a_card_must_name_its_model_whole_and_each_missing_key_is_named(tmp_path):
    model = tmp_path / "classifier.h5"
    model.write_bytes(b"model bytes")
    identity = model_identity(model)
    check_card_matches(identity, model, card_path(model))
    with pytest.raises(
        CardError,
        match=r"does not say which model file .*\(no model_file, "
        r"model_bytes, model_sha256\)",
    ):
        check_card_matches({"threshold": 0.5}, model, card_path(model))
    with pytest.raises(CardError, match=r"\(no model_file, model_bytes\)"):
        check_card_matches({"model_sha256": identity["model_sha256"]}, model, card_path(model))
    with pytest.raises(CardError, match="does not belong"):
        check_card_matches({**identity, "model_bytes": 12}, model, card_path(model))


def test_a_value_is_shown_whole_up_to_forty_characters():
    for length, shown in ((38, '"' + "x" * 38 + '"'), (39, '"' + "x" * 36 + "...")):
        with pytest.raises(CardError) as caught:
            validate_card({"class_names": "x" * length})
        assert str(caught.value).endswith(f", not {shown}")


def test_a_value_that_json_cannot_write_is_shown_as_text():
    with pytest.raises(CardError, match='weights must be a string, not "weights.h5"$'):
        validate_card({"weights": Path("weights.h5")})


def test_save_card_refuses_a_bad_card_naming_its_file_and_writes_nothing(tmp_path):
    model = tmp_path / "classifier.h5"
    with pytest.raises(CardError, match=f"^the model card {card_path(model)}: threshold must"):
        save_card(model, {"threshold": 2})
    assert not card_path(model).exists()


def test_a_card_saved_without_a_model_file_has_no_identity_and_reads_the_same(tmp_path):
    model = tmp_path / "classifier.h5"
    save_card(model, {"threshold": 0.4, "image_size": 32})
    text = card_path(model).read_text(encoding="utf-8")
    assert text == '{\n  "image_size": 32,\n  "threshold": 0.4\n}\n'  # sorted, indented


def test_an_unreadable_card_is_refused_in_one_line(tmp_path):
    model = tmp_path / "classifier.h5"
    card_path(model).mkdir()
    with pytest.raises(CardError, match=f"^cannot read the model card {card_path(model)}: "):
        load_card(model)


def test_the_refusal_of_another_models_card_says_what_to_do(tmp_path):
    model = tmp_path / "classifier.h5"
    model.write_bytes(b"model")
    other = {"model_file": "classifier.h5", "model_bytes": 5, "model_sha256": "0" * 64}
    with pytest.raises(CardError) as caught:
        check_card_matches(other, model, card_path(model))
    assert str(caught.value).endswith(
        "and another hash (train again, or remove the card to use the model without one)"
    )
