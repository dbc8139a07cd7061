"""The project installs as a package: a wheel holds `realfake` with its page templates and static
files, and none of the top-level stage scripts."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_package_its_templates_and_static_files(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    # Built from a copy, so the build leaves nothing (build/, *.egg-info) in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "realfake", source / "realfake", ignore=shutil.ignore_patterns("__pycache__")
    )
    # The page and its assets as the web app keeps them inside the package.
    for folder, name in (("templates", "index.html"), ("static", "style.css")):
        (source / "realfake" / "app" / folder).mkdir(exist_ok=True)
        (source / "realfake" / "app" / folder / name).write_text("<!-- packaged -->\n")
    shutil.copy2(REPO / "model_training.py", source / "model_training.py")

    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if completed.returncode != 0 and "No module named" in completed.stderr:
        pytest.skip(f"build backend unavailable: {completed.stderr.strip().splitlines()[-1]}")
    assert completed.returncode == 0, completed.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("realfake-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())

    expected = {
        path.relative_to(source).as_posix()
        for path in (source / "realfake").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert {
        "realfake/__init__.py",
        "realfake/training/run.py",
        "realfake/inference/classifier.py",
    } <= expected
    assert {"realfake/app/templates/index.html", "realfake/app/static/style.css"} <= expected
    assert expected <= names, sorted(expected - names)
    assert not {name for name in names if not name.startswith("realfake")}  # no scripts, tests
    metadata = next(name for name in names if name.endswith("METADATA"))
    requires = [
        line for line in zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
        if line.startswith("Requires-Dist:")
    ]  # fmt: skip
    assert any(line.startswith("Requires-Dist: tensorflow") for line in requires)
    assert any("pytest" in line and 'extra == "dev"' in line for line in requires)
