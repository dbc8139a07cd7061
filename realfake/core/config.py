"""Default folders, class names, seed, image size and model path: the one place they are defined."""

from pathlib import Path

DATA_DIR = Path("data")
RAW_DIR = DATA_DIR / "raw"
INTERIM_DIR = DATA_DIR / "interim"
CIFAKE_RAW_DIR = RAW_DIR / "cifake"
FAKE_OR_REAL_RAW_DIR = RAW_DIR / "fake_or_real"
CIFAKE_SPLIT_DIR = INTERIM_DIR / "cifake"
FAKE_OR_REAL_SPLIT_DIR = INTERIM_DIR / "fake_or_real"
AUGMENTED_TRAIN_DIR = DATA_DIR / "augmented_train"

SPLITS = ("train", "validation", "test")

# What is known of each source the merger names (its folder under data/interim), for the model
# card's `trained_on`. A source not listed is named there but not described.
_DEMO_ORIGIN = "none: synthetic stand-ins drawn by make_demo_data.py from scikit-learn's photos"
KNOWN_SOURCES = {
    "cifake": {
        "dataset": "CIFAKE (Bird & Lotfi 2024)",
        "generator": "Stable Diffusion 1.4",
        "real_source": "CIFAR-10",
    },
    "fake_or_real": {"dataset": "Fake-or-Real Competition Dataset"},
    "demo_cifake": {
        "dataset": "the synthetic demo in CIFAKE's layout",
        "generator": _DEMO_ORIGIN,
        "real_source": _DEMO_ORIGIN,
    },
    "demo_fake_or_real": {
        "dataset": "the synthetic demo in Fake-or-Real's layout",
        "generator": _DEMO_ORIGIN,
        "real_source": _DEMO_ORIGIN,
    },
}

# Alphabetical, so the label index matches Keras's directory ordering: Fake = 0, Real = 1.
CLASS_NAMES = ("Fake", "Real")
POSITIVE_CLASS = "Fake"

# Folder names recognised as each class, compared case-insensitively.
CLASS_ALIASES = {
    "Fake": frozenset(
        {"fake", "fake_images", "fakes", "generatedart", "generated", "ai", "synthetic"}
    ),
    "Real": frozenset({"real", "real_images", "reals", "realart"}),
}

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

SEED = 42
IMAGE_SIZE = 32
# Images per forward pass when scoring (evaluation, batch prediction, the app).
INFERENCE_BATCH_SIZE = 64

# The classifier's base network (realfake.model.build_model): ResNet101 is the reference; ResNet50
# and ResNet152 are faster and larger alternatives with the same head; "tiny" is a small residual
# net of a few thousand parameters for tests and quick demos.
BACKBONES = ("resnet50", "resnet101", "resnet152", "tiny")
DEFAULT_BACKBONE = "resnet101"

# The training-batch augmentations of realfake.training.pipeline.augmentation_layers and --augment.
AUGMENTATIONS = ("flip", "flip-shift")
# Whole-pixel translation: the image padded with 4 black pixels and cropped back at random.
CROP_AUGMENTATION = "crop"
# Damage for robustness (realfake.evaluation.robustness), combinable with the above, each image
# with its family's probability (`jpeg:0.3`; without one, --robustness-probability).
ROBUSTNESS_AUGMENTATIONS = ("jpeg", "blur", "downscale")

MODELS_DIR = Path("models")
MODEL_PATH = MODELS_DIR / "ai_real_image_classifier_resnet101.h5"
METRICS_DIR = Path("metrics_graphs")

# Pillow's own bomb guard refuses images over about 179 megapixels; the app stops far sooner.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
