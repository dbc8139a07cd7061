"""Shared fixtures: tiny generated images and folder trees, and one tiny classifier for the
session; nothing here reads real datasets."""

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_image(path: Path, seed: int, size: int = 32, image_format: str | None = None) -> Path:
    """Write a small random RGB image (JPEG or PNG by extension) and return its path."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=image_format)
    return path


def make_tree(root: Path, counts: dict[str, int], extension: str = ".jpg", seed: int = 0) -> Path:
    """Create `root/<relative folder>/img_<k><extension>` for each folder and count given."""
    for offset, (folder, count) in enumerate(sorted(counts.items())):
        for index in range(count):
            write_image(
                root / folder / f"img_{index:04d}{extension}",
                seed * 100_003 + offset * 10_007 + index,
            )
    return root


def mirror(images: np.ndarray) -> np.ndarray:
    """A batch of (n, height, width, channels) images flipped left to right, made independently
    of the project's own flip (which happens inside the compiled forward pass)."""
    return np.ascontiguousarray(np.asarray(images)[:, :, ::-1])


def count_files(folder: Path, pattern: str) -> int:
    """Files under `folder` matching `pattern`, 0 once a running stage has renamed it away."""
    try:
        return sum(1 for _ in folder.rglob(pattern))
    except FileNotFoundError:  # a stage finished and moved its staging folder meanwhile
        return 0


def kill_when_staged(process: subprocess.Popen, staging: Path, files: int) -> None:
    """SIGKILL a running stage once its staging folder holds `files` JPEGs (or it ends, or 30 s
    pass), and reap it."""
    deadline = time.monotonic() + 30
    while process.poll() is None and time.monotonic() < deadline:
        if count_files(staging, "*.jpg") >= files:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _process_status(pid: int) -> tuple[str, int] | None:
    """(state, parent id) of a running process from /proc, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], int(fields[1])


def child_processes(pid: int) -> set[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            status = _process_status(int(entry.name))
            if status is not None and status[1] == pid:
                children.add(int(entry.name))
    return children


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (dead, waiting to be reaped)."""
    status = _process_status(pid)
    return status is not None and status[0] not in ("Z", "X")


def kill_stage_leaving_workers(
    command: list[str], cwd: Path, workers: int, busy: Callable[[], bool] = lambda: True
) -> set[int]:
    """Start a stage, SIGKILL it (it alone) once it runs `workers` child processes and `busy()`
    says they are at work, and return the ids of those that still run 5 s later; any such
    orphan is then killed too."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    children: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while process.poll() is None and time.monotonic() < deadline:
            children = child_processes(process.pid)
            if len(children) >= workers and busy():
                break
            time.sleep(0.005)
        assert len(children) >= workers, "the stage ended before it started its workers"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(map(is_running, children)):
        time.sleep(0.05)
    survivors = {pid for pid in children if is_running(pid)}
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return survivors


def interrupt_stage(
    command: list[str], cwd: Path, workers: int, busy: Callable[[], bool] = lambda: True
) -> subprocess.CompletedProcess:
    """Start a stage in a session of its own and, once it runs `workers` child processes and
    `busy()` holds, send SIGINT to all of it, as Ctrl-C at a terminal does; return its result."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job inherits SIGINT ignored, and Python then keeps ignoring it:
        # give the stage the disposition it has when started from a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if len(child_processes(process.pid)) >= workers and busy():
            break
        time.sleep(0.005)
    time.sleep(0.2)  # a person's Ctrl-C comes while the workers work, not as they are forked
    try:
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> bytes), to compare trees exactly."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# What the session collected, before -m or -k deselect anything: the test modules, and the tests
# marked slow (tests/test_suite.py holds the suite to its limit of slow tests).
COLLECTED_MODULES = pytest.StashKey[set[Path]]()
SLOW_TESTS = pytest.StashKey[list[str]]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    config.stash[COLLECTED_MODULES] = {Path(item.path) for item in items}
    config.stash[SLOW_TESTS] = [item.nodeid for item in items if item.get_closest_marker("slow")]


