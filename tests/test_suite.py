"""The suite's own rules: tests get the tiny classifier by passing it in, never by swapping the
library's model for a fake, and at most six tests build the reference ResNet101 (marked slow)."""

import re
import subprocess
import sys
from pathlib import Path

from conftest import COLLECTED_MODULES, SLOW_TESTS

TESTS = Path(__file__).resolve().parent
MAX_SLOW_TESTS = 6

# Ways of replacing build_model or a keras.applications network, in code or in code held in a
# string that a test runs; this file is not scanned, as it names them.
PATCHES = [
    re.compile(r"\bsetattr\([^)]*\b(?:build_model|applications)\b"),
    re.compile(r"\bpatch(?:\.object)?\([^)]*\b(?:build_model|applications)\b"),
    re.compile(r"\bbuild_model\s*=(?!=)"),
    re.compile(r"\bapplications(?:\.\w+)+\s*=(?!=)"),
]


def patches_in(source: str) -> list[str]:
    """The lines of `source` that replace build_model or a keras.applications network."""
    return sorted(
        {
            source[: match.start()].count("\n") + 1
            for pattern in PATCHES
            for match in pattern.finditer(source)
        }
    )


def test_the_scan_finds_each_way_of_patching_the_model_and_passes_ordinary_use():
    patched = [
        'monkeypatch.setattr(realfake.model, "build_model", tiny_model)',
        'monkeypatch.setattr(\n    "realfake.model.build_model", tiny_model\n)',
        "setattr(keras.applications, 'ResNet101', tiny_resnet)",
        'with mock.patch("realfake.model.build_model", tiny):',
        "mock.patch.object(keras.applications, 'ResNet101')",
        "realfake.model.build_model = tiny_model",
        'RUNNER = """\nkeras.applications.ResNet101 = tiny_resnet\n"""',
        "keras.src.applications.resnet.ResNet101 = tiny_resnet",
    ]
    for source in patched:
        assert patches_in(source), source
    ordinary = [
        'model = build_model(image_size=32, backbone="tiny")',
        "base = keras.applications.ResNet101(include_top=False, weights=None)",
        'monkeypatch.setattr(keras.utils, "get_file", offline)',
        "assert build_model == realfake.model.build_model",
        "from realfake.model import build_model",
    ]
    for source in ordinary:
        assert patches_in(source) == [], source


def test_no_test_patches_build_model_or_keras_applications():
    """A test that needs a model passes --backbone tiny or backbone="tiny" instead."""
    offenders = {
        path.name: lines
        for path in sorted(TESTS.glob("*.py"))
        if path != Path(__file__).resolve()
        and (lines := patches_in(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def slow_tests(config) -> list[str]:
    """Every test of the suite marked slow: from this session's collection where it took in
    every test module, else from a collection of the whole suite in a subprocess."""
    modules = config.stash.get(COLLECTED_MODULES, set())
    if set(TESTS.glob("test_*.py")) <= modules:
        return config.stash[SLOW_TESTS]
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow",
         "-p", "no:cacheprovider", str(TESTS)],
        cwd=TESTS.parent, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-2000:] + collected.stderr[-2000:]
    return [line for line in collected.stdout.splitlines() if "::" in line]


def test_at_most_six_tests_build_the_reference_model(request):
    slow = slow_tests(request.config)
    assert slow, "no test of the reference ResNet101 found"
    assert len(slow) <= MAX_SLOW_TESTS, slow
