"""Batch prediction: rows for unlabelled folders, the same P(Fake) as evaluation, broken files
named, interrupted runs continued, shards merged into one run's rows, a competition submission
and the provenance columns."""

import csv
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tree, write_image

import evaluate_model
import predict
from realfake.core.images import load_rgb
from realfake.inference import batch, batch_decoding, batch_files, batch_output
from realfake.inference import classifier as inference
from realfake.inference.rows import BASE_COLUMNS

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def classifier(saved_model):
    """The session's model, loaded once for this module."""
    return inference.load_classifier(saved_model)


@pytest.fixture
def loaded(classifier, saved_model, monkeypatch):
    """Make `predict.main` (and evaluation) reuse loaded classifiers instead of reading the .h5
    on every call; returns the registry, path -> Classifier, to add card variants to."""
    registry = {Path(saved_model): classifier}
    real_load = inference.load_classifier

    def load(model_path, threshold=None):
        found = registry.get(Path(model_path))
        if found is None or threshold is not None:
            return real_load(model_path, threshold)
        return found

    monkeypatch.setattr(inference, "load_classifier", load)
    return registry


def read_rows(path: Path) -> list[dict]:
    """Rows of a CSV output, as text."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def expected_probabilities(classifier, paths: list[Path]) -> dict[str, float]:
    """P(Fake) of each file, computed directly through the inference contract."""
    pixels = np.stack([load_rgb(path, classifier.image_size) for path in paths])
    return dict(zip(map(str, paths), classifier.probability_fake(pixels), strict=True))


def truncated_jpeg(path: Path, size: tuple[int, int] = (48, 40)) -> Path:
    """A JPEG cut off in its pixel data: the header (and so its size) reads, the pixels do not."""
    write_image(path, seed=7, size=max(size))
    from PIL import Image

    with Image.open(path) as image:
        image.crop((0, 0, *size)).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


@pytest.fixture
def unlabelled(tmp_path) -> Path:
    """A folder as a photo library is: nested folders, one non-square photo, a note, a macOS
    .DS_Store, a hidden folder of copies, and a truncated JPEG."""
    root = make_tree(tmp_path / "library", {"2023": 4, "2024/trip": 3}, seed=3)
    from PIL import Image

    Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 50, 3), np.uint8)).save(
        root / "2024" / "wide.png"
    )
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + bytes(64))
    (root / "2023" / "notes.txt").write_text("holiday photos\n", encoding="utf-8")
    write_image(root / ".ipynb_checkpoints" / "copy.jpg", seed=1)
    truncated_jpeg(root / "2024" / "broken.jpg")
    return root


IMAGES_IN_UNLABELLED = [
    "2023/img_0000.jpg",
    "2023/img_0001.jpg",
    "2023/img_0002.jpg",
    "2023/img_0003.jpg",
    "2024/broken.jpg",
    "2024/trip/img_0000.jpg",
    "2024/trip/img_0001.jpg",
    "2024/trip/img_0002.jpg",
    "2024/wide.png",
]


def test_help_shows_examples_and_does_not_import_tensorflow(capsys):
    with pytest.raises(SystemExit) as stopped:
        predict.main(["--help"])
    assert stopped.value.code == 0
    shown = capsys.readouterr().out
    assert "--shard 0/4" in shown and "--merge" in shown and "(default: 64)" in shown
    code = (
        "import sys, predict; predict.build_parser().format_help(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_one_row_per_image_with_broken_and_non_image_files_accounted_for(
    unlabelled, classifier, loaded, tmp_path, capsys
):
    output = tmp_path / "scores.csv"
    assert (
        predict.main(
            [str(unlabelled), "--model", str(classifier.path), "--output", str(output), "--quiet"]
        )
        == 0
    )
    summary = capsys.readouterr().out.strip()

    rows = read_rows(output)
    assert [row["path"] for row in rows] == [
        str(unlabelled / name) for name in IMAGES_IN_UNLABELLED
    ]
    assert list(rows[0]) == list(BASE_COLUMNS) + [
        "provenance_source",
        "declared_origin",
        "generator",
        "signature",
    ]
    broken = rows[IMAGES_IN_UNLABELLED.index("2024/broken.jpg")]
    assert broken["error"].startswith("cannot decode")
    assert (broken["probability_fake"], broken["label"], broken["verdict"]) == ("", "", "")
    assert (broken["width"], broken["height"]) == ("48", "40")  # its header still reads

    good = [Path(row["path"]) for row in rows if not row["error"]]
    expected = expected_probabilities(classifier, good)
    for row in rows:
        if row["error"]:
            continue
        probability = float(row["probability_fake"])
        assert probability == pytest.approx(expected[row["path"]], abs=1e-6)
        assert row["label"] == ("Fake" if probability >= classifier.threshold else "Real")
        assert row["verdict"] == row["label"]  # the session model's card has no band
    wide = rows[IMAGES_IN_UNLABELLED.index("2024/wide.png")]
    assert (wide["width"], wide["height"]) == ("50", "20")

    assert "predicted 8 of 9 images" in summary
    assert "skipped 2 non-image files" in summary  # notes.txt and .DS_Store
    assert f"1 could not be decoded: {unlabelled / '2024' / 'broken.jpg'}" in summary
    assert not list(tmp_path.glob(".scores.csv*"))  # no partial or settings file left behind


def test_an_image_far_larger_than_the_models_input_carries_a_notice(
    classifier, loaded, tmp_path, capsys
):
    side = classifier.image_size
    folder = tmp_path / "photos"
    write_image(folder / "large.jpg", 1, size=2 * side + 1)  # just past twice the side
    write_image(folder / "twice.jpg", 2, size=2 * side)  # close enough: no notice
    argv = [str(folder), "--model", str(classifier.path), "--quiet", "--no-provenance"]
    assert predict.main(argv) == 0
    large, twice = csv.DictReader(io.StringIO(capsys.readouterr().out))

    assert large["probability_fake"] and twice["probability_fake"]  # both are still scored
    assert f"{2 * side + 1} x {2 * side + 1} pixels" in large["notice"]
    assert f"learned from {side} x {side} images" in large["notice"]
    assert "Robustness" in large["notice"]
    assert twice["notice"] == ""


def test_jsonl_rows_carry_numbers_and_nulls_and_equal_the_csv_rows(
    unlabelled, classifier, loaded, capsys
):
    argv = [str(unlabelled), "--model", str(classifier.path), "--quiet", "--no-provenance"]
    assert predict.main(argv) == 0
    as_csv = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert predict.main([*argv, "--format", "jsonl"]) == 0
    as_json = [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    assert len(as_json) == len(as_csv) == len(IMAGES_IN_UNLABELLED)
    assert list(as_json[0]) == list(BASE_COLUMNS)
    for text_row, row in zip(as_csv, as_json, strict=True):
        assert {k: "" if v is None else str(v) for k, v in row.items()} == text_row
        if row["error"] is None:
            assert isinstance(row["probability_fake"], float) and isinstance(row["width"], int)
        else:
            assert row["probability_fake"] is None


def test_probabilities_equal_those_of_evaluate_model_for_every_image(
    image_tree, classifier, loaded, tmp_path, monkeypatch, capsys
):
    data = image_tree({"Fake": 5, "Real": 6})
    import realfake.evaluation.metrics
    from realfake.training.pipeline import find_class_images

    seen = {}
    real_metrics = realfake.evaluation.metrics.classification_metrics

    def spy(labels, probability_fake, threshold):
        seen["probability_fake"] = np.array(probability_fake)
        return real_metrics(labels, probability_fake, threshold)

    monkeypatch.setattr(realfake.evaluation.metrics, "classification_metrics", spy)
    argv = ["--model", str(classifier.path), "--data", str(data), "--quiet"]
    assert evaluate_model.main([*argv, "--output", str(tmp_path / "evaluation")]) == 0
    evaluated = dict(
        zip(
            (str(path) for path, _ in find_class_images(data)),
            seen["probability_fake"],
            strict=True,
        )
    )

    output = tmp_path / "scores.csv"
    argv = [str(data), "--model", str(classifier.path), "--output", str(output), "--quiet"]
    assert predict.main(argv) == 0
    predicted = {row["path"]: float(row["probability_fake"]) for row in read_rows(output)}
    assert predicted.keys() == evaluated.keys()
    worst = max(abs(predicted[path] - evaluated[path]) for path in predicted)
    assert worst < 1e-6


def test_decoding_streams_a_few_batches_ahead_not_the_whole_folder(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "many", {"all": 60})
    files, _, _ = batch_files.find_images([str(root)])
    decoded = []
    real_decode = batch_decoding.decode_file

    def counting(file, image_size, extras):
        decoded.append(file)
        return real_decode(file, image_size, extras)

    monkeypatch.setattr(batch_decoding, "decode_file", counting)
    batches = batch_decoding.decoded_batches(files, 32, batch_size=4, extras=[], threads=2)
    first = next(batches)
    time.sleep(0.3)  # let the pool run as far ahead as it may
    assert [item.file for item in first] == files[:4]
    assert len(decoded) <= (2 + 2) * 4  # threads + 2 batches, never all 60
    assert [item.file for chunk in batches for item in chunk] == files[4:]


def test_an_interrupted_run_continues_from_whole_batches_and_ignores_a_torn_line(
    unlabelled, classifier, loaded, tmp_path, monkeypatch, capsys
):
    output = tmp_path / "out" / "scores.csv"
    argv = [str(unlabelled), "--model", str(classifier.path), "--output", str(output)]
    argv += ["--batch-size", "2", "--quiet"]
    assert predict.main(argv) == 0
    uninterrupted = output.read_bytes()
    output.unlink()
    capsys.readouterr()

    real_decode = batch_decoding.decode_file
    decoded = []

    def interrupted_at_the_seventh(file, image_size, extras):
        decoded.append(file.path)
        if file.path == unlabelled / IMAGES_IN_UNLABELLED[6]:
            raise KeyboardInterrupt
        return real_decode(file, image_size, extras)

    monkeypatch.setattr(batch_decoding, "decode_file", interrupted_at_the_seventh)
    assert predict.main(argv) == 130
    assert "run the same command again" in capsys.readouterr().err
    partial = batch_output.partial_path(output)
    assert not output.exists() and partial.exists()
    written = partial.read_text(encoding="utf-8").splitlines()
    assert len(written) == 1 + 6  # header and the three batches before the seventh file
    with open(partial, "a", encoding="utf-8") as handle:
        handle.write(written[-1][:15])  # a row torn by a kill in the middle of a write

    decoded.clear()
    monkeypatch.setattr(
        batch_decoding, "decode_file", lambda *a: (decoded.append(a[0].path), real_decode(*a))[1]
    )
    assert predict.main(argv) == 0
    assert "continuing after 6 rows already written" in capsys.readouterr().out
    # Threads decode batches side by side, so the order of the calls is not the files' order.
    assert sorted(decoded) == [unlabelled / name for name in IMAGES_IN_UNLABELLED[6:]]
    assert output.read_bytes() == uninterrupted
    assert not partial.exists() and not batch_output.settings_path(output).exists()


def test_a_partial_output_of_other_settings_is_discarded_not_continued(
    unlabelled, classifier, loaded, tmp_path, capsys
):
    output = tmp_path / "scores.csv"
    argv = [str(unlabelled), "--model", str(classifier.path), "--output", str(output), "--quiet"]
    assert predict.main([*argv, "--batch-size", "2"]) == 0
    reference = output.read_bytes()
    partial = batch_output.partial_path(output)
    # A partial left by a run with another batch size (whose batches hold other files).
    partial.write_bytes(reference)
    batch_output.settings_path(output).write_text('{"batch_size": 3}', encoding="utf-8")
    output.unlink()
    capsys.readouterr()
    assert predict.main([*argv, "--batch-size", "2"]) == 0
    assert f"note: discarded {partial}, written with other settings" in capsys.readouterr().err
    assert output.read_bytes() == reference


@pytest.mark.end_to_end
def test_kill_9_and_run_again_gives_the_rows_of_an_uninterrupted_run(
    saved_model, classifier, tmp_path
):
    folder = make_tree(tmp_path / "photos", {"a": 40, "b": 40}, seed=9)
    output = tmp_path / "scores.csv"
    reference = tmp_path / "reference.csv"
    common = [str(folder), "--model", str(saved_model), "--batch-size", "4", "--quiet"]
    summary = batch.predict(
        batch.PredictConfig((str(folder),), saved_model, reference, batch_size=4, quiet=True),
        classifier=classifier,
    )
    assert summary.tally.rows == 80
    command = [sys.executable, str(PROJECT / "predict.py"), *common, "--output", str(output)]
    partial = batch_output.partial_path(output)

    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if partial.exists() and partial.read_bytes().count(b"\n") >= 1 + 12:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    lines_at_kill = partial.read_bytes().count(b"\n")
    assert 1 + 12 <= lines_at_kill < 1 + 80, "the run was not caught in the middle"
    assert not output.exists()
    # The first file was scored before the kill: the run that continues must not read it again,
    # so garbage in its place now changes nothing, where starting over would report it broken.
    first = batch_files.find_images([str(folder)])[0][0].path
    first.write_bytes(b"no longer an image")

    finished = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert "continuing after" in finished.stdout
    assert "could not be decoded" not in finished.stdout
    assert output.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize("output_format", ["csv", "jsonl"])
def test_three_shards_merged_equal_one_run_and_agree_across_machines(
    image_tree, classifier, loaded, tmp_path, capsys, output_format
):
    data = image_tree({"Fake": 9, "Real": 8, "x/y": 5}, name="data")
    model = ["--model", str(classifier.path), "--format", output_format, "--quiet"]
    whole = tmp_path / f"whole.{output_format}"
    assert predict.main([str(data), *model, "--output", str(whole), "--batch-size", "4"]) == 0
    parts = [tmp_path / f"part{k}.{output_format}" for k in range(3)]
    for k, part in enumerate(parts):
        argv = [str(data), *model, "--output", str(part), "--shard", f"{k}/3", "--batch-size", "4"]
        assert predict.main(argv) == 0
    merged = tmp_path / f"merged.{output_format}"
    assert predict.main(["--merge", str(merged), *map(str, parts)]) == 0
    assert "merged 3 parts: 22 rows" in capsys.readouterr().out.splitlines()[-1]
    assert merged.read_bytes() == whole.read_bytes()

    sizes = [len(batch_output.read_output(part)[2]) for part in parts]
    assert sum(sizes) == 22 and all(sizes)  # a partition, no shard empty

    # Another machine mounts the data elsewhere: it picks the same files for shard 0.
    elsewhere = shutil.copytree(data, tmp_path / "mnt" / "other")
    other = tmp_path / f"other0.{output_format}"
    assert predict.main([str(elsewhere), *model, "--output", str(other), "--shard", "0/3"]) == 0
    names = [
        [os.path.relpath(row["path"], root) for row in batch_output.read_output(path)[2]]
        for path, root in ((parts[0], data), (other, elsewhere))
    ]
    assert names[0] == names[1]


def test_merge_refuses_overlapping_shards_in_one_line(
    image_tree, classifier, loaded, tmp_path, capsys
):
    data = image_tree({"Fake": 3, "Real": 3})
    part = tmp_path / "part0.csv"
    argv = [str(data), "--model", str(classifier.path), "--shard", "0/2", "--output", str(part)]
    assert predict.main([*argv, "--quiet"]) == 0
    capsys.readouterr()
    assert predict.main(["--merge", str(tmp_path / "m.csv"), str(part), str(part)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "is in more than one part: the shards overlap" in error
    assert error.count("\n") == 1 and not (tmp_path / "m.csv").exists()


@pytest.fixture
def competition(tmp_path) -> Path:
    """The Fake-or-Real competition's test folder: test/images/test_*.png, unlabelled."""
    images = tmp_path / "fake_or_real" / "test" / "images"
    for index in range(8):
        write_image(images / f"test_{index:05d}.png", seed=100 + index, size=40)
    return images.parent


