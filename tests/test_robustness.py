"""The robustness report and the robustness training augmentation: each perturbation does what it
says and is deterministic, the report scores at the card's threshold through the classifier, the
JSON rows, table, summary and plot, and the seeded JPEG and blur tf ops."""

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

import evaluate_model
from realfake.evaluation import perturbations, robustness
from realfake.evaluation.metrics import choose_threshold, classification_metrics
from realfake.evaluation.perturbations import Perturbation
from realfake.inference.classifier import load_classifier
from realfake.inference.modelcard import load_card, save_card
from realfake.training import batch_augmentation

ROW_FIELDS = {
    "family",
    "level",
    "perturbation",
    "accuracy",
    "auc",
    "real_called_fake",
    "fake_called_real",
    "images",
}


def textured_images(count: int, seed: int = 0, noise: float = 12.0, side: int = 32) -> np.ndarray:
    """Photograph-like uint8 images: a smooth colour gradient plus some pixel noise."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:side, 0:side] / side
    images = np.empty((count, side, side, 3), dtype=np.uint8)
    for index in range(count):
        base = np.stack(
            [rng.uniform(40, 200) + rng.uniform(-40, 40) * grid for grid in (rows, columns, rows)],
            axis=-1,
        )
        images[index] = np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8)
    return images


def high_frequency_energy(images: np.ndarray) -> np.ndarray:
    """Per image, the mean squared difference between neighbouring pixels (both directions)."""
    pixels = np.asarray(images, dtype=np.float64)
    across = np.diff(pixels, axis=2) ** 2
    down = np.diff(pixels, axis=1) ** 2
    return across.mean(axis=(1, 2, 3)) + down.mean(axis=(1, 2, 3))


# Perturbations for the report.


def test_the_rows_are_clean_then_each_family_mild_to_severe():
    described = [row.describe() for row in perturbations.perturbations(32)]
    assert described == [
        "clean",
        *(f"JPEG quality {q}" for q in (95, 90, 75, 60, 40, 25, 10)),
        *(f"blur sigma {s}" for s in ("0.5", "1", "1.5", "2")),
        *(f"noise sigma {s}" for s in (2, 4, 8, 16)),
        *(f"down-scale to {side} px" for side in (24, 16, 12)),
    ]
    # A 16-pixel model cannot be down-scaled to 24 or 16 pixels.
    small = [row for row in perturbations.perturbations(16) if row.family == "downscale"]
    assert [row.level for row in small] == [12]


def test_jpeg_loses_more_at_lower_quality_and_is_deterministic(tmp_path):
    images = textured_images(6)
    q95, q10 = perturbations.jpeg(images, 95), perturbations.jpeg(images, 10)
    assert q95.shape == images.shape and q95.dtype == np.uint8
    assert not np.array_equal(q10, q95)
    error_95 = np.abs(q95.astype(int) - images).mean()
    error_10 = np.abs(q10.astype(int) - images).mean()
    assert 0 < error_95 < error_10
    np.testing.assert_array_equal(perturbations.jpeg(images, 10), q10)
    # The same as saving a JPEG file with Pillow at that quality and reading it back.
    Image.fromarray(images[2]).save(path := tmp_path / "q10.jpg", quality=10)
    with Image.open(path) as reread:
        np.testing.assert_array_equal(q10[2], np.asarray(reread.convert("RGB")))


def test_blur_is_a_gaussian_of_that_sigma_and_lowers_high_frequency_energy():
    images = textured_images(4)
    energies = [high_frequency_energy(images)]
    for sigma in (0.5, 1.0, 1.5, 2.0):
        blurred = perturbations.blur(images, sigma)
        assert blurred.shape == images.shape and blurred.dtype == np.uint8
        np.testing.assert_array_equal(perturbations.blur(images, sigma), blurred)
        # scipy's exact Gaussian, cut at three sigmas with mirrored edges, to within rounding.
        reference = gaussian_filter(
            images.astype(np.float64), (0, sigma, sigma, 0), mode="reflect", truncate=3.0
        )
        assert np.abs(blurred - reference).max() <= 1.0
        energies.append(high_frequency_energy(blurred))
    energies = np.array(energies)
    assert np.all(np.diff(energies, axis=0) < 0)  # every image, every step
    np.testing.assert_array_equal(perturbations.blur(images, 0.0), images)


def test_noise_has_the_given_standard_deviation_clipped_and_seeded_per_image():
    grey = np.full((8, 32, 32, 3), 128, dtype=np.uint8)
    for sigma in (2, 4, 8, 16):
        noisy = perturbations.gaussian_noise(grey, sigma)
        difference = noisy.astype(np.float64) - 128
        assert difference.std() == pytest.approx(sigma, rel=0.03)
        assert abs(difference.mean()) < 0.05 * sigma
        np.testing.assert_array_equal(perturbations.gaussian_noise(grey, sigma), noisy)
    noisy = perturbations.gaussian_noise(grey, 8)
    assert not np.array_equal(noisy[0], noisy[1])  # each image has its own noise
    # Image k's noise depends on k and the level alone, not on the rest of the batch.
    np.testing.assert_array_equal(perturbations.gaussian_noise(grey[:3], 8), noisy[:3])
    assert not np.array_equal(perturbations.gaussian_noise(grey, 8, seed=7), noisy)

    white = np.full((8, 32, 32, 3), 255, dtype=np.uint8)
    clipped = perturbations.gaussian_noise(white, 16)
    assert clipped.dtype == np.uint8
    # Values pushed above 255 stay at 255 instead of wrapping round to dark pixels.
    assert np.mean(clipped == 255) == pytest.approx(0.5, abs=0.03)
    assert clipped.min() > 255 - 6 * 16


def test_downscale_returns_the_input_size_with_less_detail():
    images = textured_images(4)
    previous = high_frequency_energy(images)
    for side in (24, 16, 12):
        scaled = perturbations.downscale(images, side)
        assert scaled.shape == images.shape and scaled.dtype == np.uint8
        np.testing.assert_array_equal(perturbations.downscale(images, side), scaled)
        energy = high_frequency_energy(scaled)
        assert np.all(energy < previous)
        previous = energy
    flat = np.full((2, 32, 32, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(perturbations.downscale(flat, 12), flat)


def test_perturbed_sets_come_in_order_and_the_next_is_prepared_meanwhile(monkeypatch):
    images = textured_images(3)
    rows = perturbations.perturbations(32)[:6]
    started = []
    second_started = threading.Event()
    real_perturb = perturbations.perturb

    def recording(batch, perturbation, seed):
        started.append(perturbation)
        if len(started) == 2:
            second_started.set()
        return real_perturb(batch, perturbation, seed)

    monkeypatch.setattr(perturbations, "perturb", recording)
    produced = perturbations.perturbed_sets(images, rows, ahead=1)
    first_row, _ = next(produced)
    # While the caller still holds the first set (scoring it), the second is being made.
    assert first_row == rows[0] and second_started.wait(timeout=10)
    rest = list(produced)
    assert [row for row, _ in rest] == rows[1:]
    for row, perturbed in rest:
        np.testing.assert_array_equal(perturbed, real_perturb(images, row, robustness.SEED))


def test_subset_indices_take_a_seeded_subset_per_class():
    labels = np.array([0] * 30 + [1] * 5)
    chosen = robustness.subset_indices(labels, 10, seed=3)
    assert np.bincount(labels[chosen]).tolist() == [10, 5]
    assert np.all(np.diff(chosen) > 0)
    np.testing.assert_array_equal(robustness.subset_indices(labels, 10, seed=3), chosen)
    assert not np.array_equal(robustness.subset_indices(labels, 10, seed=4), chosen)
    np.testing.assert_array_equal(robustness.subset_indices(labels, None), np.arange(35))


# The report through a model whose answers are known: P(Fake) grows with high-frequency energy.


def save_detail_model(path, threshold: float, scale: float, offset: float):
    """Save a classifier whose P(Fake) is sigmoid(2 * (scale * E - offset)), E being the mean
    squared Laplacian of the image: sharp, noisy images look Fake, smooth ones Real."""
    import keras

    inputs = keras.Input((32, 32, 3))
    laplacian = keras.layers.Conv2D(1, 3, use_bias=False, name="laplacian")(inputs)
    squared = keras.layers.Multiply()([laplacian, laplacian])
    energy = keras.layers.GlobalAveragePooling2D()(squared)
    outputs = keras.layers.Dense(2, activation="softmax", name="decision")(energy)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((3, 3, 3, 1), np.float32)
    kernel[:, :, :, 0] = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32)[..., None] / 3
    model.get_layer("laplacian").set_weights([kernel])
    model.get_layer("decision").set_weights(
        [np.array([[scale, -scale]], np.float32), np.array([-offset, offset], np.float32)]
    )
    model.save(path)
    card = {"class_names": ["Fake", "Real"], "positive_class": "Fake", "image_size": 32}
    save_card(path, {**card, "threshold": threshold})
    return path


@pytest.fixture(scope="module")
def detail_data(tmp_path_factory):
    """12 sharp Fake images (noise 10-30) and 12 smooth Real ones (noise 0-4), saved as PNG."""
    root = tmp_path_factory.mktemp("detail")
    for label, noises in (("Fake", np.linspace(10, 30, 12)), ("Real", np.linspace(0, 4, 12))):
        (root / label).mkdir()
        for index, noise in enumerate(noises):
            image = textured_images(1, seed=index + (100 if label == "Real" else 0), noise=noise)
            Image.fromarray(image[0]).save(root / label / f"{index:02d}.png")
    return root


@pytest.fixture(scope="module")
def detail_model(detail_data, tmp_path_factory):
    """The detail model scaled to these images, its card's threshold set so that the three least
    sharp Fakes are called Real although every threshold between the classes would be perfect."""
    from realfake.training.pipeline import load_split

    path = tmp_path_factory.mktemp("detail_model") / "detail.h5"
    split = load_split(detail_data, 32, quiet=True)
    energy = np.array([laplacian_energy(image) for image in split.images])
    boundary = (energy[split.labels == 0].min() + energy[split.labels == 1].max()) / 2
    scale = 2.0 / boundary
    save_detail_model(path, 0.5, scale, offset=2.0)  # P(Fake) = 0.5 at the boundary
    probability = load_classifier(path).probability_fake(split.images)
    fakes = np.sort(probability[split.labels == 0])
    save_detail_model(path, float((fakes[2] + fakes[3]) / 2), scale, offset=2.0)
    return path


def laplacian_energy(image: np.ndarray) -> float:
    """The detail model's E for one image, computed with numpy."""
    grey = image.astype(np.float64).mean(axis=-1)
    laplacian = (
        4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:]
    )
    return float(np.mean(laplacian**2))


