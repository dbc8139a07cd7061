"""What the upload page shows: the model card in words, verdicts, provenance, framed images and
heatmaps.

Only the web app uses this module; the numbers it presents come from
`realfake.inference.classifier` and `realfake.app.serving`, and the provenance from
`realfake.inference.provenance`, never from a computation of its own.
"""

import base64
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from realfake.app.serving import Predictor
from realfake.evaluation.perturbations import CLEAN, FAMILIES, format_level
from realfake.inference.classifier import Prediction, size_notice
from realfake.inference.provenance import Provenance

# Images are shown in a square frame of this many pixels, the heatmap on the same frame.
FRAME_SIDE = 256
FRAME_BACKGROUND = (32, 33, 36)
# What the page calls each verdict of `Prediction.verdict`.
VERDICTS = {"Fake": "AI-generated", "Real": "Real", "Uncertain": "Uncertain"}
# The model card's test metrics as the page shows them: (key, label, format).
METRIC_FORMATS = (
    ("accuracy", "accuracy", "{:.1%}"),
    ("precision", "precision", "{:.1%}"),
    ("recall", "recall", "{:.1%}"),
    ("f1", "F1", "{:.3f}"),
    ("auc", "AUC", "{:.3f}"),
    ("loss", "loss", "{:.3f}"),
)
SPLIT_ORDER = {"train": 0, "validation": 1, "test": 2}
TRAINED_ON_LABELS = (
    ("dataset", "dataset"),
    ("generator", "AI images from"),
    ("real_source", "real photographs from"),
)


def card_summary(predictor: Predictor) -> dict:
    """What the page's "About this model" section shows, from the loaded model's card."""
    card = predictor.card
    metrics = card.get("test_metrics") or {}
    shown_metrics = [
        f"{label} {template.format(metrics[key])}"
        for key, label, template in METRIC_FORMATS
        if isinstance(metrics.get(key), int | float)
    ]
    training_data = card.get("training_data") or {}
    ordered_splits = sorted(training_data, key=lambda split: SPLIT_ORDER.get(split, 99))
    band = card.get("uncertain_band") if predictor.classifier.uncertain_band else None
    return {
        "model_file": predictor.model_path.name,
        "model_sha256": predictor.model_sha256,
        "image_size": predictor.image_size,
        "threshold": predictor.threshold,
        "test_time_flip": predictor.test_time_flip,
        "uncertain_band": band,
        "training_data": {split: training_data[split] for split in ordered_splits},
        "test_metrics": shown_metrics,
        "test_images": metrics.get("images"),
        "trained_on": trained_on_lines(card.get("trained_on")),
        "robustness": robustness_lines(card.get("robustness")),
        "robustness_images": robustness_images(card.get("robustness")),
        "weights": card.get("weights"),
        "preprocessing": card.get("preprocessing"),
        "created": card.get("created"),
        "has_card": bool(card),
        "format": card.get("format"),
        "exported_from": card.get("source_model"),
    }


def trained_on_lines(trained_on: object) -> list[str]:
    """The card's `trained_on` object as short "what: value" lines; none when it is absent."""
    if not isinstance(trained_on, dict):
        return []
    lines = []
    known = {key for key, _ in TRAINED_ON_LABELS}
    for key, label in TRAINED_ON_LABELS:
        if trained_on.get(key) not in (None, ""):
            lines.append(f"{label}: {trained_on[key]}")
    for key, value in trained_on.items():
        if key not in known and value not in (None, ""):
            lines.append(f"{key.replace('_', ' ')}: {value}")
    return lines


def robustness_lines(rows: object) -> list[str]:
    """The card's `robustness` rows as one line per family: "clean images: 86%", then e.g.
    "blur: 82% at sigma 0.5, 70% at sigma 1" (levels named as realfake.evaluation.robustness names
    them)."""
    if not isinstance(rows, list):
        return []
    families: dict[str, list[str]] = {}
    for row in rows:
        if not isinstance(row, dict) or not isinstance(row.get("accuracy"), int | float):
            continue
        family = str(row.get("family", "other"))
        if family == CLEAN:
            families.setdefault("clean images", []).append(f"{row['accuracy']:.0%}")
            continue
        known = FAMILIES.get(family)
        level = row.get("level")
        level = format_level(level) if isinstance(level, int | float) else str(level)
        where = known.level_text.format(level) if known else level
        title = known.title if known else family
        families.setdefault(title, []).append(f"{row['accuracy']:.0%} at {where}")
    return [f"{title}: {', '.join(levels)}" for title, levels in families.items()]


