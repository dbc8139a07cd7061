"""Batch prediction: P(Fake) for every image under some paths, one row per image, streamed to a
CSV or JSONL file that survives interruption, split across machines by a stable hash, and turned
into a competition submission.

Scoring goes through the inference contract (`realfake.inference.classifier.Classifier`); this
module runs the steps that its neighbours hold: finding and sharding files (`batch_files`),
decoding them ahead of the model (`batch_decoding`), building and writing rows (`rows`), the
resumable output and the merge of shards (`batch_output`) and the submission (`submission`).
Rows come in the order of their path strings, so shard outputs merge back by path into exactly
the rows of one run.

Example:
    config = PredictConfig(("photos/",), model=Path("models/m.h5"), output=Path("scores.csv"))
    print(predict(config).line())
"""

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from realfake.core.config import INFERENCE_BATCH_SIZE
from realfake.core.errors import NO_ROOM, PipelineError
from realfake.inference.batch_decoding import Decoded, decoded_batches, provenance_columns
from realfake.inference.batch_files import find_images, path_text, select_shard
from realfake.inference.batch_output import (
    continue_partial,
    finish_output,
    locked_partial,
    partial_path,
    write_settings,
    write_shard_record,
)
from realfake.inference.batch_summary import Summary, Tally
from realfake.inference.rows import build_row, format_for, header_text, row_columns, rows_text
from realfake.inference.submission import match_sample, read_sample, submission_text


@dataclass(frozen=True)
class PredictConfig:
    """One batch prediction run."""

    paths: tuple[str, ...]
    model: Path
    output: Path | None = None
    output_format: str | None = None
    batch_size: int = INFERENCE_BATCH_SIZE
    shard: tuple[int, int] | None = None
    submission: Path | None = None
    provenance: bool = True
    trust_anchors: Path | None = None
    decode_threads: int = 2
    quiet: bool = False


def predict(config: PredictConfig, classifier=None, stdout=None) -> Summary:
    """Score every image under the config's paths and write the rows (or the submission made
    from them) to its output, or to `stdout` (default sys.stdout) without one.

    With an output file, rows go to a hidden partial file renamed into place at the end; a run
    killed at any moment continues from it when started again with the same settings. A second
    run on the same output while the first works is refused.
    """
    if config.output is None:
        return _predict(config, classifier, stdout)
    config.output.parent.mkdir(parents=True, exist_ok=True)
    with locked_partial(config.output):
        try:
            return _predict(config, classifier, stdout)
        except OSError as error:
            if error.errno not in NO_ROOM:
                raise
            raise PipelineError(
                f"cannot write the rows of {config.output}: {error.strerror}; those written so "
                f"far stay in {partial_path(config.output)}: make room and run the same command "
                "again to continue"
            ) from None


def _predict(config: PredictConfig, classifier, stdout) -> Summary:
    from realfake.core.progress import progress

    stdout = stdout if stdout is not None else sys.stdout
    output_format = format_for(config.output, config.output_format)
    files, skipped, folders_skipped = find_images(config.paths)
    if config.output is not None and config.output.exists():
        _refuse_output_among_inputs(config.output, [file.path for file in files], config.submission)
    files = select_shard(files, config.shard)
    sample = matched = None
    if config.submission is not None:
        sample = read_sample(config.submission)
        matched = match_sample(sample, files, config.submission)
    if classifier is None:
        from realfake.inference.classifier import load_classifier

        classifier = load_classifier(config.model)
    extras = [provenance_columns(_trust_anchors(config.trust_anchors))] if config.provenance else []
    columns = row_columns(extras)
    tally = Tally(answers={} if sample is not None else None)
    settings = (
        _run_settings(config, classifier, output_format, columns, extras)
        if config.output is not None
        else None
    )
    partial, done = _begin_rows(config, settings, files, columns, output_format, tally, stdout)
    if partial is None and sample is None:
        stdout.write(header_text(columns, output_format))

    remaining = files[done:]
    batches = decoded_batches(
        remaining, classifier.image_size, config.batch_size, extras, config.decode_threads
    )
    rows = (row for batch in scored_rows(classifier, batches, config.batch_size) for row in batch)
    rows = progress(rows, total=len(remaining), description="predict", quiet=config.quiet)
    with _row_writer(partial, stdout, keep_rows=sample is None) as writer:
        _write_rows(rows, writer, tally, columns, output_format, config.batch_size)

    summary = Summary(
        tally,
        len(files),
        skipped,
        done,
        config.shard,
        config.output,
        folders_skipped=folders_skipped,
    )
    text = None
    if sample is not None:
        text = submission_text(sample, matched, tally.answers)
        summary.submission_rows = len(sample.rows)
    if config.output is not None:
        if config.shard is not None:
            write_shard_record(config.output, settings, len(files))
        finish_output(partial_path(config.output), config.output, text)
    elif text is not None:
        stdout.write(text)
        stdout.flush()
    return summary