@pytest.mark.parametrize("id_style", ["name", "stem"])
def test_submission_keeps_the_samples_columns_and_order_and_answers_from_the_verdict(
    competition, classifier, loaded, tmp_path, capsys, id_style
):
    paths = sorted((competition / "images").glob("*.png"))
    probability = expected_probabilities(classifier, paths)
    ranked = sorted(probability.values())
    # The threshold between the 4th and 5th image; the 5th is inside the uncertain band.
    threshold = (ranked[3] + ranked[4]) / 2
    band = (threshold, (ranked[4] + ranked[5]) / 2)
    model = tmp_path / "variant.h5"
    loaded[model] = dataclasses.replace(classifier, threshold=threshold, uncertain_band=band)

    order = [3, 0, 7, 5, 1, 6, 2, 4]
    ids = [paths[i].name if id_style == "name" else paths[i].stem for i in order]
    sample = competition / "sample_submission.csv"
    sample.write_text("ImageId,answer\n" + "".join(f"{i},0\n" for i in ids), encoding="utf-8")
    output = tmp_path / "submission.csv"
    argv = [str(competition / "images"), "--model", str(model), "--submission", str(sample)]
    assert predict.main([*argv, "--output", str(output), "--quiet"]) == 0
    assert "submission of 8 rows" in capsys.readouterr().out

    expected = [
        [image_id, str(int(probability[str(paths[i])] >= threshold))]
        for image_id, i in zip(ids, order, strict=True)
    ]
    table = list(csv.reader(output.read_text(encoding="utf-8").splitlines()))
    assert table == [["ImageId", "answer"], *expected]
    assert sorted(answer for _, answer in expected) == ["0"] * 4 + ["1"] * 4
    assert not list(tmp_path.glob(".submission.csv*"))


