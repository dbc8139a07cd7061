"""One checkpoint per finished epoch, written and restored as one unit, so that a resumed run
continues exactly as the uninterrupted run would have.

A checkpoint is the folder `epoch-NNNN/` inside the checkpoint directory:
    model.weights.h5   the model's weights and the optimizer's state (its step count is the
                       learning-rate schedule's position)
    random.npz         the state of every random generator of the model (GaussianNoise, Dropout)
    best.npz           the weights of the epoch with the lowest validation loss so far
    state.json         the rest of `ResumeState`: settings, epoch, seconds, stopping state
Everything is written into a hidden `.epoch-NNNN.partial/` folder that is renamed into place
last, so a kill at any moment leaves either the previous checkpoint or the new one, complete.
"""

import contextlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from realfake.core.errors import PipelineError
from realfake.core.fileops import link_or_copy

FOLDER = re.compile(r"epoch-(\d{4,})")
WEIGHTS = "model.weights.h5"
RANDOM = "random.npz"
BEST = "best.npz"
STATE = "state.json"


@dataclass
class ResumeState:
    """Everything besides the model's own weights that a run needs to continue after `epoch`.

    `stop` and `early_stopping` are the stopping callbacks' `state()`; `best_weights` are the
    weights of the epoch with the lowest validation loss; `random` holds the random generators'
    states; `stopped` says a stopping rule ended the run after `epoch`.
    """

    settings: dict
    epoch: int
    seconds: float = 0.0
    stopped: bool = False
    stop: dict = field(default_factory=dict)
    early_stopping: dict = field(default_factory=dict)
    best_weights: list[np.ndarray] | None = field(default=None, repr=False)
    random: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def json_fields(self) -> dict:
        fields = asdict(self)
        del fields["best_weights"], fields["random"]
        fields["best_epoch"] = self.stop.get("best_epoch")
        return fields


def random_generator_states(model, create_global: bool = False) -> dict:
    """The state variables of the Keras random generators that training draws from, by name:
    each layer's own (GaussianNoise, Dropout, in layer order), and Keras's global one where it
    exists (or, with `create_global`, after creating it)."""
    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import global_seed_generator

    generators = [
        generator
        for layer in model._flatten_layers(include_self=True, recursive=True)
        for generator in getattr(layer, "_seed_generators", [])
    ]
    states = {f"layer_{index}": generator.state for index, generator in enumerate(generators)}
    if create_global:
        global_seed_generator()
    global_generator = global_state.get_global_attribute("global_seed_generator")
    if global_generator is not None:
        states["global"] = global_generator.state
    return states


def _folder_name(epoch: int) -> str:
    return f"epoch-{epoch + 1:04d}"


def checkpoint_folders(directory: Path) -> list[Path]:
    """The complete checkpoint folders in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [path for path in directory.iterdir() if FOLDER.fullmatch(path.name)]
    return sorted(found, key=lambda path: int(FOLDER.fullmatch(path.name).group(1)))


def save_checkpoint(directory: Path, model, state: ResumeState) -> Path:
    """Write the checkpoint of `state.epoch` and then drop the older ones; returns its folder."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / _folder_name(state.epoch)
    partial = directory / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    model.save_weights(partial / WEIGHTS)
    random_states = random_generator_states(model)
    np.savez(
        partial / RANDOM, **{name: np.asarray(var.numpy()) for name, var in random_states.items()}
    )
    if state.best_weights is not None:
        previous = checkpoint_folders(directory)
        reusable = previous and _best_epoch(previous[-1]) == state.stop.get("best_epoch")
        if reusable and (previous[-1] / BEST).is_file():
            link_or_copy(previous[-1] / BEST, partial / BEST)  # unchanged: no 170 MB rewrite
        else:
            np.savez(partial / BEST, *state.best_weights)
    (partial / STATE).write_text(json.dumps(state.json_fields(), indent=2) + "\n", encoding="utf-8")
    _sync(partial)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)  # the one step that makes the checkpoint exist
    for old in checkpoint_folders(directory):
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def _best_epoch(folder: Path):
    try:
        return json.loads((folder / STATE).read_text(encoding="utf-8")).get("best_epoch")
    except (OSError, ValueError):
        return None


def _sync(folder: Path) -> None:
    """Flush the folder's files to disk before the rename publishes them."""
    for path in folder.iterdir():
        with contextlib.suppress(OSError), open(path, "rb") as handle:
            os.fsync(handle.fileno())


def _load_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as archive:
        return [archive[f"arr_{index}"] for index in range(len(archive.files))]


def load_checkpoint(directory: Path) -> tuple[ResumeState, Path] | None:
    """The newest complete checkpoint in `directory` and its folder, or None."""
    directory = Path(directory)
    folders = checkpoint_folders(directory)
    if not folders:
        if (directory / STATE).is_file():
            raise PipelineError(
                f"the checkpoint in {directory} was written by an older version and cannot be "
                "resumed exactly; run without --resume"
            )
        return None
    folder = folders[-1]
    fields = json.loads((folder / STATE).read_text(encoding="utf-8"))
    fields.pop("best_epoch", None)
    state = ResumeState(**fields)
    if (folder / BEST).is_file():
        state.best_weights = _load_arrays(folder / BEST)
    with np.load(folder / RANDOM) as archive:
        state.random = {name: archive[name] for name in archive.files}
    return state, folder


def restore_model(model, folder: Path, state: ResumeState) -> None:
    """Load a checkpoint's weights, optimizer state and random generator states into a compiled
    model built with the run's settings."""
    model.optimizer.build(model.trainable_variables)
    model.load_weights(Path(folder) / WEIGHTS)
    variables = random_generator_states(model, create_global="global" in state.random)
    if set(variables) != set(state.random):
        raise PipelineError(
            f"the checkpoint in {folder} has {len(state.random)} random generator states, the "
            f"model {len(variables)}: run without --resume"
        )
    for name, value in state.random.items():
        variables[name].assign(value)


def clear_checkpoint(directory: Path) -> None:
    """Remove a checkpoint folder (a fresh run, or a finished one), and its parent if that is
    left empty (the default runs/training leaves no empty runs/ behind)."""
    directory = Path(directory)
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):  # not empty, or the working directory: leave it
        directory.parent.rmdir()
