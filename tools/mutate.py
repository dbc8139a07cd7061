"""Mutation testing of the safety modules with mutmut, each module against its own fast tests.

Each module gets a working copy of the project under build/mutate/<module>/ with its own mutmut
configuration, so its results stay cached there: a re-run tests only the mutants of functions that
changed since. Prints one summary row per module and, with --summary, rewrites the table in
docs/mutation.md for the modules run (the other rows stay).

    python tools/mutate.py archive moving      # some modules; no names runs them all
"""

import argparse
import fnmatch
import json
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutate"
SUMMARY = ROOT / "docs" / "mutation.md"
TABLE_START = "<!-- mutation summary: start -->"
TABLE_END = "<!-- mutation summary: end -->"


@dataclass(frozen=True)
class Module:
    """A module under test: its file, the fast tests that guard it, and (optionally) only the
    functions whose mutants count, as mutmut mutant-name patterns."""

    source: str
    tests: tuple[str, ...]
    functions: tuple[str, ...] = ()


MODULES = {
    "archive": Module(
        "realfake/data/archive.py", ("tests/test_unzipper.py", "tests/test_zipper.py")
    ),
    "cleaning": Module("realfake/data/cleaning.py", ("tests/test_deleter.py",)),
    "moving": Module("realfake/data/moving.py", ("tests/test_move.py",)),
    "fileops": Module(
        "realfake/core/fileops.py",
        (
            "tests/test_fileops.py",
            "tests/test_foundation.py::test_staged_directory_appears_only_when_complete",
            "tests/test_move.py",
            "tests/test_unzipper.py",
        ),
    ),
    "metrics": Module(
        "realfake/evaluation/metrics.py",
        (
            "tests/test_evaluate.py::test_choose_threshold_separates_and_prefers_the_middle",
            "tests/test_evaluate.py::test_choose_threshold_is_the_best_candidate_nearest_one_half",
            "tests/test_evaluate.py::test_choose_threshold_is_not_pulled_to_the_majority_class",
            "tests/test_evaluate.py::test_choose_threshold_maximises_balanced_not_plain_accuracy",
            "tests/test_inference.py::test_uncertain_band_is_where_validation_answers_are_often_wrong",
            "tests/test_inference.py::test_uncertain_band_confident_mistakes_on_one_side_leave_the_other_sides_verdicts",
            "tests/test_inference.py::test_uncertain_band_runs_grow_with_the_validation_set_and_need_their_share_wrong",
            "tests/test_inference.py::test_uncertain_band_needs_a_whole_run_and_stays_within_probabilities",
            "tests/test_inference.py::test_the_threshold_itself_says_fake",
        ),
        functions=(
            "x_predicted_fake",
            "x_balanced_accuracy",
            "x_choose_threshold",
            "x_uncertain_band",
            "x_farthest_error_run",
        ),
    ),
    "modelcard": Module("realfake/inference/modelcard.py", ("tests/test_modelcard.py",)),
    "provenance": Module("realfake/inference/provenance.py", ("tests/test_provenance.py",)),
    "batch": Module(
        "realfake/inference/batch_files.py",
        ("tests/test_sharding.py",),
        functions=("x_parse_shard", "x_shard_of", "x_select_shard"),
    ),
}

# Tests that start the scripts in a subprocess run the unmutated code, and take tens of seconds.
PYTEST_ARGS = ("-m", "not slow", "-p", "no:cacheprovider", "-q", "-W", "ignore")


def prepare(name: str, module: Module) -> Path:
    """Copy the project's code and tests into the module's working folder and configure mutmut."""
    folder = WORK / name
    folder.mkdir(parents=True, exist_ok=True)
    for tree in ("realfake", "tests"):
        shutil.rmtree(folder / tree, ignore_errors=True)
        shutil.copytree(ROOT / tree, folder / tree, ignore=shutil.ignore_patterns("__pycache__"))
    scripts = sorted(path.name for path in ROOT.glob("*.py"))
    for script in [*scripts, "pyproject.toml"]:
        shutil.copy2(ROOT / script, folder / script)
    options = {
        "source_paths": ["realfake"],
        "only_mutate": [module.source],
        "also_copy": [*scripts, "tests/"],
        "pytest_add_cli_args": list(PYTEST_ARGS),
        "pytest_add_cli_args_test_selection": list(module.tests),
        # Every module's tests are free of TensorFlow, so each mutant's process is a plain fork.
        "process_isolation": "fork",
        "use_git_change_detection": "false",
    }
    lines = ["[mutmut]"]
    for key, values in options.items():
        if isinstance(values, str):
            lines.append(f"{key} = {values}")
        else:
            lines.append(f"{key} =" + "".join(f"\n    {value}" for value in values))
    (folder / "setup.cfg").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def patterns(module: Module) -> list[str]:
    """Mutant-name patterns for `mutmut run`: the module's chosen functions, or all of them."""
    dotted = module.source.removesuffix(".py").replace("/", ".")
    return [f"{dotted}.{function}__mutmut_*" for function in module.functions] or [f"{dotted}.*"]


