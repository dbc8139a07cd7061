"""Delete folders inside the project's data folder, and clean a split layout.

Reads:  PATH ... (folders or files to delete); with --corrupt DIR or --duplicates DIR, the image
        files in DIR/{train,validation,test}/<class folder>/ (or DIR/<class folder>/).
Writes: nothing; it deletes. Without --yes it only lists what it would delete (and, on a
        terminal, asks); --dry-run never deletes.

Refused, before anything is deleted: paths outside the data folder (--data-root, default data,
relative to the current folder), the data folder itself, the raw extracted data (data/raw)
unless --include-raw is given, and links that lead out of the data folder; also any file a
clean-up would remove that lies, once links are resolved, outside the data folder or in data/raw,
and a data folder that is the file system's root or holds the home folder, the current folder or
the project. A link is removed as a link, never followed.

--corrupt removes image files that do not decode. --duplicates removes byte-identical copies:
of each set one stays, the one in test if any, else in validation, else the first by path; so
test never changes, and no image is in two splits. Copies within test stay unless
--include-test. Running either again after an interruption removes exactly the rest.

Example:
    python data_deleter.py --duplicates data --yes
    python data_deleter.py data/interim data/augmented_train --yes
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

from realfake.core.cli import add_quiet_argument, progress, report_errors, stage_parser
from realfake.core.config import DATA_DIR
from realfake.core.errors import PipelineError
from realfake.data.cleaning import (
    DeletionBoundary,
    DuplicatePlan,
    LayoutFile,
    count_files,
    delete_path,
    find_corrupt,
    plan_duplicates,
)


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(
        __doc__,
        description="Delete folders inside the data folder; remove undecodable or duplicate "
        "images from a split layout.",
    )
    parser.add_argument(
        "paths", type=Path, nargs="*", metavar="PATH", help="folders or files to delete"
    )
    parser.add_argument(
        "--corrupt",
        type=Path,
        metavar="DIR",
        help="remove image files that do not decode from the split layout in DIR (default: off)",
    )
    parser.add_argument(
        "--duplicates",
        type=Path,
        metavar="DIR",
        help="remove byte-identical copies from the split layout in DIR (default: off)",
    )
    parser.add_argument(
        "--include-test",
        action="store_true",
        help="with --duplicates, also remove copies within test (default: test never changes)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=DATA_DIR,
        help="the project's data folder; nothing outside it is deleted (default: %(default)s)",
    )
    parser.add_argument(
        "--include-raw",
        action="store_true",
        help="allow deleting the raw extracted data under DATA_ROOT/raw (default: refused)",
    )
    parser.add_argument(
        "--yes",
        action="store_true",
        help="delete without asking (default: list, then ask on a terminal)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="only list what would be deleted, never delete"
    )
    add_quiet_argument(parser)
    return parser


def confirmed(args: argparse.Namespace, what: str) -> bool:
    """Whether to delete now: with --yes, or when a person at a terminal says so."""
    if args.dry_run:
        return False
    if args.yes:
        return True
    if sys.stdin.isatty() and sys.stdout.isatty():
        answer = input(f"delete {what}? [y/N] ")
        return answer.strip().lower() in ("y", "yes")
    return False


def remove_files(paths: list[Path], args: argparse.Namespace, what: str) -> tuple[str, int]:
    """Remove `paths` if confirmed; return the verb for the summary and how many it concerns."""
    if not paths:
        return "removed", 0
    if not confirmed(args, f"{len(paths):,} {what}"):
        return "would remove", len(paths)
    removed = 0
    for path in progress(paths, total=len(paths), description="removing", quiet=args.quiet):
        if path.exists():  # gone already when an interrupted run is finished
            path.unlink()
            removed += 1
    return "removed", removed


def per_folder(counts: Counter) -> str:
    return ", ".join(f"{label} {count:,}" for label, count in sorted(counts.items())) or "none"


def remove_corrupt(
    args: argparse.Namespace, corrupt: list[LayoutFile], list_each: bool, hint: str
) -> None:
    """--corrupt: list the undecodable files, remove them when confirmed, print the count."""
    for item in corrupt if list_each else []:
        print(f"undecodable: {item.path}")
    verb, count = remove_files([item.path for item in corrupt], args, "undecodable files")
    labels = Counter(item.label for item in corrupt)
    print(
        f"corrupt: {verb} {count:,} undecodable files from {args.corrupt} "
        f"({per_folder(labels)}){hint if verb != 'removed' else ''}"
    )


def remove_duplicates(
    args: argparse.Namespace, plan: DuplicatePlan, list_each: bool, hint: str
) -> None:
    """--duplicates: list each extra copy beside the file kept, remove the copies when confirmed."""
    for copy, kept in plan.remove if list_each else []:
        print(f"duplicate: {copy.path} (same bytes as {kept.path})")
    copies = [copy.path for copy, _ in plan.remove]
    verb, count = remove_files(copies, args, "duplicate files")
    summary = (
        f"duplicates: {verb} {count:,} files from {args.duplicates} "
        f"({per_folder(plan.removed_per_folder())}); {plan.groups:,} sets of identical files"
    )
    if plan.left_in_test:
        summary += (
            f"; {plan.left_in_test:,} sets within test left as they are "
            "(--include-test removes those too)"
        )
    print(summary + (hint if verb != "removed" else ""))


def delete_paths(args: argparse.Namespace, hint: str) -> None:
    """PATHs: list each with its file count, delete them whole when confirmed."""
    existing = []
    for path in args.paths:
        if path.exists() or path.is_symlink():
            existing.append(path)
        else:
            print(f"not found, nothing to delete: {path}")
    if existing:
        sizes = [count_files(path) for path in existing]
        for path, size in zip(existing, sizes, strict=True):
            print(f"delete: {path} ({size:,} files)")
        if confirmed(args, f"{len(existing):,} path(s) with {sum(sizes):,} files"):
            deleted = sum(delete_path(path, quiet=args.quiet) for path in existing)
            print(f"delete: removed {len(existing):,} path(s), {deleted:,} files")
        else:
            print(f"delete: would remove {len(existing):,} path(s), {sum(sizes):,} files{hint}")


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.paths and args.corrupt is None and args.duplicates is None:
        parser.error("give PATH(s) to delete, --corrupt DIR or --duplicates DIR")
    if args.yes and args.dry_run:
        parser.error("--yes and --dry-run contradict each other")
    if args.include_test and args.duplicates is None:
        parser.error("--include-test only applies to --duplicates")

    # Every target, and every file a clean-up would remove, is checked before anything is deleted.
    boundary = DeletionBoundary(args.data_root, allow_raw=args.include_raw)
    for folder in (args.corrupt, args.duplicates):
        if folder is not None:
            boundary.check(folder, allow_root=True)
            if not folder.is_dir():
                raise PipelineError(f"{folder} is not a folder")
    for path in args.paths:
        boundary.check(path)
    corrupt = find_corrupt(args.corrupt, quiet=args.quiet) if args.corrupt is not None else []
    plan = (
        plan_duplicates(args.duplicates, include_test=args.include_test, quiet=args.quiet)
        if args.duplicates is not None
        else None
    )
    copies = [copy.path for copy, _ in plan.remove] if plan is not None else []
    for path in [item.path for item in corrupt] + copies:
        boundary.check_removal(path)
    hint = "" if args.dry_run or args.yes else "; add --yes to delete"
    # Each file is listed so that it can be read before deleting; --yes --quiet wants the count.
    list_each = not (args.yes and args.quiet)

    if args.corrupt is not None:
        remove_corrupt(args, corrupt, list_each, hint)
    if plan is not None:
        remove_duplicates(args, plan, list_each, hint)
    delete_paths(args, hint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
