"""Sharding of a batch run on its own, without a model: `--shard K/N` read and checked, each file
in exactly one shard, and the same shard for the same relative path on every machine."""

import os
from pathlib import Path

import pytest

from realfake.inference.batch_files import ImageFile, parse_shard, select_shard, shard_of

NAMES = [f"{label}/{index}.png" for label in ("Fake", "Real", "x/y") for index in range(40)]


def files_under(root: str) -> list[ImageFile]:
    return [ImageFile(Path(root) / name, name) for name in NAMES]


@pytest.mark.parametrize(
    ("text", "expected"), [("0/1", (0, 1)), ("0/4", (0, 4)), ("3/4", (3, 4)), ("12/100", (12, 100))]
)
def test_parse_shard_reads_k_of_n_counted_from_zero(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["half", "1", "1/2/3", "a/4", "1/b", "", "/", "1.0/4"])
def test_parse_shard_names_text_that_is_not_k_slash_n(text):
    with pytest.raises(ValueError) as raised:
        parse_shard(text)
    assert str(raised.value) == f"--shard must be K/N, such as 0/4, not {text!r}"
    assert raised.value.__suppress_context__  # one line for the user, not int()'s complaint


@pytest.mark.parametrize("text", ["4/4", "5/4", "-1/4", "0/0", "1/0", "0/-1", "-1/-2"])
def test_parse_shard_names_an_index_outside_zero_to_n(text):
    with pytest.raises(ValueError) as raised:
        parse_shard(text)
    assert str(raised.value) == f"--shard K/N needs 0 <= K < N, not {text!r}"


def test_shards_are_a_partition_of_the_files_in_their_order():
    files = files_under("data")
    for count in (1, 2, 3, 7):
        shards = [select_shard(files, (index, count)) for index in range(count)]
        assert sorted(file.relative for shard in shards for file in shard) == sorted(NAMES)
        assert all(shard for shard in shards)  # 120 files leave no shard of 7 empty
        for shard in shards:
            assert shard == [file for file in files if file in shard]  # the order kept
    assert select_shard(files, (0, 1)) == files


def test_no_shard_is_every_file_in_order():
    files = files_under("data")
    assert select_shard(iter(files), None) == files


def test_a_files_shard_depends_on_its_relative_path_alone():
    here, elsewhere = files_under("data"), files_under("/mnt/other/data")
    mine = select_shard(here, (1, 3))
    assert [file.relative for file in select_shard(elsewhere, (1, 3))] == [
        file.relative for file in mine
    ]
    # Neither the other files nor their order move a file to another shard.
    assert [file.relative for file in select_shard(reversed(here[::2]), (1, 3))] == [
        file.relative for file in reversed(mine) if NAMES.index(file.relative) % 2 == 0
    ]


def test_shard_of_is_the_same_in_every_version_and_process():
    # Parts written by different machines are merged into one run: if these numbers change, a
    # run that mixes versions skips some files and scores others twice.
    assert [shard_of("Fake/0.png", count) for count in (1, 2, 3, 4, 7, 1000)] == [
        0,
        1,
        1,
        3,
        0,
        643,
    ]
    assert [shard_of("x/y/z.jpg", count) for count in (2, 3, 7, 1000)] == [0, 1, 4, 308]


def test_shard_of_takes_a_name_that_is_not_utf8():
    name = os.fsdecode(b"caf\xe9.png")  # a name made on another system, as os.walk gives it
    assert [shard_of(name, count) for count in (3, 7, 1000)] == [2, 1, 616]