def test_the_report_scores_each_perturbation_at_the_cards_threshold(detail_model, detail_data):
    from realfake.training.pipeline import load_split

    classifier = load_classifier(detail_model)
    assert classifier.threshold != 0.5
    split = load_split(detail_data, 32, quiet=True)
    rows = robustness.robustness_report(classifier, split.images, split.labels, batch_size=5)
    assert [(row["family"], row["level"]) for row in rows] == [
        (p.family, p.level) for p in perturbations.perturbations(32)
    ]
    is_fake = split.labels == 0
    for row in rows:
        perturbation = Perturbation(row["family"], row["level"])
        probability = classifier.probability_fake(perturbations.perturb(split.images, perturbation))
        says_fake = probability >= classifier.threshold
        assert set(row) == ROW_FIELDS and row["images"] == 24
        assert row["accuracy"] == pytest.approx(np.mean(says_fake == is_fake))
        assert row["real_called_fake"] == pytest.approx(np.mean(says_fake[~is_fake]))
        assert row["fake_called_real"] == pytest.approx(np.mean(~says_fake[is_fake]))
        expected = classification_metrics(split.labels, probability, classifier.threshold)
        assert row["auc"] == pytest.approx(expected["auc"])

    clean = rows[0]
    assert clean["family"] == "clean" and clean["accuracy"] == pytest.approx(21 / 24)
    probability = classifier.probability_fake(split.images)
    rechosen = classification_metrics(
        split.labels, probability, choose_threshold(split.labels, probability)
    )
    assert rechosen["accuracy"] == 1.0  # what a per-row threshold would have reported

    # The detail model loses Fakes to blur and Reals to noise, more the stronger the damage.
    by_family = {family: [r for r in rows if r["family"] == family] for family in ("blur", "noise")}
    assert [r["fake_called_real"] for r in by_family["blur"]][-1] == 1.0
    blur_misses = [clean["fake_called_real"]] + [r["fake_called_real"] for r in by_family["blur"]]
    assert blur_misses == sorted(blur_misses)
    noise_misses = [clean["real_called_fake"]] + [r["real_called_fake"] for r in by_family["noise"]]
    assert noise_misses == sorted(noise_misses) and noise_misses[-1] == 1.0