def counts(folder: Path, module: Module) -> dict[str, int]:
    """Mutants per outcome (killed, survived, timeout, no tests ...), read from mutmut's records."""
    from mutmut.stats import status_by_exit_code

    meta = json.loads((folder / "mutants" / f"{module.source}.meta").read_text(encoding="utf-8"))
    dotted = module.source.removesuffix(".py").replace("/", ".")
    wanted = patterns(module)
    tally: dict[str, int] = {}
    for key, code in meta["exit_code_by_key"].items():
        if any(fnmatch.fnmatch(f"{dotted}.{key.split('.')[-1]}", p) for p in wanted):
            status = status_by_exit_code[code]
            tally[status] = tally.get(status, 0) + 1
    return tally


def survivors(folder: Path, *outcomes: str) -> list[str]:
    """The names of the mutants with one of `outcomes` (surviving ones by default), as
    `mutmut results` lists them."""
    listed = subprocess.run(
        [sys.executable, "-m", "mutmut", "results"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    wanted = outcomes or ("survived",)
    return [
        line.split(":")[0].strip()
        for line in listed.splitlines()
        if line.rpartition(":")[2].strip() in wanted
    ]


def run(name: str, module: Module, children: int) -> dict:
    folder = prepare(name, module)
    start = time.monotonic()
    # Survivors of the last run, and mutants no test reached, are tried again: new tests may
    # reach and kill them now.
    previous = survivors(folder, "survived", "no tests") if (folder / "mutants").is_dir() else []
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children)]
    # Named mutants are always re-run; without names, mutmut keeps the results of unchanged ones.
    names = patterns(module) if module.functions else []
    subprocess.run([*command, *names], cwd=folder, check=True)
    if previous and not module.functions:
        subprocess.run([*command, *previous], cwd=folder, check=True)
    seconds = time.monotonic() - start
    tally = counts(folder, module)
    row = {
        "module": name,
        "source": module.source,
        "tests": " ".join(module.tests),
        "mutants": sum(tally.values()),
        "killed": tally.get("killed", 0) + tally.get("timeout", 0),
        "survived": tally.get("survived", 0),
        "no tests": tally.get("no tests", 0),
        "other": sum(
            n for s, n in tally.items() if s not in ("killed", "timeout", "survived", "no tests")
        ),
        "seconds": round(seconds),
        "survivors": [
            s for s in survivors(folder) if any(fnmatch.fnmatch(s, p) for p in patterns(module))
        ],
    }
    (folder / "summary.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    return row


TABLE_HEADER = [
    "| module | file | mutants | killed | survived | no tests | time |",
    "|---|---|---:|---:|---:|---:|---:|",
]


def table_row(row: dict) -> str:
    minutes, seconds = divmod(row["seconds"], 60)
    return (
        f"| {row['module']} | `{row['source']}` | {row['mutants']:,} | {row['killed']:,} | "
        f"{row['survived']:,} | {row['no tests']:,} | {minutes}m {seconds:02d}s |"
    )


def write_summary(command: str, ran: list[str]) -> None:
    """Rewrite the table between the markers of docs/mutation.md: the modules in `ran` from this
    run, every other module's row as the table already had it (a fresh clone has no cache of
    the earlier runs, so their rows live only in the table)."""
    text = SUMMARY.read_text(encoding="utf-8")
    before, _, rest = text.partition(TABLE_START)
    table, _, after = rest.partition(TABLE_END)
    kept = {
        line.split("|")[1].strip(): line
        for line in table.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in MODULES
    }
    rows = [json.loads((WORK / name / "summary.json").read_text(encoding="utf-8")) for name in ran]
    kept.update((row["module"], table_row(row)) for row in rows)
    seconds = sum(row["seconds"] for row in rows)
    block = [
        TABLE_START,
        *TABLE_HEADER,
        *(kept[name] for name in MODULES if name in kept),
        "",
        f"Latest: {command}, on {_cpu()}, at nice 10, two mutants at a time; "
        f"{seconds // 60} min {seconds % 60:02d} s in all. The other rows are from the runs "
        "named above the table.",
        TABLE_END,
    ]
    SUMMARY.write_text(before + "\n".join(block) + after, encoding="utf-8")


def _cpu() -> str:
    try:
        listed = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "an unknown CPU"
    fields = dict(line.split(":", 1) for line in listed.splitlines() if ":" in line)
    model = fields.get("Model name", "an unknown CPU").strip()
    return f"{model}, {fields.get('CPU(s)', '?').strip()} CPUs"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "modules", nargs="*", help=f"modules to run (default: all of {', '.join(MODULES)})"
    )
    parser.add_argument(
        "--children", type=int, default=2, help="mutants tested at once (default: 2)"
    )
    parser.add_argument(
        "--summary", action="store_true", help="rewrite the table in docs/mutation.md"
    )
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="only rewrite the summary from each module's last run (with --summary)",
    )
    args = parser.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    for name in [] if args.no_run else args.modules or list(MODULES):
        row = run(name, MODULES[name], args.children)
        print(
            f"{name}: {row['mutants']:,} mutants, {row['killed']:,} killed, {row['survived']:,} "
            f"survived, {row['no tests']:,} without tests, {row['seconds']:,} s"
        )
        for survivor in row["survivors"]:
            print(f"  survived: {survivor}")
    if args.summary:
        names = args.modules or list(MODULES)
        ran = [name for name in names if (WORK / name / "summary.json").exists()]
        chosen = f" MODULES='{' '.join(args.modules)}'" if args.modules else ""
        write_summary(f"`make mutate{chosen}`", ran)
    return 0


if __name__ == "__main__":
    sys.exit(main())
