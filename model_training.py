"""Train the ResNet101 classifier on data/{train,validation,test}/{Fake,Real}.

Reads the three split folders (class folders may use aliases such as FAKE/REAL), decodes every
image once, trains with validation after every epoch, chooses the decision threshold on the
validation split and scores the test split. Writes:
    models/ai_real_image_classifier_resnet101.h5   the model (plain keras.models.load_model)
    models/ai_real_image_classifier_resnet101.json its model card
    metrics_graphs/  training_log.csv, training_<metric>.png, confusion_matrix.png,
                     roc_curve.png, model_architecture.png, test_metrics.json
    runs/training/   the last finished epoch's checkpoint for --resume, removed at the end

Example:
    python model_training.py --recipe cifake
"""

import argparse
import sys
from pathlib import Path

import realfake  # noqa: F401  (sets TensorFlow's environment before it is imported)
from realfake.core import config
from realfake.core.cli import (
    add_quiet_argument,
    add_verbose_argument,
    report_errors,
    require_at_least_one,
)
from realfake.core.errors import PipelineError
from realfake.training.settings import RECIPES, TrainingConfig, parse_augment

EXAMPLES = """examples:
  python model_training.py --recipe cifake                  the reference CIFAKE model (~2 h)
  python model_training.py --recipe cifake --epochs 3       the same recipe, shorter
  python model_training.py --weights none --epochs 4 --limit-per-class 200   a quick try
  python model_training.py --recipe cifake --resume         continue after an interruption
"""


# Every flag's default is the TrainingConfig field it fills: one place for each default.
DEFAULTS = TrainingConfig()


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Adds '(default: X)' to a flag's help once: not where the help already states its default,
    and not for on/off switches, whose help says what they turn on or off."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "default" in text
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or action.option_strings == []
        ):
            return text
        return f"{text} (default: %(default)s)"


def augmentation_names(text: str) -> str:
    """--augment's value checked (realfake.training.settings.parse_augment), kept as written."""
    try:
        parse_augment(text)
    except PipelineError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _add_file_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the recipe, the folders and files a run reads and writes, and --resume."""
    parser.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        help="start from a named set of settings (cifake: the reference model of README "
        "Results); flags given explicitly override the recipe's values",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULTS.data,
        help="folder holding train/, validation/ and test/, each with Fake/ and Real/",
    )
    parser.add_argument(
        "--model",
        dest="model_path",
        type=Path,
        metavar="PATH",
        default=DEFAULTS.model_path,
        help="where to save the trained model (.h5); the model card goes beside it (.json)",
    )
    # The earlier name, still accepted; --model is the one name every script uses.
    parser.add_argument(
        "--model-path", dest="model_path", type=Path, default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
    )  # fmt: skip
    parser.add_argument(
        "--metrics-dir",
        type=Path,
        default=DEFAULTS.metrics_dir,
        help="folder for the training log, plots and test metrics",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=DEFAULTS.checkpoint_dir,
        help="folder for per-epoch checkpoints used by --resume",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run from its last finished epoch (same settings)",
    )


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that choose the base network, its initial weights and the input size."""
    parser.add_argument(
        "--backbone",
        choices=config.BACKBONES,
        default=DEFAULTS.backbone,
        help="the base network: resnet101 (the reference), resnet50 (faster), resnet152 "
        "(larger), or tiny (a few thousand weights, for tests and quick demos; --weights none)",
    )
    parser.add_argument(
        "--weights",
        default=DEFAULTS.weights,
        help="initial weights of the base: imagenet (downloaded once), none (random; "
        "what to use offline), or a path to the backbone's no-top weights file",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        default=DEFAULTS.image_size,
        help="side in pixels images are resized to (CIFAKE is 32; 32 and up)",
    )