def _write_rows(rows, writer, tally, columns, output_format, batch_size: int) -> None:
    """Count each row and write the rows one batch at a time: a kill leaves whole lines, at
    worst one torn last line."""
    pending: list[dict] = []
    for row in rows:
        pending.append(row)
        tally.add(row)
        if len(pending) == batch_size:
            writer.write(rows_text(pending, columns, output_format))
            writer.flush()
            pending = []
    writer.write(rows_text(pending, columns, output_format))
    writer.flush()


def _begin_rows(config, settings, files, columns, output_format, tally, stdout):
    """(partial file, rows already done): with an output file, the partial file continued after
    the rows a killed run wrote (counted into `tally`), or started with the run's settings and
    the header; without one, (None, 0)."""
    if config.output is None:
        return None, 0
    continuation = continue_partial(
        config.output, settings, files, config.batch_size, output_format
    )
    if continuation.note:
        print(f"note: {continuation.note}", file=sys.stderr)
    partial = partial_path(config.output)
    if not continuation.rows:
        write_settings(config.output, settings)
        partial.write_text(header_text(columns, output_format), encoding="utf-8")
    for row in continuation.rows:
        tally.add(row)
    return partial, len(continuation.rows)


def _refuse_output_among_inputs(output: Path, inputs: list[Path], sample: Path | None) -> None:
    """PipelineError when the output file is one of the images to score or the sample
    submission: the run would overwrite what it reads."""
    target = os.stat(output)
    for path in [*inputs, *([sample] if sample is not None else [])]:
        try:
            status = os.stat(path)
        except OSError:
            continue
        if (status.st_dev, status.st_ino) == (target.st_dev, target.st_ino):
            raise PipelineError(
                f"--output {output} is {path_text(path)}, one of the files this run reads: "
                "give another output file"
            )


class _Discard:
    """Where rows go when only the submission made from them is wanted on standard output."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _row_writer(partial: Path | None, stdout, keep_rows: bool):
    """The partial file, appended to and synced to disk at the end; else standard output."""
    if partial is None:
        yield stdout if keep_rows else _Discard()
        return
    with open(partial, "a", encoding="utf-8", newline="") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def _trust_anchors(path: Path | None) -> str | None:
    if path is None:
        return None
    from realfake.inference.provenance import load_trust_anchors

    return load_trust_anchors(path)


def _run_settings(config, classifier, output_format, columns, extras) -> dict:
    """Everything that decides the rows: a partial output written under other settings is not
    continued."""
    from realfake.inference.modelcard import model_identity

    card = classifier.card
    model = (
        {key: card[key] for key in ("model_file", "model_bytes", "model_sha256")}
        if "model_sha256" in card
        else model_identity(classifier.path)
    )
    settings = {
        "paths": list(config.paths),
        "shard": list(config.shard) if config.shard else None,
        "format": output_format,
        "columns": list(columns),
        "batch_size": config.batch_size,
        "model": model,
        "image_size": classifier.image_size,
        "threshold": classifier.threshold,
        "uncertain_band": list(classifier.uncertain_band) if classifier.uncertain_band else None,
        "test_time_flip": classifier.test_time_flip,
    }
    for group in extras:
        settings.update(group.settings)
    return settings


def scored_rows(
    classifier, batches: Iterable[list[Decoded]], batch_size: int
) -> Iterator[list[dict]]:
    """Rows for each batch of decoded files.

    Every model batch is padded to `batch_size`: the math library picks its kernels by batch
    size, so a file scored in a short last batch (of a shard, or alone) could otherwise differ in
    its last bit from the same file scored in a full batch of one whole run.
    """
    for batch in batches:
        good = [decoded for decoded in batch if decoded.pixels is not None]
        predictions = iter(())
        if good:
            pixels = np.stack([decoded.pixels for decoded in good])
            if len(good) < batch_size:
                padding = np.zeros((batch_size - len(good), *pixels.shape[1:]), pixels.dtype)
                pixels = np.concatenate([pixels, padding])
            predictions = iter(classifier.predictions(pixels, batch_size)[: len(good)])
        yield [
            build_row(
                decoded,
                next(predictions) if decoded.pixels is not None else None,
                classifier.image_size,
            )
            for decoded in batch
        ]
