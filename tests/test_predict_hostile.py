"""Batch prediction under hostile input: special files among the images, names that are not
UTF-8 or hold line breaks, spreadsheet formulas, two runs on one output, parts of different runs
merged, closed pipes and full disks."""

# ruff: noqa: F811  (the fixtures imported from test_predict are test parameters here)

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import make_tree
from test_predict import PROJECT, classifier, loaded, read_rows  # noqa: F401  (fixtures)

import predict
from realfake.core.fileops import NotRegularFile, read_regular_file
from realfake.inference import batch_decoding, batch_output


def run_predict(argv: list[str], capsys) -> tuple[int, str, str]:
    code = predict.main([*argv, "--quiet"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda path: os.mkfifo(path), "a named pipe, not a regular file"),
        (lambda path: path.symlink_to("/dev/zero"), "a character device, not a regular file"),
    ],
    ids=["fifo", "link-to-dev-zero"],
)
def test_special_files_named_like_images_get_an_error_row_without_being_read(
    make, message, classifier, loaded, tmp_path, capsys
):
    folder = make_tree(tmp_path / "photos", {"a": 2})
    special = folder / "a" / "special.png"
    make(special)
    # Should a reader open the pipe and wait, a writer that closes at once ends the wait, so a
    # regression fails this test instead of hanging it.
    if special.is_fifo():
        unblock = threading.Timer(60, lambda: os.close(os.open(special, os.O_WRONLY)))
        unblock.start()
    output = tmp_path / "scores.csv"
    code, out, _ = run_predict(
        [str(folder), "--model", str(classifier.path), "--output", str(output)], capsys
    )
    if special.is_fifo():
        unblock.cancel()
    assert code == 0
    rows = {Path(row["path"]).name: row for row in read_rows(output)}
    assert rows["special.png"]["error"] == f"cannot read: {message}"
    assert rows["special.png"]["probability_fake"] == ""
    assert "predicted 2 of 3 images" in out and "1 could not be decoded" in out


def test_an_input_file_over_the_size_limit_is_refused_before_it_is_read_whole(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(2000))
    with pytest.raises(NotRegularFile, match="larger than 1,000 bytes"):
        read_regular_file(path, limit=1000)
    assert read_regular_file(path, limit=2008) == path.read_bytes()