class Terminal(io.StringIO):
    """Standard error as a terminal: progress bars are drawn into it."""

    def isatty(self):
        return True


def test_the_progress_bar_counts_perturbation_rows(detail_model, detail_data, monkeypatch):
    from realfake.training.pipeline import load_split

    classifier = load_classifier(detail_model)
    split = load_split(detail_data, 32, quiet=True)
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    robustness.robustness_report(classifier, split.images, split.labels, batch_size=24)
    final = terminal.getvalue().split("\r")[-1]
    rows = len(perturbations.perturbations(32))
    assert final.startswith("robustness: 100%") and f"{rows}/{rows}" in final
    assert "row/s" in final or "s/row" in final


def test_evaluate_with_robustness_adds_rows_summary_and_plot(
    detail_model, detail_data, tmp_path, capsys
):
    output = tmp_path / "evaluation"
    argv = ["--model", str(detail_model), "--data", str(detail_data), "--output", str(output)]
    assert evaluate_model.main([*argv, "--robustness-per-class", "5", "--quiet"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics == json.loads((output / "metrics.json").read_text())
    assert sorted(p.name for p in output.iterdir()) == [
        "confusion_matrix.png",
        "metrics.json",
        "robustness.png",
        "roc_curve.png",
    ]
    with Image.open(output / "robustness.png") as plot:
        assert plot.format == "PNG" and plot.size[0] >= 600
    card_threshold = load_card(detail_model)["threshold"]
    assert metrics["threshold"] == card_threshold and metrics["images"] == 24
    rows = metrics["robustness"]
    assert len(rows) == 19 and all(set(row) == ROW_FIELDS for row in rows)
    assert {row["images"] for row in rows} == {10}  # 5 per class
    assert rows[0]["family"] == "clean" and rows[0]["level"] is None
    assert rows[7] == {**rows[7], "family": "jpeg", "level": 10}
    assert len(metrics["robustness_summary"]) == 4
    assert metrics["robustness_summary"][0].startswith("JPEG: ")
    assert "perturbation" in out and "Real called Fake" in out and "down-scale to 12 px" in out

    # The subset is the same on a second run, and the plain metrics keep every image.
    assert evaluate_model.main([*argv, "--robustness-per-class", "5", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["robustness"] == rows

    # Without the flag nothing about robustness is written.
    plain = tmp_path / "plain"
    argv = ["--model", str(detail_model), "--data", str(detail_data), "--output", str(plain)]
    assert evaluate_model.main([*argv, "--quiet"]) == 0
    assert "robustness" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not (plain / "robustness.png").exists()


def test_evaluate_robustness_follows_a_threshold_given_on_the_command_line(
    detail_model, detail_data, tmp_path, capsys
):
    model = tmp_path / "detail.h5"
    shutil.copy(detail_model, model)
    save_card(model, load_card(detail_model))
    argv = ["--model", str(model), "--data", str(detail_data), "--output", str(tmp_path / "e")]
    assert evaluate_model.main([*argv, "--robustness", "--threshold", "0", "--quiet"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # Every P(Fake) reaches 0, so every image is called Fake under every perturbation.
    assert metrics["threshold"] == 0.0
    assert {row["real_called_fake"] for row in metrics["robustness"]} == {1.0}
    assert {row["fake_called_real"] for row in metrics["robustness"]} == {0.0}


def test_update_card_writes_the_rows_into_the_card_the_app_reads(
    detail_model, detail_data, tmp_path, capsys
):
    model = tmp_path / "detail.h5"
    shutil.copy(detail_model, model)
    save_card(model, load_card(detail_model))
    before = load_card(model)
    argv = ["--model", str(model), "--data", str(detail_data), "--output", str(tmp_path / "e")]
    assert evaluate_model.main([*argv, "--robustness-per-class", "5", "--update-card"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    card = load_card(model)
    assert card["robustness"] == metrics["robustness"] and len(card["robustness"]) == 19
    assert card["robustness_summary"] == metrics["robustness_summary"]
    assert card["robustness_data"] == str(detail_data)
    assert {k: v for k, v in card.items() if not k.startswith("robustness")} == before
    assert load_classifier(model).card == card  # still the card of this model

    for extra, message in [
        ([], "add --robustness"),
        (["--robustness", "--threshold", "0.5"], "leave out --threshold"),
    ]:
        with pytest.raises(SystemExit) as refused:
            evaluate_model.main([*argv, "--update-card", *extra])
        assert refused.value.code == 2 and message in capsys.readouterr().err


def test_choose_band_writes_the_band_chosen_on_the_folder_into_the_card(
    detail_model, detail_data, tmp_path, capsys
):
    from realfake.evaluation.metrics import uncertain_band
    from realfake.training.pipeline import load_split

    model = tmp_path / "detail.h5"
    shutil.copy(detail_model, model)
    old_band = {"low": 0.0, "high": 1.0, "rule": "the rule the card was written with"}
    save_card(model, {**load_card(detail_model), "uncertain_band": old_band})
    before = load_card(model)
    argv = ["--model", str(model), "--data", str(detail_data), "--output", str(tmp_path / "e")]
    assert evaluate_model.main([*argv, "--choose-band", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "wrote the band into the model card" in out

    classifier = load_classifier(model)  # still the card of this model
    split = load_split(detail_data, classifier.image_size, quiet=True)
    expected = uncertain_band(
        split.labels, classifier.probability_fake(split.images), before["threshold"]
    )
    card = load_card(model)
    assert card["uncertain_band"] == expected != old_band
    assert json.loads(out.strip().splitlines()[-1])["uncertain_band"] == expected
    assert {k: v for k, v in card.items() if k != "uncertain_band"} == {
        k: v for k, v in before.items() if k != "uncertain_band"
    }
    with pytest.raises(SystemExit) as refused:
        evaluate_model.main([*argv, "--choose-band", "--threshold", "0.5"])
    assert refused.value.code == 2 and "leave out --threshold" in capsys.readouterr().err


def wait_until_read(process: subprocess.Popen, path: Path, timeout: float = 240) -> None:
    """Return once `process` has opened `path` and closed it again (a model loaded), or ended."""
    seen = False
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            names = {os.readlink(entry) for entry in Path(f"/proc/{process.pid}/fd").iterdir()}
        except OSError:  # a descriptor closed while it was listed
            continue
        if str(path) in names:
            seen = True
        elif seen:
            return
        time.sleep(0.002)


def test_update_card_refuses_when_another_model_is_put_in_place_during_the_run(
    saved_model, detail_model, detail_data, tmp_path
):
    """A retraining that lands while a long robustness run works must not get the old model's
    numbers written under its hash, nor lose its own card."""
    model = tmp_path / "served.h5"
    shutil.copy(saved_model, model)
    save_card(model, load_card(saved_model))
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(detail_model, other / "served.h5")
    save_card(other / "served.h5", load_card(detail_model))
    other_card = (other / "served.json").read_bytes()
    command = [
        sys.executable,
        str(Path(evaluate_model.__file__).resolve()),
        *("--model", str(model), "--data", str(detail_data), "--output", str(tmp_path / "e")),
        *("--robustness", "--update-card", "--quiet"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_read(process, model)
        assert process.poll() is None, "the evaluation ended before the model could be replaced"
        os.replace(other / "served.h5", model)  # as training saves: the model, then its card
        os.replace(other / "served.json", model.with_suffix(".json"))
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1
    assert stderr.startswith("error: the model file of") and stderr.count("\n") == 1
    assert "was replaced while it was being evaluated" in stderr
    assert model.with_suffix(".json").read_bytes() == other_card
    assert load_classifier(model).threshold == load_card(detail_model)["threshold"]


def test_robustness_per_class_must_be_positive(capsys):
    with pytest.raises(SystemExit) as caught:
        evaluate_model.main(["--robustness-per-class", "0"])
    assert caught.value.code == 2
    assert "--robustness-per-class must be at least 1" in capsys.readouterr().err


def test_summary_lines_give_each_family_from_clean_to_its_severest_level():
    def row(family, level, accuracy):
        return {"family": family, "level": level, "accuracy": accuracy}

    rows = [
        row("clean", None, 0.961),
        row("jpeg", 95, 0.95),
        row("jpeg", 10, 0.514),
        row("blur", 0.5, 0.9),
        row("blur", 2.0, 0.55),
        row("noise", 16, 0.62),
        row("downscale", 24, 0.8),
        row("downscale", 12, 0.5),
    ]
    assert robustness.summary_lines(rows) == [
        "JPEG: 96% clean -> 51% at quality 10",
        "blur: 96% clean -> 55% at sigma 2",
        "noise: 96% clean -> 62% at sigma 16",
        "down-scale: 96% clean -> 50% at 12 px",
    ]


def test_format_table_has_one_line_per_row():
    rows = [
        {
            "perturbation": "JPEG quality 10",
            "accuracy": 0.5,
            "auc": 0.61234,
            "real_called_fake": 0.02,
            "fake_called_real": 0.98,
        }
    ]
    header, line = robustness.format_table(rows).splitlines()
    assert header.split()[:3] == ["perturbation", "accuracy", "AUC"]
    assert line.split() == ["JPEG", "quality", "10", "50.0%", "0.612", "2.0%", "98.0%"]


# Training augmentation: tf ops.


def test_augmentation_is_deterministic_for_a_seed_and_keeps_shape_and_dtype():
    images = textured_images(16)
    seed = np.array([5, 9])
    first = batch_augmentation.augment_for_robustness(images, seed, 0.5, 0.5).numpy()
    assert first.shape == images.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(
        batch_augmentation.augment_for_robustness(images, seed, 0.5, 0.5), first
    )
    other = batch_augmentation.augment_for_robustness(images, np.array([5, 10]), 0.5, 0.5).numpy()
    assert not np.array_equal(other, first)
    single = batch_augmentation.augment_for_robustness(images[0], seed, 1.0, 1.0).numpy()
    assert single.shape == images[0].shape and single.dtype == np.uint8
    # Probability 0 leaves every image as it was.
    np.testing.assert_array_equal(batch_augmentation.augment_for_robustness(images, seed), images)


@pytest.mark.parametrize(("jpeg", "blur"), [(0.25, 0.0), (0.0, 0.5)])
def test_augmentation_changes_about_the_given_share_of_images(jpeg, blur):
    images = textured_images(400)
    augmented = batch_augmentation.augment_for_robustness(
        images, np.array([1, 2]), jpeg, blur
    ).numpy()
    changed = np.mean(np.any(augmented != images, axis=(1, 2, 3)))
    probability = jpeg or blur
    # Binomial spread at n=400 is about 2.5 points; a blur sigma near 0 changes no pixel.
    assert probability - 0.09 <= changed <= probability + 0.07


def test_augmentation_jpeg_quality_and_blur_do_what_they_say():
    images = textured_images(8)
    seed = np.array([3, 4])

    def jpeg_at(quality):
        return batch_augmentation.augment_for_robustness(
            images, seed, jpeg_probability=1.0, jpeg_quality_range=(quality, quality)
        ).numpy()

    q10, q95 = jpeg_at(10), jpeg_at(95)
    assert not np.array_equal(q10, q95)
    assert np.abs(q95.astype(int) - images).mean() < np.abs(q10.astype(int) - images).mean()

    blurred = batch_augmentation.augment_for_robustness(
        images, seed, blur_probability=1.0, blur_sigma_range=(1.0, 3.0)
    ).numpy()
    assert np.all(high_frequency_energy(blurred) < 0.5 * high_frequency_energy(images))


def test_a_batch_mixing_sigmas_blurs_each_image_with_its_own():
    images = textured_images(3)
    sigmas = [0.0, 1.0, 2.5]
    mixed = perturbations.gaussian_blur(images, np.array(sigmas, np.float32), reach=9).numpy()
    for image, sigma, result in zip(images, sigmas, mixed, strict=True):
        np.testing.assert_array_equal(result, perturbations.gaussian_blur(image, sigma, reach=9))
    np.testing.assert_array_equal(mixed[0], images[0])


def test_downscale_augmentation_is_seeded_keeps_the_size_and_removes_detail():
    images = textured_images(12)
    seed = np.array([7, 8])

    def downscaled(seed, sides=(12, 16)):
        return batch_augmentation.augment_for_robustness(
            images, seed, downscale_probability=1.0, downscale_side_range=sides
        ).numpy()

    first = downscaled(seed)
    assert first.shape == images.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(downscaled(seed), first)
    assert not np.array_equal(downscaled(np.array([7, 9])), first)
    # Sides of 12-16 px keep far less of the pixel-to-pixel detail than the 32 px original.
    assert np.all(high_frequency_energy(first) < 0.6 * high_frequency_energy(images))
    # A side at the image's own size changes nothing, whichever filter is drawn.
    np.testing.assert_array_equal(downscaled(seed, sides=(32, 32)), images)
    # Probability 0 leaves the images alone; the blur's and JPEG's draws are not moved by it.
    np.testing.assert_array_equal(
        batch_augmentation.augment_for_robustness(
            images, seed, 0.5, 0.5, downscale_probability=0.0
        ),
        batch_augmentation.augment_for_robustness(images, seed, 0.5, 0.5),
    )


def test_each_downscale_filter_resamples_in_its_own_way():
    images = np.repeat(textured_images(1), len(batch_augmentation.DOWNSCALE_FILTERS), axis=0)
    filters = np.arange(len(batch_augmentation.DOWNSCALE_FILTERS), dtype=np.int32)
    sides = np.full(len(filters), 13, np.int32)
    results = batch_augmentation.downscale_and_back(images, sides, filters).numpy()
    assert len({result.tobytes() for result in results}) == len(filters)
    # Nearest neighbour only copies pixels: every output pixel is one of the input's.
    nearest = results[
        list(batch_augmentation.DOWNSCALE_FILTERS).index(("nearest", "nearest", False))
    ]
    assert {tuple(pixel) for pixel in nearest.reshape(-1, 3)} <= {
        tuple(pixel) for pixel in images[0].reshape(-1, 3)
    }


def test_crop_shifts_each_image_by_whole_pixels():
    import tensorflow as tf

    from realfake.training.batch_augmentation import CROP_PADDING, pad_and_crop

    images = textured_images(16).astype(np.float32)
    seed = tf.constant([4, 2], tf.int64)
    cropped = pad_and_crop(tf.constant(images), seed).numpy()
    assert cropped.shape == images.shape
    np.testing.assert_array_equal(pad_and_crop(tf.constant(images), seed), cropped)
    shifts = set()
    for image, result in zip(images, cropped, strict=True):
        padded = np.pad(image, [(CROP_PADDING,) * 2, (CROP_PADDING,) * 2, (0, 0)])
        found = [
            (top, left)
            for top in range(2 * CROP_PADDING + 1)
            for left in range(2 * CROP_PADDING + 1)
            if np.array_equal(padded[top : top + 32, left : left + 32], result)
        ]
        assert len(found) == 1  # exactly one whole-pixel offset, no resampled value
        shifts.add(found[0])
    assert len(shifts) > 4  # each image draws its own shift


@pytest.mark.parametrize("augment", ["jpeg,blur", "flip,crop,jpeg,blur,downscale:0.5"])
def test_the_pipeline_augments_a_resumed_run_as_the_whole_run(augment):
    from realfake.training.pipeline import Split, make_dataset

    images = textured_images(20)
    split = Split(images, np.arange(20) % 2, [f"{index}.png" for index in range(20)])

    def batches(epochs):
        dataset = make_dataset(
            split,
            4,
            seed=42,
            augment=augment,
            epochs=epochs,
            robustness_probability=0.5,
        )
        return [(x.numpy(), y.numpy()) for x, y in dataset]

    whole, resumed = batches((0, 3)), batches((1, 3))
    assert len(whole) == 15 and len(resumed) == 10
    for (whole_images, whole_labels), (images_again, labels_again) in zip(
        whole[5:], resumed, strict=True
    ):
        np.testing.assert_array_equal(whole_images, images_again)
        np.testing.assert_array_equal(whole_labels, labels_again)
    if augment != "jpeg,blur":
        return  # flips and crops change nearly every image; the shares below are the damage's
    originals = {image.tobytes() for image in images.astype(np.float32)}
    changed = [np.array([x.tobytes() not in originals for x in batch]) for batch, _ in whole]
    assert 0 < np.mean(np.concatenate(changed)) < 1
    # Each batch draws its own augmentation: the same images in two batches are not treated alike.
    assert not all(np.array_equal(changed[0], other) for other in changed[1:])


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("flip,jpeg,blur", True),
        ("jpeg", True),
        ("flip-shift,blur", True),
        ("flip,crop,jpeg:0.3,blur:0.25,downscale:1", True),
        ("crop,downscale", True),
        ("crop:0.5", False),
        ("blur:1.5", False),
        ("downscale:often", False),
        ("crop,crop", False),
        ("flip,flip-shift", False),
        ("jpeg,jpeg", False),
        ("sharpen", False),
    ],
)
def test_training_takes_robustness_augmentations_beside_one_flip_mode(value, accepted, capsys):
    import model_training

    parser = model_training.build_parser()
    if accepted:
        assert parser.parse_args(["--augment", value]).augment == value
    else:
        with pytest.raises(SystemExit):
            parser.parse_args(["--augment", value])
        assert "--augment" in capsys.readouterr().err
