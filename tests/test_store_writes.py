"""Whole-file writes from pieces (a purge's new files are mostly views of the old): what lands is what was written,
on disk and on the S3 protocol (moto)."""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pytest

from tasks.storage import Store


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path) -> Store:
    if request.param == "local":
        return Store(tmp_path.as_uri())
    store = Store(f"s3://writes-{uuid.uuid4().hex[:8]}/store", request.getfixturevalue("moto_s3"))
    store.ensure_bucket()
    return store


def test_pieces_are_written_end_to_end_as_one_file(any_store: Store) -> None:
    data = os.urandom(1 << 20)
    any_store.write_bytes("a/pieces.bin", b"old")
    any_store.write_parts("a/pieces.bin", [memoryview(data)[:1000], pa.py_buffer(data[1000:5000]), data[5000:]])
    assert any_store.read_bytes("a/pieces.bin") == data
    if any_store.protocol == "file":
        assert os.listdir(any_store.path("a")) == ["pieces.bin"]  # no temporary left


def test_the_same_bytes_are_given_without_writing_them_and_part_when_either_is_written(any_store: Store) -> None:
    any_store.write_bytes("staging/a.bin", b"the new bytes")
    any_store.write_bytes("records/a.bin", b"the old bytes, longer")
    any_store.write_same("records/a.bin", "staging/a.bin")
    assert any_store.read_bytes("records/a.bin") == b"the new bytes"
    if any_store.protocol == "file":  # one file under two names, no temporary left
        assert os.path.samefile(any_store.path("records/a.bin"), any_store.path("staging/a.bin"))
        assert os.listdir(any_store.path("records")) == ["a.bin"]
    any_store.write_bytes("records/a.bin", b"records written again")
    assert any_store.read_bytes("staging/a.bin") == b"the new bytes"
    any_store.delete("staging/a.bin")
    assert any_store.read_bytes("records/a.bin") == b"records written again"


def test_a_patch_writes_its_ranges_in_place_and_a_file_with_two_names_whole(any_store: Store) -> None:
    any_store.write_bytes("a/index.bin", b"0123456789")
    any_store.patch("a/index.bin", [(2, b"xy"), (9, b"z")])
    assert any_store.read_bytes("a/index.bin") == b"01xy45678z"
    if any_store.protocol != "file":
        return
    inode = os.stat(any_store.path("a/index.bin")).st_ino
    any_store.patch("a/index.bin", [(0, b"--")])
    assert os.stat(any_store.path("a/index.bin")).st_ino == inode  # in place: the same file
    any_store.write_same("b/index.bin", "a/index.bin")
    any_store.patch("b/index.bin", [(0, b"!!")])
    assert any_store.read_bytes("b/index.bin") == b"!!xy45678z"
    assert any_store.read_bytes("a/index.bin") == b"--xy45678z"  # its other name kept its bytes
