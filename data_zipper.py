"""Zip a folder, in a stable order, so that data_unzipper.py gives back the same tree.

Reads:  DIR, every file under it except hidden ones (names starting with a dot, such as the
        stages' stamps).
Writes: --output (default DIR.zip beside DIR); member names are relative to DIR, sorted, with a
        fixed date, so the same tree always gives the same bytes. The zip appears only once
        complete; an existing file is replaced only with --force.

Example:
    python data_zipper.py data/train --output data/train.zip
"""

import argparse
import sys
from pathlib import Path

from realfake.core.cli import add_quiet_argument, report_errors, stage_parser
from realfake.core.errors import PipelineError
from realfake.data.archive import write_zip


def build_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__doc__, description="Zip a folder in a stable order.")
    parser.add_argument("folder", type=Path, metavar="DIR", help="the folder to zip")
    parser.add_argument(
        "--output",
        type=Path,
        metavar="FILE.zip",
        help="the zip to write (default: DIR.zip beside DIR)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing output file (default: refuse)"
    )
    add_quiet_argument(parser)
    return parser


@report_errors
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    folder: Path = args.folder
    if not folder.is_dir():
        raise PipelineError(f"{folder} is not a folder")
    output: Path = args.output or folder.parent / f"{folder.resolve().name}.zip"
    if output.suffix.lower() != ".zip":
        parser.error(f"--output {output} should end in .zip")
    resolved_folder = folder.resolve()
    if resolved_folder in output.resolve().parents:
        parser.error(f"--output {output} is inside the folder being zipped")
    if output.exists() and not args.force:
        raise PipelineError(f"{output} already exists; add --force to replace it")
    if output.exists() and not output.is_file():
        raise PipelineError(f"{output} exists and is not a file")
    count = write_zip(folder, output, quiet=args.quiet)
    print(f"zip: wrote {count:,} files from {folder} to {output} ({output.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
