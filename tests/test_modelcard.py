"""The model card on its own, without a model: every bad card refused in one line naming it, the
edges of each range accepted, a card refused beside a model file it does not describe, the card
training writes, and a card updated only if neither it nor its model was replaced meanwhile."""

import hashlib
import json
import re
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from realfake.inference.modelcard import (
    CardError,
    backbone_of,
    card_path,
    check_card_matches,
    load_card,
    model_identity,
    save_card,
    training_card,
    update_card,
    uses_test_time_flip,
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


TRAINED = {
    "image_size": 32,
    "backbone": "tiny",
    "preprocessing": "x / 255",
    "weights": "none",
    "threshold": 0.45,
    "uncertain_band": {"low": 0.3, "high": 0.6, "rule": "where validation is often wrong"},
    "test_time_flip": True,
    "training_data": {"train": {"Fake": 8, "Real": 7}, "test": {"Fake": 2, "Real": 3}},
    "trained_on": {"data": "cifake", "image_size": 32},
    "test_metrics": {"accuracy": 0.8, "auc": 0.9},
    "validation_metrics": {"accuracy": 0.7, "auc": None},
    "training_seconds": 12.5,
    "images_per_second": 40.25,
    "epochs_run": 3,
    "best_epoch": 2,
    "settings": {"recipe": "cifake", "seed": 7},
    "fast_path": False,
    "tensorflow_version": "2.99.0",
    "keras_version": "3.99.0",
}


def test_the_training_card_holds_each_value_under_its_own_key(tmp_path):
    card = training_card(**TRAINED)
    created = card.pop("created")
    assert card == {
        **TRAINED,
        "class_names": ["Fake", "Real"],
        "positive_class": "Fake",
        "threshold_rule": "maximises balanced accuracy on the validation split",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)
    # The card a training run writes passes the checks every reader makes, and reads back.
    model = tmp_path / "classifier.h5"
    model.write_bytes(b"model bytes")
    save_card(model, training_card(**TRAINED))
    assert load_card(model)["settings"] == TRAINED["settings"]


def test_the_training_card_is_dated_now_in_utc(monkeypatch):
    # A time zone far from UTC, so that a local time would show (POSIX form: no tz database).
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    try:
        assert time.localtime().tm_gmtoff == 5.5 * 3600
        before = datetime.now(timezone.utc).replace(microsecond=0)
        created = training_card(**TRAINED)["created"]
        after = datetime.now(timezone.utc)
    finally:
        monkeypatch.undo()
        time.tzset()
    stamp = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before <= stamp <= after


def test_a_key_given_twice_is_refused_naming_the_key(tmp_path):
    model = tmp_path / "classifier.h5"
    card_path(model).write_text('{"threshold": 0.4, "weights": "none", "threshold": 0.6}')
    with pytest.raises(CardError) as caught:
        load_card(model)
    assert str(caught.value) == (
        f'the model card {card_path(model)} gives the key "threshold" twice: which one holds is '
        "anyone's guess, so neither is used"
    )


def test_a_card_that_is_not_utf8_is_refused_naming_it(tmp_path):
    model = tmp_path / "classifier.h5"
    card_path(model).write_bytes(b'{"weights": "caf\xe9"}')  # Latin-1, as an old editor saves
    with pytest.raises(CardError) as caught:
        load_card(model)
    assert str(caught.value).startswith(
        f"cannot read the model card {card_path(model)}: 'utf-8' codec can't decode byte 0xe9"
    )


def test_a_card_without_its_models_identity_says_what_to_do(tmp_path):
    model = tmp_path / "classifier.h5"
    model.write_bytes(b"model")
    with pytest.raises(CardError) as caught:
        check_card_matches({"threshold": 0.5}, model, card_path(model))
    assert str(caught.value).endswith(
        "so it could be any model's: train again, or remove the card to use the model without one"
    )


def test_a_saved_model_folder_is_identified_by_its_files_names_and_bytes(tmp_path):
    folder = tmp_path / "classifier"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"graph")
    (folder / "variables" / "variables.index").write_bytes(b"index!")
    lines = [
        f"{name}\0{hashlib.sha256(data).hexdigest()}\n"
        for name, data in (("saved_model.pb", b"graph"), ("variables/variables.index", b"index!"))
    ]
    whole = hashlib.sha256("".join(lines).encode()).hexdigest()
    assert model_identity(folder) == {
        "model_file": "classifier",
        "model_bytes": 11,
        "model_sha256": whole,
    }
    # A file renamed is another model, though every byte is the same.
    (folder / "variables" / "variables.index").rename(folder / "variables" / "other.index")
    assert model_identity(folder)["model_sha256"] != whole