def robustness_images(rows: object) -> int | None:
    """How many images each robustness row scored (that of the first row), when the card says."""
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        images = rows[0].get("images")
        return images if isinstance(images, int) else None
    return None


@dataclass(frozen=True)
class ShownPrediction:
    """A Prediction as the page and the API state it."""

    verdict: str
    label: str
    uncertain: bool
    notices: tuple[str, ...]


def shown(
    prediction: Prediction, width: int, height: int, image_size: int, robustness_shown: bool = False
) -> ShownPrediction:
    """The verdict and the notices that go with one image's prediction; `robustness_shown` says
    whether "About this model" lists the model's accuracy under down-scaling, to point there."""
    notices = []
    size = size_notice(width, height, image_size)
    if size is not None:
        where = (
            'its accuracy on shrunk images is under "About this model" below'
            if robustness_shown
            else 'see "Robustness" in the README for how much down-scaling costs'
        )
        notices.append(f"{size} ({where}).")
    return ShownPrediction(
        verdict=prediction.verdict,
        label=prediction.label,
        uncertain=prediction.uncertain,
        notices=tuple(notices),
    )


def png_data_uri(pixels: np.ndarray) -> str:
    """A uint8 RGB array as a PNG data URI, so nothing is written to disk."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def framed(pixels: np.ndarray, side: int = FRAME_SIDE) -> np.ndarray:
    """The image centred in a dark side x side square, letterboxed where it is not square."""
    image = Image.fromarray(pixels)
    if max(image.size) > side:
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
    frame = Image.new("RGB", (side, side), FRAME_BACKGROUND)
    frame.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    return np.asarray(frame)


def overlay(display: np.ndarray, heatmap: np.ndarray, side: int = FRAME_SIDE) -> np.ndarray:
    """The heatmap in colour over the displayed image, in the same frame as `framed(display)`.

    The model sees the whole image squeezed into its square input, so its map is stretched
    back to the image's own shape before it is laid over it.
    """
    from matplotlib import colormaps

    base = Image.fromarray(display)
    if max(base.size) > side:
        base.thumbnail((side, side), Image.Resampling.LANCZOS)
    heat = Image.fromarray((heatmap * 255).astype(np.uint8)).resize(
        base.size, Image.Resampling.BILINEAR
    )
    heat_values = np.asarray(heat, dtype=np.float32) / 255.0
    colours = colormaps["inferno"](heat_values)[..., :3] * 255.0
    alpha = 0.25 + 0.5 * heat_values[..., None]
    blended = (1 - alpha) * np.asarray(base, dtype=np.float32) + alpha * colours
    return framed(np.clip(blended, 0, 255).astype(np.uint8), side)


@dataclass(frozen=True)
class Example:
    """An image to try with one click: made when first asked for, from no dataset."""

    name: str
    title: str
    data: bytes


# (name, title, which demo generator, seed). The "fake" ones are photographs given the
# artefacts of image generators, not images from a generator: the titles say so.
EXAMPLE_RECIPES = (
    ("photo-1", "Photograph", "real", 1),
    ("photo-2", "Photograph", "real", 2),
    ("artefacts-1", "Photograph with generator-like artefacts", "fake", 1),
    ("artefacts-2", "Photograph with generator-like artefacts", "fake", 2),
)


def make_examples(image_size: int) -> dict[str, Example]:
    """The example images as PNG bytes at the model's input size, by name."""
    from realfake.data.demo_data import encode, fake_image, real_image, sample_photos

    photos = sample_photos()
    # The demo generators crop at most half of a 427-pixel photograph, at an even side.
    side = min(max(image_size, 16), 128) // 2 * 2
    makers = {"real": real_image, "fake": fake_image}
    examples = {}
    for name, title, kind, seed in EXAMPLE_RECIPES:
        rng = np.random.default_rng([seed, 7])
        image = makers[kind](rng, photos, side)
        examples[name] = Example(name, title, encode(image, "PNG"))
    return examples