@pytest.fixture
def image_tree(tmp_path):
    """A factory for class-folder trees of small random images under tmp_path."""

    def factory(counts: dict[str, int], name: str = "tree", **kwargs) -> Path:
        return make_tree(tmp_path / name, counts, **kwargs)

    return factory


@pytest.fixture
def cifake_sample_archive() -> Path:
    """The real CIFAKE sample archive, or a skip where it is not available."""
    path = os.environ.get("CIFAKE_SAMPLE_ARCHIVE")
    if not path or not Path(path).is_file():
        pytest.skip("CIFAKE_SAMPLE_ARCHIVE not set or missing")
    return Path(path)


# The session's classifier: the tiny backbone (a few thousand weights) with the specified head.
# Only tests whose subject is the ResNet101 itself build that one, and they are marked slow.
TINY_BACKBONE = "tiny"
TINY_DENSE_UNITS = 16
LABELLED_COUNTS = {"train": 8, "validation": 6, "test": 6}


def labelled_split_tree(root: Path, counts: dict[str, int] = LABELLED_COUNTS, seed: int = 0):
    """root/{train,validation,test}/{Fake,Real} of small random JPEGs, `counts[split]` per class."""
    return make_tree(
        root,
        {f"{split}/{cls}": n for split, n in counts.items() for cls in ("Fake", "Real")},
        seed=seed,
    )


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory) -> Path:
    """The tiny classifier, untrained, saved as .h5 with the card an untrained model gets
    (threshold 0.5, no metrics), made once per test session."""
    from realfake.evaluation.benchmarking import save_untrained_classifier

    return save_untrained_classifier(
        tmp_path_factory.mktemp("model") / "classifier.h5",
        dense_units=TINY_DENSE_UNITS,
        backbone=TINY_BACKBONE,
    )


@pytest.fixture(scope="session")
def labelled_tree(tmp_path_factory) -> Path:
    """A tiny labelled tree, data/{train,validation,test}/{Fake,Real}, made once per session."""
    return labelled_split_tree(tmp_path_factory.mktemp("labelled") / "data")


@pytest.fixture(scope="session")
def trained_model(labelled_tree, tmp_path_factory) -> Path:
    """The tiny classifier trained for one epoch on `labelled_tree` by model_training.py: the
    model and the full card training writes (threshold, band, metrics), made once per session."""
    import model_training

    root = tmp_path_factory.mktemp("trained")
    model_path = root / "model.h5"
    argv = [
        "--data", str(labelled_tree), "--backbone", TINY_BACKBONE, "--weights", "none",
        "--epochs", "1", "--batch-size", "4", "--dense-units", str(TINY_DENSE_UNITS),
        "--model", str(model_path), "--metrics-dir", str(root / "metrics"),
        "--checkpoint-dir", str(root / "checkpoint"), "--quiet",
    ]  # fmt: skip
    assert model_training.main(argv) == 0
    return model_path


@pytest.fixture(scope="session")
def app(saved_model):
    """The Flask app serving `saved_model`, created (and its model loaded) once per session."""
    from realfake.app.webapp import create_app

    return create_app({"MODEL_PATH": str(saved_model)})


@pytest.fixture
def client(app):
    """A Flask test client for the session's app."""
    return app.test_client()


# Signed files for the provenance tests of the reader and of the app: one throwaway signer and
# one pair of signed images per test module.
@pytest.fixture(scope="module")
def signer():
    from provenance_fixtures import make_signer

    return make_signer()


@pytest.fixture(scope="module")
def pixels():
    from provenance_fixtures import random_pixels

    return random_pixels(seed=7)


@pytest.fixture(scope="module")
def signed(signer, pixels):
    """JPEG and PNG signed with a manifest declaring generative AI, by image format."""
    from provenance_fixtures import MIME_TYPES, encode_as_editor, manifest, sign

    definition = manifest(
        "trainedAlgorithmicMedia", tool="Example Image Service", agent="Example Diffusion"
    )
    return {
        image_format: sign(encode_as_editor(pixels, image_format), mime, definition, signer)
        for image_format, mime in MIME_TYPES.items()
    }
