"""Fast by default: every entry point runs TensorFlow with oneDNN on unless the user said otherwise.

TensorFlow turns oneDNN on by itself only on CPUs with AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX;
on the others it must find TF_ENABLE_ONEDNN_OPTS=1 in the environment when it is imported. So
the tests check three things: each entry point imports `realfake` (which sets the variable)
before TensorFlow or Keras; in a fresh interpreter an entry point leaves the variable at 1 and
TensorFlow reports oneDNN on; and TensorFlow obeys the variable (an explicit 0 turns oneDNN off
even on this CPU, where its own default is on), so the 1 decides on CPUs where it would be off.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TENSORFLOW_MODULES = ("tensorflow", "keras")

# Runs an entry point's module-level code (its imports) without calling main, then imports
# TensorFlow as main would (scripts import it lazily) and reports TensorFlow's own oneDNN state.
PROBE = """
import json, os, runpy, sys
sys.path.insert(0, {root!r})
before = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
runpy.run_path({script!r}, run_name="entry_point_probe")
setting = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
from tensorflow.python.util import _pywrap_util_port
print(json.dumps({{
    "before": before,
    "setting": setting,
    "onednn": bool(_pywrap_util_port.IsMklEnabled()),
}}))
"""


def entry_points() -> list[Path]:
    """Top-level stage scripts and benchmark scripts."""
    return sorted(ROOT.glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))


def imported_modules(node: ast.AST) -> list[str]:
    """Top-level package names imported anywhere inside `node`, in source order."""
    names = []
    for child in ast.walk(node):
        if isinstance(child, ast.Import):
            names.extend(alias.name.split(".")[0] for alias in child.names)
        elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
            names.append(child.module.split(".")[0])
    return names


def imports_realfake_first(path: Path) -> bool | None:
    """True when the module imports realfake at module level before TensorFlow or Keras.

    None when the script never imports TensorFlow or Keras itself. Imports inside functions run
    after every module-level import, so only the module-level order decides.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if not any(name in TENSORFLOW_MODULES for name in imported_modules(tree)):
        return None
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        for name in imported_modules(statement):
            if name == "realfake":
                return True
            if name in TENSORFLOW_MODULES:
                return False
    return False  # TensorFlow only inside functions, and no module-level realfake import


@pytest.mark.parametrize("path", entry_points(), ids=lambda path: path.name)
def test_entry_point_imports_realfake_before_tensorflow(path):
    assert imports_realfake_first(path) is not False, (
        f"{path.name} imports TensorFlow or Keras before realfake: oneDNN stays off on CPUs "
        "without AVX512_VNNI/AVX512_BF16/AVX_VNNI/AMX"
    )


def probe(script: Path, onednn_setting: str | None) -> dict:
    """Import an entry point in a fresh interpreter with the given TF_ENABLE_ONEDNN_OPTS."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if onednn_setting is not None:
        environment["TF_ENABLE_ONEDNN_OPTS"] = onednn_setting
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
    completed = subprocess.run(
        [sys.executable, "-c", PROBE.format(root=str(ROOT), script=str(script))],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_training_entry_point_runs_with_onednn_on_by_default():
    script = ROOT / "model_training.py"
    if not script.is_file():
        pytest.skip("model_training.py not present")
    state = probe(script, None)
    assert state["before"] is None  # the variable came from the project, not the environment
    assert state["setting"] == "1"
    assert state["onednn"] is True


def test_bench_entry_point_runs_with_onednn_on_and_says_so():
    environment = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    environment["TF_CPP_MIN_LOG_LEVEL"] = "2"
    # Benchmarks find the package as installed (`pip install -e .`); here, on the path.
    environment["PYTHONPATH"] = str(ROOT)
    completed = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_training_speed.py"), "--describe"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in completed.stdout.strip().splitlines())
    assert lines["onednn"] == "True"
    assert lines["TF_ENABLE_ONEDNN_OPTS"] == "1"


def test_explicit_zero_is_respected_and_turns_onednn_off():
    state = probe(ROOT / "model_training.py", "0")
    assert state["setting"] == "0"
    assert state["onednn"] is False