# Folder examples larger than this are shrunk for the page (the model shrinks them anyway).
FOLDER_EXAMPLE_MAX_SIDE = 1024


def folder_examples(folder: Path | str | None, per_class: int = 2) -> dict[str, Example]:
    """The first `per_class` images (in name order) of each class of a labelled folder, decoded
    as the model's inputs are (`load_rgb`) and offered as PNG examples titled with their label;
    none when the folder is absent or not labelled."""
    from realfake.core.images import list_images, load_rgb
    from realfake.core.layout import class_folders
    from realfake.data.demo_data import encode

    if not folder or not Path(folder).is_dir():
        return {}
    examples = {}
    for class_name, class_folder in sorted(class_folders(Path(folder)).items()):
        offered = 0
        for path in list_images(class_folder):
            if offered == per_class:
                break
            try:
                image = Image.fromarray(load_rgb(path))
            except (OSError, ValueError):
                continue  # a broken file is not offered
            image.thumbnail((FOLDER_EXAMPLE_MAX_SIDE, FOLDER_EXAMPLE_MAX_SIDE))
            offered += 1
            name = f"folder-{class_name.lower()}-{offered}"
            title = f"{Path(folder).name}/{class_folder.name}/{path.name} (labelled {class_name})"
            examples[name] = Example(name, title, encode(image, "PNG"))
    return examples


# The headline a file earns when signed credentials that pass validation as a whole (intact
# signature, still matching its pixels, no failure in an assertion or an earlier version) declare
# generative AI: a declaration by whoever made it outweighs the classifier's guess.
DECLARED_AI_HEADLINE = "AI-generated (declared in its content credentials)"
# What the panel calls each kind of evidence `Provenance.source` names.
PROVENANCE_SOURCES = {
    "c2pa": "signed content credentials (C2PA)",
    "xmp": "XMP metadata (unsigned)",
    "generator metadata": "image generator settings (unsigned)",
}


@dataclass(frozen=True)
class ProvenancePanel:
    """The "Provenance" panel beside a verdict: every text in it comes from the file, so the
    template escapes it like any other untrusted text."""

    headline: str | None
    found: str
    summary: str
    facts: tuple[tuple[str, str], ...]
    claims: tuple[str, ...]
    details: tuple[tuple[str, str], ...]
    error: str | None


def provenance_panel(provenance: Provenance) -> ProvenancePanel:
    """What the page shows of an upload's provenance: what was found, who signed it, whether it
    still matches the image, what fails validation and where, one line on what that means, and
    the file's own claims."""
    facts: list[tuple[str, str]] = []
    if provenance.source == "c2pa":
        if provenance.declared_origin:
            term = provenance.digital_source_type
            facts.append(("Declares", f"{provenance.declared_origin} ({term})"))
        if provenance.generator:
            facts.append(("Made with", provenance.generator))
        signer = provenance.signer or "an unnamed signer"
        at = f", at {provenance.signed_at}" if provenance.signed_at else ""
        facts.append(("Signed by", signer + at))
        facts.append(("Signature", provenance.signature or "state unknown"))
        facts.append(("Matches the image", _matches_in_words(provenance.matches_image)))
        facts.extend(("Fails validation", failure) for failure in provenance.failures)
        facts.extend(("Not confirmed", note) for note in provenance.notes)
    found = PROVENANCE_SOURCES.get(provenance.source or "", "no provenance data")
    if provenance.source is None and provenance.claims:
        found = "metadata that declares no origin (unsigned)"
    return ProvenancePanel(
        headline=DECLARED_AI_HEADLINE if provenance.declares_ai_with_valid_credentials else None,
        found=found,
        summary=provenance.summary,
        facts=tuple(facts),
        claims=provenance.claims,
        details=provenance.details,
        error=(
            f"Part of the file's metadata was skipped as {provenance.error}: damaged, or too "
            "large to read safely."
            if provenance.error
            else None
        ),
    )


def _matches_in_words(matches_image: bool | None) -> str:
    if matches_image is True:
        return "yes, the signed hash still matches the image"
    if matches_image is False:
        return "no: the manifest no longer matches the image, it was changed after signing"
    return "not stated by the credentials"