def _add_schedule_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the batch size, the number of epochs and the learning-rate schedule."""
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULTS.batch_size, help="images per training step"
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=DEFAULTS.epochs,
        help="most epochs to train; the stopping callbacks usually end training earlier",
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=DEFAULTS.learning_rate,
        help="Adam's initial learning rate",
    )
    parser.add_argument(
        "--end-learning-rate",
        type=float,
        default=DEFAULTS.end_learning_rate,
        help="learning rate reached at the last planned step (polynomial decay)",
    )
    parser.add_argument(
        "--decay-power",
        type=float,
        default=DEFAULTS.decay_power,
        help="power of the polynomial decay",
    )
    parser.add_argument(
        "--warmup-fraction",
        type=float,
        default=DEFAULTS.warmup_fraction,
        help="fraction of the planned steps over which the learning rate first rises linearly "
        "from near 0 (the polynomial decay then runs over the rest)",
    )


def _add_head_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the dense layer of the classification head."""
    parser.add_argument(
        "--dense-units",
        type=int,
        default=DEFAULTS.dense_units,
        help="width of the ReLU dense layer in the head",
    )
    parser.add_argument(
        "--l2", type=float, default=DEFAULTS.l2, help="L2 regularization factor of that layer"
    )


def _add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the random seed and how many images per class are used."""
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="random seed")
    parser.add_argument(
        "--limit-per-class",
        type=int,
        default=DEFAULTS.limit_per_class,
        help="use at most N images per class and split, for quick runs (default: all)",
    )


def _add_initialization_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for which weights train and how the residual branches start."""
    parser.add_argument(
        "--freeze-base",
        action="store_true",
        help="keep the base fixed and train only the head (feature extraction)",
    )
    parser.add_argument(
        "--zero-init-residual",
        action="store_true",
        help="start the last batch-norm scale of every residual branch at zero, so each block "
        "begins as the identity (with --weights none only)",
    )


def _add_regularization_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the training augmentation, label smoothing, weight decay and weight averaging."""
    parser.add_argument(
        "--augment",
        nargs="?",
        const="flip-shift",
        default=DEFAULTS.augment,
        type=augmentation_names,
        help="random transforms of training batches, comma-separated: flip (horizontal mirror "
        "images, pixel values kept) or flip-shift (also shifts of up to 10%%, resampled), and "
        "crop (whole-pixel shifts: padded with 4 black pixels, cropped back), and jpeg "
        "(re-encoding at quality 30-100), blur (Gaussian, sigma 0-3) and downscale (to 12-32 px "
        "and back, nearest, bilinear, bicubic or area), each image with its own probability "
        "written after a colon or else --robustness-probability; e.g. "
        "flip,crop,jpeg:0.3,blur:0.3,downscale:0.3; alone: flip-shift",
    )
    parser.add_argument(
        "--robustness-probability",
        type=float,
        default=DEFAULTS.robustness_probability,
        help="chance that --augment jpeg re-encodes a training image, and apart from it that "
        "--augment blur blurs one",
    )
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=DEFAULTS.label_smoothing,
        help="move the training targets from 0 and 1 towards each other by half this value",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=DEFAULTS.weight_decay,
        help="decoupled weight decay (AdamW): each step shrinks every kernel by learning rate x "
        "this; 0 is plain Adam",
    )
    parser.add_argument(
        "--ema-momentum",
        type=float,
        default=DEFAULTS.ema_momentum,
        help="keep an exponential moving average of the weights with this momentum (e.g. 0.999) "
        "and validate, keep and save the average, its batch-norm statistics re-estimated; "
        "0 turns it off",
    )


def _add_validation_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for how validation scores images and when it stops training."""
    parser.add_argument(
        "--test-time-flip",
        action="store_true",
        help="score validation (threshold choice) and test with the mean P(Fake) of each image "
        "and its mirror image, and have the model card ask evaluation and the app to do the same "
        "(changes no training step, so a --resume may add it)",
    )
    parser.add_argument(
        "--grace-epochs",
        type=int,
        default=DEFAULTS.grace_epochs,
        help="epochs before training may stop because validation loss exceeds training loss",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=DEFAULTS.patience,
        help="early stopping: epochs without a lower validation loss before stopping",
    )
    parser.add_argument(
        "--bn-batches",
        type=int,
        default=DEFAULTS.bn_batches,
        help="training batches used to re-estimate batch-norm statistics before every "
        "validation (0 turns it off)",
    )