@pytest.mark.parametrize("output_format", ["csv", "jsonl"])
def test_a_name_that_is_not_utf8_is_written_in_backslash_form(
    output_format, classifier, loaded, tmp_path, capsys
):
    from conftest import write_image

    folder = make_tree(tmp_path / "photos", {"a": 1})
    odd = Path(os.fsdecode(bytes(folder / "a")) + os.fsdecode(b"/caf\xe9.png"))
    write_image(odd, seed=3)
    output = tmp_path / f"scores.{output_format}"
    argv = [str(folder), "--model", str(classifier.path), "--output", str(output)]
    for _ in range(2):  # and again over the finished output
        code, out, err = run_predict(argv, capsys)
        assert code == 0, err
        assert "predicted 2 of 2 images" in out
    paths = [row["path"] for row in batch_output.read_output(output)[2]]
    assert paths == [f"{folder}/a/caf\\xe9.png", f"{folder}/a/img_0000.jpg"]


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(
    classifier, loaded, tmp_path, capsys
):
    folder = make_tree(tmp_path / "photos", {"a": 120, "b": 120}, seed=5)
    output = tmp_path / "scores.csv"
    argv = [str(folder), "--model", str(classifier.path), "--output", str(output)]
    first = subprocess.Popen(
        [sys.executable, str(PROJECT / "predict.py"), *argv, "--batch-size", "4", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        partial = batch_output.partial_path(output)
        deadline = time.monotonic() + 240
        while first.poll() is None and time.monotonic() < deadline:
            if partial.exists() and partial.read_bytes().count(b"\n") >= 2:
                break  # the first run has written rows
            time.sleep(0.01)
        code, _, err = run_predict(argv, capsys)
        assert first.poll() is None, "the first run ended before the second started"
        out, first_err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert code == 1
    assert err == (
        f"error: another run is writing {output} (it holds {partial}): wait for it to end, "
        "or give another --output\n"
    )
    assert first.returncode == 0, first_err
    assert "predicted 240 of 240 images" in out
    paths = [row["path"] for row in read_rows(output)]
    assert len(paths) == len(set(paths)) == 240
    assert not partial.exists()


def shards(folder: Path, model: Path, tmp_path: Path, count: int, name: str = "part") -> list:
    parts = []
    for index in range(count):
        part = tmp_path / f"{name}{index}.csv"
        argv = [str(folder), "--model", str(model), "--shard", f"{index}/{count}"]
        assert predict.main([*argv, "--output", str(part), "--quiet"]) == 0
        parts.append(part)
    return parts


def test_merge_refuses_parts_scored_under_different_thresholds(
    classifier, loaded, tmp_path, capsys
):
    from realfake.inference.modelcard import load_card, save_card

    other = tmp_path / "other" / classifier.path.name
    other.parent.mkdir()
    shutil.copy(classifier.path, other)
    save_card(other, {**load_card(classifier.path), "threshold": 0.25})
    loaded[other] = dataclasses.replace(classifier, path=other, threshold=0.25)
    folder = make_tree(tmp_path / "photos", {"a": 6, "b": 6})
    first = shards(folder, classifier.path, tmp_path, 2)[0]
    second = shards(folder, other, tmp_path, 2, name="other")[1]
    capsys.readouterr()
    merged = tmp_path / "merged.csv"
    code, _, err = run_predict(["--merge", str(merged), str(first), str(second)], capsys)
    assert code == 1
    assert err == (
        f"error: {first} and {second} were made with different settings (threshold): merge only "
        "parts scored by one model with one command\n"
    )
    assert not merged.exists()


def test_merge_refuses_a_missing_shard_unless_allowed(classifier, loaded, tmp_path, capsys):
    folder = make_tree(tmp_path / "photos", {"a": 6, "b": 6})
    parts = shards(folder, classifier.path, tmp_path, 3)
    capsys.readouterr()
    merged = tmp_path / "merged.csv"
    given = [str(parts[0]), str(parts[2])]
    code, _, err = run_predict(["--merge", str(merged), *given], capsys)
    assert code == 1
    assert err == (
        "error: missing shard 1/3: merge all 3 parts, or add --allow-partial to merge only these\n"
    )
    assert not merged.exists()
    code, out, _ = run_predict(["--merge", str(merged), *given, "--allow-partial"], capsys)
    assert code == 0
    expected = len(read_rows(parts[0])) + len(read_rows(parts[2]))
    assert f"merged 2 parts: {expected} rows" in out and len(read_rows(merged)) == expected


def test_an_output_that_names_an_input_image_is_refused(classifier, loaded, tmp_path, capsys):
    folder = make_tree(tmp_path / "photos", {"a": 2})
    image = folder / "a" / "img_0000.jpg"
    before = image.read_bytes()
    argv = [str(folder), "--model", str(classifier.path), "--output", str(image)]
    code, _, err = run_predict(argv, capsys)
    assert code == 1
    assert err == (
        f"error: --output {image} is {image}, one of the files this run reads: give another "
        "output file\n"
    )
    assert image.read_bytes() == before
    assert not list(image.parent.glob(".img_0000.jpg*"))


def test_a_linked_folder_inside_a_path_is_skipped_and_counted_with_its_reason(
    classifier, loaded, tmp_path, capsys
):
    folder = make_tree(tmp_path / "photos", {"a": 2})
    elsewhere = make_tree(tmp_path / "elsewhere", {"b": 3})
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    output = tmp_path / "scores.csv"
    argv = [str(folder), "--model", str(classifier.path), "--output", str(output)]
    code, out, _ = run_predict(argv, capsys)
    assert code == 0
    assert out.startswith("predicted 2 of 2 images (")  # the verdicts of an untrained model vary
    assert out.endswith(
        f"; skipped 1 folder: {folder}/linked (a link to a folder, not followed) -> {output}\n"
    )


def without_root_file_access(command: list[str]) -> list[str]:
    """`command` run so that file permissions hold for it: as root, without the capabilities
    that let root read any folder (dropped from the bounding set by util-linux's setpriv)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no folder is unreadable to this test")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]


def test_an_unreadable_folder_is_skipped_and_counted_with_its_reason(saved_model, tmp_path):
    folder = make_tree(tmp_path / "photos", {"a": 2, "locked": 3})
    (folder / "locked").chmod(0)
    command = [sys.executable, str(PROJECT / "predict.py"), str(folder), "--model"]
    try:
        result = subprocess.run(
            without_root_file_access([*command, str(saved_model), "--no-provenance", "--quiet"]),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        (folder / "locked").chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert result.stderr.endswith(
        f"; skipped 1 folder: {folder}/locked (cannot read: Permission denied)\n"
    )
    assert result.stderr.startswith("predicted 2 of 2 images")
    assert [line.split(",")[0] for line in result.stdout.splitlines()[1:]] == [
        f"{folder}/a/img_0000.jpg",
        f"{folder}/a/img_0001.jpg",
    ]


def interrupted_then_resumed(argv: list[str], stop_at: Path, monkeypatch, capsys) -> str:
    """Run predict.py stopped by Ctrl-C when it comes to decode `stop_at`, then run it again;
    return the second run's summary."""
    real_decode = batch_decoding.decode_file

    def interrupted(file, image_size, extras):
        if file.path == stop_at:
            raise KeyboardInterrupt
        return real_decode(file, image_size, extras)

    monkeypatch.setattr(batch_decoding, "decode_file", interrupted)
    assert predict.main([*argv, "--quiet"]) == 130
    monkeypatch.setattr(batch_decoding, "decode_file", real_decode)
    capsys.readouterr()
    code, out, err = run_predict(argv, capsys)
    assert code == 0, err
    return out


@pytest.mark.parametrize("output_format", ["csv", "jsonl"])
def test_names_holding_line_breaks_round_trip_through_resume_and_merge(
    output_format, classifier, loaded, tmp_path, monkeypatch, capsys
):
    from conftest import write_image

    folder = tmp_path / "photos"
    names = ["a\nb.png", "c\rd.png", "e\u2028f.png", "g\r\nh.png", "i.png", "j.png"]
    for seed, name in enumerate(names):
        write_image(folder / name, seed=seed)
    output = tmp_path / f"scores.{output_format}"
    argv = [str(folder), "--model", str(classifier.path), "--output", str(output)]
    argv += ["--batch-size", "2"]
    assert run_predict(argv, capsys)[0] == 0
    uninterrupted = output.read_bytes()
    assert [row["path"] for row in batch_output.read_output(output)[2]] == [
        f"{folder}/{name}" for name in names
    ]
    output.unlink()

    out = interrupted_then_resumed(argv, folder / "j.png", monkeypatch, capsys)
    assert "continuing after 4 rows already written" in out
    assert output.read_bytes() == uninterrupted

    parts = []
    for index in range(2):
        part = tmp_path / f"part{index}.{output_format}"
        shard = [str(folder), "--model", str(classifier.path), "--shard", f"{index}/2"]
        assert run_predict([*shard, "--batch-size", "2", "--output", str(part)], capsys)[0] == 0
        parts.append(str(part))
    merged = tmp_path / f"merged.{output_format}"
    code, _, err = run_predict(["--merge", str(merged), *parts], capsys)
    assert code == 0, err
    assert merged.read_bytes() == uninterrupted


def png_with_software(path: Path, software: str) -> Path:
    """A small PNG whose tEXt Software chunk holds `software`."""
    from conftest import write_image
    from PIL import Image, PngImagePlugin

    write_image(path, seed=11)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", software)
    with Image.open(path) as image:
        image.load()
        image.save(path, pnginfo=info)
    return path


FORMULA = '=HYPERLINK("http://example.com/x","Midjourney")'
FORMULA_NAMES = ["'=quoted.png", "'plain.png", "+1.png", "-1.png", "=1+1.png", "@SUM.png"]


@pytest.mark.parametrize("output_format", ["csv", "jsonl"])
def test_formula_like_cells_are_neutralised_in_csv_and_read_back_exactly(
    output_format, classifier, loaded, tmp_path, monkeypatch, capsys
):
    from conftest import write_image

    folder = tmp_path / "photos"
    for seed, name in enumerate(FORMULA_NAMES):
        write_image(folder / name, seed=seed)
    write_image(folder / "\tTab.png", seed=9)
    png_with_software(folder / "made.png", FORMULA)
    monkeypatch.chdir(folder)
    output = tmp_path / f"scores.{output_format}"
    argv = [".", "--model", str(classifier.path), "--output", str(output), "--batch-size", "2"]
    assert run_predict(argv, capsys)[0] == 0
    uninterrupted = output.read_bytes()
    names = sorted(["\tTab.png", *FORMULA_NAMES, "made.png"])
    if output_format == "csv":
        cells = {row["path"]: row for row in read_rows(output)}
        assert sorted(cells) == sorted(
            [f"'{name}" if name[0] in "=+-@\t" or name[1] == "=" else name for name in names]
        )
        assert cells["made.png"]["generator"] == f"'{FORMULA}"
    else:
        assert '{"path": "=1+1.png",' in uninterrupted.decode()  # JSONL keeps the text as it is
    rows = batch_output.read_output(output)[2]
    assert [row["path"] for row in rows] == names
    assert rows[names.index("made.png")]["generator"] == FORMULA
    output.unlink()

    out = interrupted_then_resumed(argv, Path(names[6]), monkeypatch, capsys)
    assert "continuing after 6 rows already written" in out
    assert output.read_bytes() == uninterrupted

    parts = []
    for index in range(2):
        part = tmp_path / f"part{index}.{output_format}"
        shard = [".", "--model", str(classifier.path), "--shard", f"{index}/2"]
        assert run_predict([*shard, "--batch-size", "2", "--output", str(part)], capsys)[0] == 0
        parts.append(str(part))
    merged = tmp_path / f"merged.{output_format}"
    code, _, err = run_predict(["--merge", str(merged), *parts], capsys)
    assert code == 0, err
    assert merged.read_bytes() == uninterrupted


def predict_process(argv: list[str], **options) -> subprocess.Popen:
    """predict.py started in its own process, its error stream captured."""
    command = [sys.executable, str(PROJECT / "predict.py"), *argv, "--quiet"]
    return subprocess.Popen(command, stderr=subprocess.PIPE, text=True, **options)


def test_a_closed_pipe_ends_the_run_quietly(saved_model, tmp_path):
    folder = make_tree(tmp_path / "photos", {"a": 4})
    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone before the first row, as `| head -0` leaves
    process = predict_process([str(folder), "--model", str(saved_model)], stdout=writer)
    os.close(writer)
    _, err = process.communicate(timeout=300)
    assert (process.returncode, err) == (141, "")


def test_a_full_standard_output_is_one_line(saved_model, tmp_path):
    folder = make_tree(tmp_path / "photos", {"a": 4})
    with open("/dev/full", "w") as full:
        process = predict_process([str(folder), "--model", str(saved_model)], stdout=full)
        _, err = process.communicate(timeout=300)
    assert (process.returncode, err) == (1, "error: cannot write: No space left on device\n")


def test_a_full_disk_stops_in_one_line_and_the_same_command_continues(
    classifier, loaded, tmp_path, capsys
):
    import resource

    folder = make_tree(tmp_path / "photos", {"a": 30})
    whole = tmp_path / "whole.csv"
    argv = [str(folder), "--model", str(classifier.path), "--batch-size", "2"]
    assert run_predict([*argv, "--output", str(whole)], capsys)[0] == 0
    output = tmp_path / "scores.csv"
    limit = whole.stat().st_size // 2  # room for the run's settings and half of its rows
    process = predict_process(
        [*argv, "--output", str(output)],
        stdout=subprocess.PIPE,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    _, err = process.communicate(timeout=300)
    partial = batch_output.partial_path(output)
    assert (process.returncode, err) == (
        1,
        f"error: cannot write the rows of {output}: File too large; those written so far stay "
        f"in {partial}: make room and run the same command again to continue\n",
    )
    assert 0 < partial.stat().st_size <= limit
    code, out, _ = run_predict([*argv, "--output", str(output)], capsys)
    assert code == 0 and "continuing after " in out
    assert output.read_bytes() == whole.read_bytes()


def test_merge_refuses_a_shard_record_that_gives_a_key_twice(classifier, loaded, tmp_path, capsys):
    folder = make_tree(tmp_path / "photos", {"a": 4})
    parts = shards(folder, classifier.path, tmp_path, 2)
    record = batch_output.shard_record_path(parts[1])
    text = record.read_text(encoding="utf-8")
    record.write_text(text.replace("{", '{\n  "threshold": 0.01,', 1), encoding="utf-8")
    capsys.readouterr()
    merged = tmp_path / "merged.csv"
    code, _, err = run_predict(["--merge", str(merged), *map(str, parts)], capsys)
    assert (code, err) == (
        1,
        f'error: {parts[1]}\'s record {record.name} gives the key "threshold" twice: it was not '
        "written by predict.py\n",
    )
    assert not merged.exists()


@contextlib.contextmanager
def named_pipe(path: Path):
    """A named pipe at `path`. Should a reader open it and wait, a writer that closes at once
    (after 15 s) ends the wait, so a regression fails its test instead of hanging it."""
    os.mkfifo(path)
    unblock = threading.Timer(15, lambda: os.close(os.open(path, os.O_WRONLY)))
    unblock.start()
    try:
        yield path
    finally:
        unblock.cancel()


def test_a_sample_submission_that_is_a_named_pipe_is_refused_without_blocking(
    classifier, loaded, tmp_path, capsys
):
    folder = make_tree(tmp_path / "photos", {"a": 2})
    with named_pipe(tmp_path / "sample.csv") as sample:
        argv = [str(folder), "--model", str(classifier.path), "--submission", str(sample)]
        code, _, err = run_predict([*argv, "--output", str(tmp_path / "submission.csv")], capsys)
    assert (code, err) == (
        1,
        f"error: cannot read the sample submission {sample}: a named pipe, not a regular file\n",
    )


def test_a_model_card_that_is_a_named_pipe_is_refused_without_blocking(
    saved_model, tmp_path, capsys
):
    from realfake.inference.modelcard import card_path

    model = tmp_path / "model.h5"
    shutil.copy(saved_model, model)
    folder = make_tree(tmp_path / "photos", {"a": 2})
    with named_pipe(card_path(model)) as card:
        code, _, err = run_predict([str(folder), "--model", str(model)], capsys)
    assert (code, err) == (
        1,
        f"error: cannot read the model card {card}: a named pipe, not a regular file\n",
    )


def test_the_decode_check_says_a_named_pipe_is_no_image_without_blocking(tmp_path):
    from realfake.core.images import is_decodable

    with named_pipe(tmp_path / "x.jpg") as pipe:
        started = time.monotonic()
        assert not is_decodable(pipe)
        assert time.monotonic() - started < 10


@pytest.mark.parametrize("before_the_pixels", [True, False], ids=["before", "after"])
def test_a_text_chunk_past_pillows_limit_keeps_the_probability_in_predict(
    before_the_pixels, classifier, loaded, tmp_path, capsys
):
    from test_app_hostile import png_with_text_bomb

    data, plain = png_with_text_bomb(before_the_pixels)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(data)
    (folder / "plain.png").write_bytes(plain)
    output = tmp_path / "scores.csv"
    code, out, _ = run_predict(
        [str(folder), "--model", str(classifier.path), "--output", str(output)], capsys
    )
    assert code == 0 and "predicted 2 of 2 images" in out
    bomb, same = read_rows(output)
    assert bomb["error"] == ""
    assert bomb["probability_fake"] == same["probability_fake"] != ""