def test_submission_refuses_ids_without_an_image_naming_them(
    competition, classifier, loaded, tmp_path, capsys
):
    sample = competition / "sample_submission.csv"
    sample.write_text("ImageId,answer\ntest_00001.png,0\ntest_00098.png,0\ntest_00099,0\n")
    output = tmp_path / "submission.csv"
    argv = [
        str(competition / "images"),
        "--model",
        str(classifier.path),
        "--submission",
        str(sample),
    ]
    assert predict.main([*argv, "--output", str(output)]) == 1
    error = capsys.readouterr().err
    assert error == (
        f"error: 2 ids of the sample submission {sample} have no image among the paths given: "
        "test_00098.png, test_00099\n"
    )
    assert not output.exists()


def test_shards_then_merge_write_the_submission(competition, classifier, loaded, tmp_path, capsys):
    images = competition / "images"
    sample = competition / "sample_submission.csv"
    names = sorted(path.name for path in images.iterdir())
    sample.write_text("ImageId,answer\n" + "".join(f"{n},0\n" for n in names), encoding="utf-8")
    model = ["--model", str(classifier.path), "--quiet"]
    direct = tmp_path / "direct.csv"
    assert (
        predict.main([str(images), *model, "--submission", str(sample), "--output", str(direct)])
        == 0
    )
    parts = [tmp_path / f"part{k}.csv" for k in range(2)]
    for k, part in enumerate(parts):
        assert predict.main([str(images), *model, "--shard", f"{k}/2", "--output", str(part)]) == 0
    merged = tmp_path / "merged.csv"
    argv = ["--merge", str(merged), *map(str, parts), "--submission", str(sample)]
    assert predict.main(argv) == 0
    assert merged.read_bytes() == direct.read_bytes()