def _add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the optimizer kernel, the distribution strategy and the output."""
    parser.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_false",
        help="use Keras's stock Adam update instead of the fused kernel used by default on CPU "
        "(the same mathematics; the saved model is plain Keras either way)",
    )
    parser.add_argument(
        "--strategy",
        choices=("auto", "default", "mirrored"),
        default=DEFAULTS.strategy,
        help="tf.distribute strategy: auto uses mirrored when several GPUs are visible",
    )
    parser.add_argument(
        "--progress-seconds",
        type=float,
        default=DEFAULTS.progress_seconds,
        help="when output is not a terminal, print a progress line this often during an epoch",
    )
    add_quiet_argument(parser)
    add_verbose_argument(parser)


def build_parser() -> argparse.ArgumentParser:
    """The training flags, grouped by topic; each default is the TrainingConfig field it fills."""
    parser = argparse.ArgumentParser(
        description="Train the ResNet101 real-or-AI-generated image classifier.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    _add_file_flags(parser)
    _add_model_flags(parser)
    _add_schedule_flags(parser)
    _add_head_flags(parser)
    _add_sampling_flags(parser)
    _add_initialization_flags(parser)
    _add_regularization_flags(parser)
    _add_validation_flags(parser)
    _add_runtime_flags(parser)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse the flags, with a --recipe's values as the defaults that explicit flags override."""
    known, _ = parser.parse_known_args(argv)
    if known.recipe:
        parser.set_defaults(**RECIPES[known.recipe])
    return parser.parse_args(argv)


@report_errors
def main(argv=None) -> int:
    parser = build_parser()
    args = parse_arguments(parser, argv)
    require_at_least_one(parser, args, "batch_size", "epochs", "dense_units", "limit_per_class")
    if args.image_size < 32:
        parser.error("--image-size must be at least 32 (ResNet101's smallest input)")
    if min(args.grace_epochs, args.patience, args.bn_batches) < 0:
        parser.error("--grace-epochs, --patience and --bn-batches cannot be negative")
    if args.learning_rate <= 0 or args.end_learning_rate < 0:
        parser.error("learning rates must be positive")
    if not 0 <= args.warmup_fraction < 1:
        parser.error("--warmup-fraction must be at least 0 and below 1")
    if args.zero_init_residual and args.weights != "none":
        parser.error("--zero-init-residual needs --weights none (it would erase loaded weights)")
    if args.progress_seconds <= 0:
        parser.error("--progress-seconds must be positive")
    if not 0.0 <= args.label_smoothing < 1.0 or args.weight_decay < 0:
        parser.error("--label-smoothing must be in [0, 1) and --weight-decay not negative")
    if not 0.0 <= args.ema_momentum < 1.0:
        parser.error("--ema-momentum must be at least 0 and below 1")
    if not 0.0 <= args.robustness_probability <= 1.0:
        parser.error("--robustness-probability must be between 0 and 1")
    if args.seed % (2**31 - 1) == 0:
        # TensorFlow cannot combine a global seed of 0 with the per-epoch shuffle's tensor seed.
        parser.error("--seed must not be 0 (or a multiple of 2**31 - 1)")

    from realfake.training.run import train  # imports TensorFlow, so only after the usage checks

    result = train(TrainingConfig.from_mapping(args))
    test = result["test_metrics"]
    print(
        f"trained {result['epochs_run']:,} epochs on {result['train_images']:,} images in "
        f"{result['training_seconds']:,.0f} s ({result['images_per_second']:,.1f} images/s); "
        f"test accuracy {test['accuracy']:.4f}, F1 (Fake) {test['f1']:.4f}, AUC {test['auc']:.4f} "
        f"on {test['images']:,} images; model: {args.model_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
