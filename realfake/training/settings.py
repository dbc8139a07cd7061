"""A training run's settings as one typed object, and the named recipes that fill it.

Kept free of TensorFlow, so that `model_training.py --help` and its usage checks answer at once.
"""

from dataclasses import dataclass, field, fields
from pathlib import Path

from realfake.core import config
from realfake.core.errors import PipelineError

CHECKPOINT_DIR = Path("runs") / "training"


@dataclass(frozen=True)
class AugmentPlan:
    """What `--augment` asks of the training batches.

    `layer_mode`: one of config.AUGMENTATIONS or None; `crop`: whole-pixel pad-and-crop
    translation; `probabilities`: each robustness family's chance per image (0 when not asked).
    """

    layer_mode: str | None = None
    crop: bool = False
    probabilities: dict = field(default_factory=dict)

    def probability(self, family: str) -> float:
        return float(self.probabilities.get(family, 0.0))


def parse_augment(text: str | None, default_probability: float = 0.1) -> AugmentPlan:
    """`--augment`'s comma-separated names read into an AugmentPlan.

    A robustness family may carry its own probability (`downscale:0.5`); without one it takes
    `default_probability` (--robustness-probability). Refuses unknown or repeated names, two
    flip modes, a probability outside 0-1, and a probability on a name that takes none.
    """
    if not text:
        return AugmentPlan()
    known = (*config.AUGMENTATIONS, config.CROP_AUGMENTATION, *config.ROBUSTNESS_AUGMENTATIONS)
    names, probabilities = [], {}
    for item in text.split(","):
        name, _, given = item.partition(":")
        if name not in known or name in names:
            raise PipelineError(
                f"invalid choice: {text!r} (comma-separated names from {', '.join(known)}, "
                "each once)"
            )
        names.append(name)
        if given and name not in config.ROBUSTNESS_AUGMENTATIONS:
            raise PipelineError(
                f"{text!r}: only {', '.join(config.ROBUSTNESS_AUGMENTATIONS)} take a probability"
            )
        if name in config.ROBUSTNESS_AUGMENTATIONS:
            try:
                probability = float(given) if given else float(default_probability)
            except ValueError:
                probability = -1.0
            if not 0.0 <= probability <= 1.0:
                raise PipelineError(f"{text!r}: {name}'s probability must be between 0 and 1")
            probabilities[name] = probability
    modes = [name for name in names if name in config.AUGMENTATIONS]
    if len(modes) > 1:
        raise PipelineError(f"{text!r}: flip and flip-shift do not combine")
    return AugmentPlan(
        layer_mode=modes[0] if modes else None,
        crop=config.CROP_AUGMENTATION in names,
        probabilities=probabilities,
    )


@dataclass
class TrainingConfig:
    """Everything `realfake.training.run.train` needs; model_training.py's flags map onto it."""

    data: Path = config.DATA_DIR
    model_path: Path = config.MODEL_PATH
    metrics_dir: Path = config.METRICS_DIR
    checkpoint_dir: Path = CHECKPOINT_DIR
    resume: bool = False
    backbone: str = config.DEFAULT_BACKBONE
    weights: str = "imagenet"
    image_size: int = config.IMAGE_SIZE
    batch_size: int = 32
    epochs: int = 60
    learning_rate: float = 1e-3
    end_learning_rate: float = 1e-5
    decay_power: float = 2.0
    warmup_fraction: float = 0.0
    dense_units: int = 256
    l2: float = 1e-4
    seed: int = config.SEED
    limit_per_class: int | None = None
    freeze_base: bool = False
    zero_init_residual: bool = False
    augment: str | None = None
    robustness_probability: float = 0.1
    label_smoothing: float = 0.0
    weight_decay: float = 0.0
    ema_momentum: float = 0.0
    test_time_flip: bool = False
    grace_epochs: int = 3
    patience: int = 10
    bn_batches: int = 50
    fast_path: bool = True
    strategy: str = "auto"
    quiet: bool = False
    progress_seconds: float = 60.0

    @classmethod
    def from_mapping(cls, values) -> "TrainingConfig":
        """A config from any mapping or namespace holding (at least) its field names."""
        get = values.get if isinstance(values, dict) else lambda name: getattr(values, name)
        return cls(**{field.name: get(field.name) for field in fields(cls)})


# The settings that must match for --resume to continue a run (paths, resume, scoring and
# display settings may change between the two).
RUN_SETTINGS = (
    "data", "backbone", "weights", "image_size", "batch_size", "epochs", "learning_rate",
    "end_learning_rate", "decay_power", "dense_units", "l2", "seed", "limit_per_class",
    "freeze_base", "augment", "grace_epochs", "patience", "bn_batches", "warmup_fraction",
    "zero_init_residual", "robustness_probability", "label_smoothing", "weight_decay",
    "ema_momentum",
)  # fmt: skip


def run_settings(training_config: TrainingConfig) -> dict:
    """The settings that must match for --resume to continue a run, as strings."""
    return {name: str(getattr(training_config, name)) for name in RUN_SETTINGS}


# The first reference CIFAKE model of docs/results.md: from scratch, 9 epochs of 32x32 images
# with mirror-image augmentation, a short warm-up and a linear decay to 0, scored with the
# test-time flip (about two hours on 2 CPU cores). Explicit flags override any of these values.
CIFAKE_V1 = {
    "weights": "none",
    "image_size": 32,
    "batch_size": 64,
    "epochs": 9,
    "learning_rate": 2e-3,
    "end_learning_rate": 0.0,
    "decay_power": 1.0,
    "warmup_fraction": 0.02,
    "zero_init_residual": True,
    "augment": "flip",
    "grace_epochs": 9,
    "test_time_flip": True,
}
# The reference recipe: the first one, with each training image also blurred, down-scaled and
# back, and re-encoded as JPEG, each with probability 0.3 (docs/robustness.md: the proxy runs
# that chose it), so that a fake stays a fake after what a site or a messenger does to it.
CIFAKE_V2 = {**CIFAKE_V1, "augment": "flip,jpeg:0.3,blur:0.3,downscale:0.3"}
RECIPES: dict[str, dict] = {
    "cifake": dict(CIFAKE_V2),
    "cifake-v1": dict(CIFAKE_V1),
}


def recipe(name: str) -> dict:
    """The settings of a named recipe."""
    if name not in RECIPES:
        raise PipelineError(f"unknown recipe {name}: choose {', '.join(sorted(RECIPES))}")
    return dict(RECIPES[name])
