"""Time unzip + split + merge of a CIFAKE archive beside `unzip` + `cp -al` of the same tree.

Reads:  ARCHIVE (default: $CIFAKE_ARCHIVE), a CIFAKE-layout zip such as
        ../shared/datasets/cifake-train-split.zip; skips (exit 0) when it is absent.
Writes: nothing that stays: both runs work in one temporary folder under --workdir, deleted at
        the end. Prints a Markdown table of wall-clock seconds. With --verify it also checks the
        merged tree: counts per split and class, every output byte-identical to a raw image,
        each raw image exactly once, and the raw tree unchanged.

Example:
    .venv/bin/python bench/bench_data_stages.py ../shared/datasets/cifake-train-split.zip --verify
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from realfake.core.config import CLASS_NAMES, SPLITS
from realfake.core.fileops import file_digest
from realfake.core.images import is_image_name

ROOT = Path(__file__).resolve().parent.parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "archive",
        type=Path,
        nargs="?",
        default=os.environ.get("CIFAKE_ARCHIVE"),
        help="CIFAKE-layout zip (default: $CIFAKE_ARCHIVE)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()),
        help=f"where the temporary folder goes (default: {tempfile.gettempdir()})",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds, alternating which runs first (default: 1)"
    )
    parser.add_argument(
        "--verify", action="store_true", help="check the merged tree in the first round"
    )
    return parser


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def baseline(archive: Path, work: Path) -> dict[str, float]:
    work.mkdir()
    times = {"unzip": timed(["unzip", "-q", str(archive), "-d", "raw"], work)}
    times["cp -al"] = timed(["cp", "-al", "raw", "copy"], work)
    return times


def digests(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): file_digest(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and is_image_name(path)
    }


def pipeline(archive: Path, work: Path, verify: bool) -> dict[str, float]:
    work.mkdir()
    python = sys.executable
    times = {
        "data_unzipper.py": timed(
            [python, str(ROOT / "data_unzipper.py"), str(archive), "--dest", "data/raw/cifake"]
            + ["--quiet"],
            work,
        )
    }
    raw_before = digests(work / "data" / "raw") if verify else {}
    times["data_split_d2.py"] = timed([python, str(ROOT / "data_split_d2.py"), "--quiet"], work)
    times["data_merger.py"] = timed([python, str(ROOT / "data_merger.py"), "--quiet"], work)
    start = time.perf_counter()
    for script in ("data_split_d2.py", "data_merger.py"):
        subprocess.run(
            [python, str(ROOT / script), "--quiet"],
            cwd=work,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    subprocess.run(
        [python, str(ROOT / "data_unzipper.py"), str(archive), "--dest", "data/raw/cifake"]
        + ["--quiet"],
        cwd=work,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    times["re-run of all three (nothing to do)"] = time.perf_counter() - start
    if verify:
        check(work / "data", raw_before)
    return times


def check(data: Path, raw_before: dict[str, str]) -> None:
    """Print the acceptance checks of the merged tree; raise if one fails."""
    counts = {
        split: {name: len(list((data / split / name).iterdir())) for name in CLASS_NAMES}
        for split in SPLITS
    }
    print(f"merged counts: {counts}")
    merged = Counter(digest for split in SPLITS for digest in digests(data / split).values())
    raw = Counter(raw_before.values())
    raw_after = digests(data / "raw")
    print(f"raw unchanged: {raw_after == raw_before} ({len(raw_after):,} files)")
    print(f"outputs byte-identical to raw, each raw image exactly once: {merged == raw}")
    if raw_after != raw_before or merged != raw:
        raise SystemExit("verification failed")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.archive is None or not Path(args.archive).is_file():
        print(f"skipped: archive not found ({args.archive}); pass one or set CIFAKE_ARCHIVE")
        return 0
    if shutil.which("unzip") is None:
        print("skipped: the unzip program is not installed")
        return 0
    archive = Path(args.archive).resolve()
    rounds = []
    temporary = Path(tempfile.mkdtemp(prefix="realfake-bench-", dir=args.workdir))
    try:
        for round_index in range(args.repeat):
            order = ("baseline", "pipeline") if round_index % 2 == 0 else ("pipeline", "baseline")
            result = {}
            for kind in order:
                work = temporary / f"{kind}-{round_index}"
                if kind == "baseline":
                    result[kind] = baseline(archive, work)
                else:
                    result[kind] = pipeline(archive, work, args.verify and round_index == 0)
                shutil.rmtree(work)
            rounds.append(result)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)

    print(f"\n{archive.name}, {os.cpu_count()} CPUs, wall-clock seconds per round\n")
    print("| step | " + " | ".join(f"round {i + 1}" for i in range(len(rounds))) + " |")
    print("|---|" + "---:|" * len(rounds))
    for kind, label in (("baseline", "`unzip` + `cp -al`"), ("pipeline", "realfake stages")):
        for step in rounds[0][kind]:
            cells = " | ".join(f"{r[kind][step]:.1f}" for r in rounds)
            print(f"| {step} | {cells} |")
        totals = [sum(v for k, v in r[kind].items() if not k.startswith("re-run")) for r in rounds]
        print(f"| **{label} total** | " + " | ".join(f"**{t:.1f}**" for t in totals) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