@pytest.fixture(scope="module")
def signed_folder(tmp_path_factory):
    """A JPEG signed with content credentials declaring generative AI, and a plain PNG; with the
    PEM file of the CA that signed it."""
    from provenance_fixtures import encode, make_signer, manifest, random_pixels, sign

    signer = make_signer()
    folder = tmp_path_factory.mktemp("provenance")
    definition = manifest("trainedAlgorithmicMedia", "Test Generator", agent="Test Model")
    image = encode(random_pixels(1), "JPEG")
    (folder / "signed.jpg").write_bytes(sign(image, "image/jpeg", definition, signer))
    (folder / "plain.png").write_bytes(encode(random_pixels(2), "PNG"))
    anchors = folder.parent / "anchors.pem"
    anchors.write_text(signer.ca_pem, encoding="utf-8")
    return folder, anchors


def test_provenance_columns_for_a_signed_and_a_plain_image(
    signed_folder, classifier, loaded, capsys
):
    folder, anchors = signed_folder
    argv = [str(folder), "--model", str(classifier.path), "--quiet"]
    assert predict.main(argv) == 0
    unchecked = {row["path"]: row for row in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert predict.main([*argv, "--trust-anchors", str(anchors)]) == 0
    trusted = {row["path"]: row for row in csv.DictReader(io.StringIO(capsys.readouterr().out))}

    signed, plain = str(folder / "signed.jpg"), str(folder / "plain.png")
    columns = ("provenance_source", "declared_origin", "signature")
    assert [unchecked[signed][c] for c in columns] == [
        "c2pa",
        "generative AI",
        "valid, signer not checked against a trust list",
    ]
    assert trusted[signed]["signature"] == "valid, trusted"
    assert "Test" in unchecked[signed]["generator"]
    for rows in (unchecked, trusted):
        assert [rows[plain][c] for c in (*columns, "generator")] == ["", "", "", ""]
        assert rows[signed]["probability_fake"] and rows[signed]["width"] == "48"

    assert predict.main([*argv, "--no-provenance"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header == ",".join(BASE_COLUMNS)


def test_glob_patterns_and_single_files_are_paths_too(image_tree, classifier, loaded, capsys):
    data = image_tree({"a": 3, "b": 3})
    pattern = str(data / "*" / "img_000[12].jpg")
    argv = [pattern, str(data / "a" / "img_0000.jpg"), "--model", str(classifier.path)]
    assert predict.main([*argv, "--quiet", "--no-provenance"]) == 0
    paths = [row["path"] for row in csv.DictReader(io.StringIO(capsys.readouterr().out))]
    expected = [
        "a/img_0000.jpg",
        "a/img_0001.jpg",
        "a/img_0002.jpg",
        "b/img_0001.jpg",
        "b/img_0002.jpg",
    ]
    assert paths == [str(data / name) for name in expected]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing-folder"], "error: no such file or folder, and no file matches: missing-folder"),
        (["nothing-*.jpg"], "error: no such file or folder, and no file matches: nothing-*.jpg"),
        (["--merge", "m.csv", "absent.csv"], "error: cannot read absent.csv"),
    ],
)
def test_bad_paths_are_one_line_errors(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert predict.main([*argv, "--quiet"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(message) and error.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["x", "--shard", "3/3"], "--shard K/N needs 0 <= K < N"),
        (["x", "--shard", "half"], "--shard must be K/N"),
        (["x", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["x", "--no-provenance", "--trust-anchors", "a.pem"], "--trust-anchors needs"),
        (["x", "--shard", "0/2", "--submission", "s.csv"], "--submission needs every image"),
        ([], "give at least one PATH"),
        (["x", "--output", "."], "--output . is a folder: give a file name"),
    ],
)
def test_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        predict.main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_a_files_probability_does_not_depend_on_the_other_files_of_the_run(
    image_tree, classifier, tmp_path
):
    data = image_tree({"all": 24}, seed=4)
    whole = tmp_path / "whole.csv"
    # Batches of 4 fit in one block of the math library's matrix kernels, so where an image sits
    # in its batch does not matter either; larger ones can move a last bit on some CPUs.
    config = batch.PredictConfig((str(data),), classifier.path, whole, batch_size=4, quiet=True)
    batch.predict(dataclasses.replace(config, provenance=False), classifier=classifier)
    together = {row["path"]: row["probability_fake"] for row in read_rows(whole)}
    alone = {}
    for path in together:
        single = tmp_path / "single.csv"
        one = dataclasses.replace(config, paths=(path,), output=single, provenance=False)
        batch.predict(one, classifier=classifier)
        alone[path] = read_rows(single)[0]["probability_fake"]
    assert alone == together


def _make_recipe(target: str) -> list[str]:
    """The command lines of a Makefile target's recipe, continuation lines joined."""
    lines = (Path(predict.__file__).resolve().parent / "Makefile").read_text().splitlines()
    start = lines.index(f"{target}: setup") + 1
    recipe = []
    for line in lines[start:]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip())
    return " ".join(recipe).replace("\\ ", "").split("cd $(DEMO_DIR) && ")[1:]


def test_make_demo_predict_runs_as_the_makefile_writes_it(saved_model, tmp_path):
    """make demo's last step, run as written (with this interpreter) on a demo-shaped folder."""
    demo = tmp_path / "demo"
    images = demo / "data" / "raw" / "fake_or_real" / "test" / "images"
    for index in range(3):
        write_image(images / f"test_{index:05d}.png", seed=300 + index, size=40)
    ids = ["test_00002.png", "test_00000.png", "test_00001.png"]
    sample = images.parent / "sample_submission.csv"
    sample.write_text("ImageId,Answer\n" + "".join(f"{i},\n" for i in ids))
    (demo / "models").mkdir()
    shutil.copy(saved_model, demo / "models" / "ai_real_image_classifier_resnet101.h5")
    shutil.copy(
        saved_model.with_suffix(".json"),
        demo / "models" / "ai_real_image_classifier_resnet101.json",
    )

    repo = Path(predict.__file__).resolve().parent
    for command in _make_recipe("demo-predict"):
        command = command.replace("$(CURDIR)/$(PYTHON)", sys.executable).replace(
            "$(CURDIR)", str(repo)
        )
        result = subprocess.run(command, shell=True, cwd=demo, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    with open(demo / "predictions" / "submission.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["ImageId"] for row in rows] == ids
    assert {row["Answer"] for row in rows} <= {"0", "1"}
