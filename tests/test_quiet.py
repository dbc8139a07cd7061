"""TensorFlow's start-up lines are hidden by default, shown with --verbose; other lines pass."""

import os
import subprocess
import sys
from pathlib import Path

import realfake

PROJECT = Path(__file__).resolve().parent.parent
IMPORT_AND_RUN = (
    "import realfake, tensorflow as tf; print(tf.reduce_sum(tf.ones((2, 2))).numpy(), flush=True)"
)


def _run(*arguments: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-c", IMPORT_AND_RUN, *arguments],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_tensorflow_starts_silently_by_default_and_speaks_with_verbose():
    quiet = _run()
    assert quiet.returncode == 0 and quiet.stdout.strip() == "4.0"
    assert quiet.stderr == ""
    verbose = _run("--verbose")
    assert verbose.returncode == 0 and verbose.stdout.strip() == "4.0"
    assert verbose.stderr.strip() != ""  # the lines the default hides


class _WritesToStandardError:
    """A stand-in loader that writes start-up noise and one real line to file descriptor 2."""

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        os.write(2, b"I0000 123 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"W0000 456 something.cc:9] a real problem worth seeing\n")


def test_only_known_start_up_lines_are_filtered(capfd):
    loader = realfake._FilteredLoader(_WritesToStandardError())
    loader.exec_module(None)
    err = capfd.readouterr().err
    assert err == "W0000 456 something.cc:9] a real problem worth seeing\n"


HELP_WITHOUT_TENSORFLOW = (
    "import re, runpy, sys\n"
    "sys.argv = [sys.argv[1], '--help']\n"
    "try:\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
    "except SystemExit as stop:\n"
    "    assert stop.code in (0, None), stop.code\n"
    "print('TENSORFLOW LOADED' if 'tensorflow' in sys.modules else 'no tensorflow')\n"
)


def test_evaluation_help_has_an_example_states_defaults_once_and_loads_no_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", HELP_WITHOUT_TENSORFLOW, "evaluate_model.py"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.rstrip().endswith("no tensorflow")
    assert "Example:" in out and "--robustness-per-class 500" in out
    assert "(default: None)" not in out and out.count("(default:") == len(
        [line for line in out.splitlines() if "(default:" in line]
    )