@pytest.mark.parametrize(
    ("card", "flip", "backbone"),
    [
        (None, False, "resnet101"),
        ({}, False, "resnet101"),
        ({"test_time_flip": True, "backbone": "tiny"}, True, "tiny"),
        ({"test_time_flip": False, "backbone": "resnet50"}, False, "resnet50"),
    ],
)
def test_flip_and_backbone_read_from_a_card_with_the_defaults_of_older_cards(card, flip, backbone):
    assert uses_test_time_flip(card) is flip
    assert backbone_of(card) == backbone


@pytest.fixture
def evaluated(tmp_path):
    """A model file and its card as a long job loaded them: (model path, card, identity)."""
    model = tmp_path / "classifier.h5"
    model.write_bytes(b"the model")
    save_card(model, {"threshold": 0.5, "weights": "none"})
    return model, load_card(model), model_identity(model)


def test_update_card_writes_the_changes_into_the_card_it_loaded(evaluated):
    model, card, identity = evaluated
    assert update_card(model, card, identity, {"robustness_data": "battery"}) == card_path(model)
    assert load_card(model) == {**card, "robustness_data": "battery"}


def test_update_card_changes_only_the_keys_it_is_given(evaluated):
    # A model moved with its card keeps the name it was trained under: an update records the
    # identity that was checked, and reads nothing of the model again.
    model, card, identity = evaluated
    moved = model.with_name("best.h5")
    model.rename(moved)
    card_path(model).rename(card_path(moved))
    update_card(moved, card, identity, {"robustness_data": "battery"})
    assert load_card(moved) == {**card, "model_file": "classifier.h5", "robustness_data": "battery"}


@pytest.mark.parametrize(
    ("replace_model", "replace_card", "replaced"),
    [(True, False, "model file"), (False, True, "card"), (True, True, "model file")],
)
def test_update_card_refuses_when_the_model_or_its_card_was_replaced_meanwhile(
    evaluated, replace_model, replace_card, replaced
):
    model, card, identity = evaluated
    if replace_model:
        model.write_bytes(b"the other model")
    if replace_card:
        save_card(model, {"threshold": 0.7})
    on_disk = card_path(model).read_bytes()
    with pytest.raises(CardError) as caught:
        update_card(model, card, identity, {"robustness_data": "battery"})
    assert str(caught.value) == (
        f"the {replaced} of {model} was replaced while it was being evaluated: "
        f"{card_path(model)} is left as it is; evaluate the model now in place to update its card"
    )
    assert card_path(model).read_bytes() == on_disk


def test_update_card_refuses_when_the_card_was_removed_or_the_model_is_gone(evaluated):
    model, card, identity = evaluated
    card_path(model).unlink()
    with pytest.raises(CardError, match=f"^the card of {model} was replaced"):
        update_card(model, card, identity, {"robustness_data": "battery"})
    assert not card_path(model).exists()
    model.unlink()
    with pytest.raises(CardError) as caught:
        update_card(model, card, identity, {"robustness_data": "battery"})
    assert str(caught.value) == f"cannot read the model {model}: No such file or directory"
