"""Score unlabelled images with a saved classifier: one row per image, P(Fake) under the model card.

Reads image files, folders (recursed, hidden folders left out) and glob patterns, and the model
(.h5) with its card beside it (image size, threshold, uncertain band, test-time flip). Writes one
row per image, in path order: path, probability_fake, label at the card's threshold, verdict
("Uncertain" inside the card's band), the original width and height, an error for a file that
does not decode (never a made-up probability), and the provenance the file's own metadata
declares (source of evidence, declared origin, generator, signature). CSV by default, JSONL with
--format jsonl; standard output without --output.

With --output, rows go to a hidden partial file beside it, renamed into place at the end: run the
same command again after an interruption (even kill -9) and it continues where it stopped.
--shard K/N scores a stable 1/N of the files on each of N machines; --merge joins their outputs
into exactly the rows of one run. --submission fills a competition's sample submission.

Example:
    python predict.py data/raw/fake_or_real/test/images --output predictions.csv
"""

import argparse
import sys
from pathlib import Path

import realfake  # noqa: F401  (sets TensorFlow's environment before it is imported)
from realfake.core import config
from realfake.core.cli import (
    add_quiet_argument,
    add_verbose_argument,
    report_errors,
    require_at_least_one,
)

EPILOG = """examples:
  python predict.py photos/ --output scores.csv
  python predict.py 'scraped/**/*.jpg' --format jsonl --output scores.jsonl
  python predict.py test/images --submission test/sample_submission.csv --output submission.csv
  python predict.py photos/ --shard 0/4 --output part0.csv    # on each of 4 machines, K = 0..3
  python predict.py --merge scores.csv part0.csv part1.csv part2.csv part3.csv
"""


def _add_input_output_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for what is scored, by which model, and where and how the rows are written."""
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="image files, folders (recursed) or glob patterns; with --merge, the shard outputs",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=config.MODEL_PATH,
        help=f"saved model (default: {config.MODEL_PATH})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="file for the rows, written when complete (default: standard output)",
    )
    parser.add_argument(
        "--format",
        choices=("csv", "jsonl"),
        default=None,
        help="row format (default: jsonl for an --output ending in .jsonl, else csv; "
        "with --merge, the parts' format)",
    )


def _add_shard_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for the batch size and for scoring in shards and joining their outputs."""
    parser.add_argument(
        "--batch-size",
        type=int,
        default=config.INFERENCE_BATCH_SIZE,
        help="images per model batch; the last is padded to this size, so a file is scored by "
        "the same kernels in a whole run, a shard or a continued run (default: %(default)s)",
    )
    parser.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="score only shard K of N (K from 0), chosen by a hash of each file's path relative "
        "to its PATH, so every machine agrees (default: all files)",
    )
    parser.add_argument(
        "--merge",
        type=Path,
        default=None,
        metavar="OUT",
        help="join the shard outputs given as PATHs into OUT ('-' for standard output), "
        "exactly the rows of one run (default: score images)",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="with --merge, join the shards given even if some of the N are missing "
        "(default: refuse, naming the missing shards)",
    )


def _add_content_flags(parser: argparse.ArgumentParser) -> None:
    """Flags for what is written: a submission instead of rows, and the provenance columns."""
    parser.add_argument(
        "--submission",
        type=Path,
        default=None,
        metavar="SAMPLE.csv",
        help="write the sample submission's columns and rows with the answer filled in (1 "
        "AI-generated, 0 real; 'Uncertain' falls back to the label) instead of the rows; ids "
        "without an image are refused (default: write the rows)",
    )
    parser.add_argument(
        "--trust-anchors",
        type=Path,
        default=None,
        metavar="PEM",
        help="certificates whose content-credential signers count as trusted "
        "(default: signatures checked, signers not judged)",
    )
    parser.add_argument(
        "--no-provenance",
        action="store_true",
        help="leave out the provenance columns (default: read them from each file's bytes)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_input_output_flags(parser)
    _add_shard_flags(parser)
    _add_content_flags(parser)
    add_quiet_argument(parser)
    add_verbose_argument(parser)
    return parser


@report_errors
def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    require_at_least_one(parser, args, "batch_size")
    if not args.paths:
        parser.error("give at least one PATH (with --merge, the shard outputs)")
    if args.no_provenance and args.trust_anchors is not None:
        parser.error("--trust-anchors needs the provenance columns: drop --no-provenance")
    for option, path in (("--output", args.output), ("--merge", args.merge)):
        if path is not None and path.is_dir():
            parser.error(f"{option} {path} is a folder: give a file name")
    shard = None
    if args.shard is not None:
        from realfake.inference.batch_files import parse_shard

        try:
            shard = parse_shard(args.shard)
        except ValueError as error:
            parser.error(str(error))
        if args.submission is not None:
            parser.error("--submission needs every image: write it with --merge after the shards")

    from realfake.inference import batch, batch_output

    if args.allow_partial and args.merge is None:
        parser.error("--allow-partial goes with --merge")
    if args.merge is not None:
        if shard is not None:
            parser.error("--merge joins finished shards: it takes no --shard")
        output = None if str(args.merge) == "-" else args.merge
        summary = batch_output.merge(
            args.paths, output, args.format, args.submission, allow_partial=args.allow_partial
        )
    else:
        run = batch.PredictConfig(
            paths=tuple(args.paths),
            model=args.model,
            output=args.output,
            output_format=args.format,
            batch_size=args.batch_size,
            shard=shard,
            submission=args.submission,
            provenance=not args.no_provenance,
            trust_anchors=args.trust_anchors,
            quiet=args.quiet,
        )
        summary = batch.predict(run)
    # Rows on standard output keep it for themselves; the summary goes beside them.
    print(summary.line(), file=sys.stdout if summary.output else sys.stderr)
    sys.stdout.flush()  # here, where a closed pipe or a full disk is reported in one line
    return 0


if __name__ == "__main__":
    sys.exit(main())
