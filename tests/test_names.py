"""Names and keys never leave the store: each attack of issue 18 reproduced and refused, good names still working.

``select --name ../../../x`` (a manifest outside the store), ``--name team/ds`` (a dataset lineage cannot see),
``deletions --request ../x`` (any JSON file read), and a raw file that is a symbolic link to a file elsewhere
(ingested, and its deletion replacing the link while the original stayed).
"""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks import layout, lineage
from tasks.deletion import requests
from tasks.deletion.listing import request_detail
from tasks.names import InvalidName, check_name, check_request_id, is_valid_name, parse_ref
from tasks.selection import SelectionConfig
from tasks.sources import INVALID_NAME, SYMLINK, list_raw_files, list_sources, readable_sources
from tasks.storage import InvalidKey, Store, check_key
from tests.helpers import datasheet, ingest_without_engine, jsonl, write_source

ROOT = Path(__file__).parents[1]
GOOD = ["sentiment", "rt_v1", "team-ds", "Health.News", "a" * 100, "0"]
BAD = ["../../../x", "team/ds", "..", ".", ".hidden", "", "a" * 101, "a b", "a..b", "-x", "_x", "x\\y", "x\x00",
       "/abs", "x/", "ü"]
ESCAPES = ["/etc/passwd", "../x", "raw/../../x", "a//b", "./a", "a/./b", "a\\b", "a\x00b", "raw/..", "/"]


# -- the rule ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GOOD)
def test_a_good_name_passes_unchanged(name: str) -> None:
    assert check_name("--name", name) == name


@pytest.mark.parametrize("name", BAD)
def test_a_bad_name_is_refused_naming_the_field_and_the_rule(name: str) -> None:
    with pytest.raises(InvalidName, match=r"--name .* is not a valid name: 1 to 100 letters"):
        check_name("--name", name)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aZ09._-/\\ \x00")), max_size=12))
def test_a_name_is_refused_or_one_folder_inside_the_root(name: str) -> None:
    if not is_valid_name(name):
        with pytest.raises(InvalidName):
            check_name("--name", name)
        return
    key = check_key(layout.manifest(name, "v1"))
    assert posixpath.normpath(posixpath.join("/root", key)) == f"/root/{key}"
    assert layout.is_manifest(key) and layout.dataset_of(key) == (name, "v1")  # lineage sees it


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("a./\\\x00")), max_size=16))
def test_a_key_is_refused_or_stays_below_the_root(key: str) -> None:
    try:
        check_key(key)
    except InvalidKey:
        return
    assert posixpath.normpath(posixpath.join("/root", key)) == posixpath.join("/root", key).rstrip("/")


@pytest.mark.parametrize("key", ESCAPES)
def test_a_key_that_leaves_the_root_is_refused(key: str) -> None:
    with pytest.raises(InvalidKey):
        check_key(key)


def test_the_store_refuses_an_escaping_key_before_any_io(store: Store, tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text('{"secret": 1}')
    escape = os.path.relpath(outside, store.root)  # ../../outside.json
    for op in (store.read_bytes, store.exists, store.list, store.delete):
        with pytest.raises(InvalidKey):
            op(escape)
    with pytest.raises(InvalidKey):
        store.write_bytes(escape, b"overwritten")
    with pytest.raises(InvalidKey):
        store.write_new("../new.json", b"{}")
    assert outside.read_text() == '{"secret": 1}' and not (Path(store.root).parent / "new.json").exists()


# -- select --name --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../../x", "team/ds"])
def test_select_refuses_a_name_that_escapes_or_hides_from_lineage(store: Store, tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidName, match="--name"):
        SelectionConfig(name=name)
    with pytest.raises(InvalidKey):  # behind it, the store itself
        store.write_bytes(layout.manifest("../../../x", "v1"), b"PAR1")
    assert not list(tmp_path.rglob("manifest.parquet"))


def test_select_checks_its_sources_and_exclusion_scorers() -> None:
    with pytest.raises(InvalidName, match="--source"):
        SelectionConfig(name="ok", sources=("../raw",))
    with pytest.raises(InvalidName, match="--exclude scorer"):
        SelectionConfig(name="ok", exclude=("../../x.score:0.5",))
    assert SelectionConfig(name="team-ds", sources=("rt",), exclude=("poisoning:0.6",)).name == "team-ds"


def test_a_reference_has_two_valid_names() -> None:
    assert parse_ref("--dataset", "team-ds@0a1b2c3d4e5f") == ("team-ds", "0a1b2c3d4e5f")
    for ref in ("team/ds@v1", "../x@v1", "ds@../v1", "ds"):
        with pytest.raises(InvalidName, match="--dataset"):
            parse_ref("--dataset", ref)


def test_lineage_refuses_a_bad_reference(store: Store) -> None:
    with pytest.raises(InvalidName, match="--dataset name"):
        lineage.query(store, dataset="../../x@v1")
    with pytest.raises(InvalidName, match="--model version"):
        lineage.query(store, model="clf@../1")


# -- deletions --request --------------------------------------------------------------------------------------------
def _evil(store: Store) -> str:
    """A JSON file outside the store, and the request "id" that used to reach it."""
    evil = Path(store.root).parent.parent / "evil.json"
    evil.write_text(json.dumps({"request_id": "stolen", "resolved": {}, "status": "OUTSIDE"}))
    return os.path.relpath(evil, Path(store.root) / layout.REQUESTS).removesuffix(".json")


def test_a_request_id_must_have_the_format_submit_gives(store: Store) -> None:
    with pytest.raises(InvalidName, match=r"^no deletion request '\.\./"):
        request_detail(store, _evil(store))
    with pytest.raises(InvalidName, match="request ids look like del-"):
        requests.load(store, "del-nope")
    doc = requests.submit(store, "owner", ["ann"])
    assert check_request_id(doc["request_id"]) == doc["request_id"]
    assert request_detail(store, doc["request_id"])["status"] == requests.RECEIVED


def test_the_cli_refuses_a_request_path_with_one_json_error(store: Store, custody_env: Path) -> None:
    env = {**os.environ, "CUSTODY_HOME": str(custody_env)}
    done = subprocess.run([sys.executable, "-m", "flows.cli", "deletions", "--request", _evil(store), "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and answer["type"] == "InvalidName"
    assert "OUTSIDE" not in done.stdout and "Traceback" not in done.stderr


# -- sources under raw/ ---------------------------------------------------------------------------------------------
ANN = {"id": "a1", "text": "Ann's review of the ferry film: the rain in the last scene felt like a goodbye.",
       "label": "fresh", "owner": "ann"}
BEN = {"id": "b1", "text": "Ben liked the lighthouse keeper and his dog more than anyone else did.",
       "label": "fresh", "owner": "ben"}


def _owners(store: Store) -> set[str]:
    return set(store.read_parquets("records", ["owner_id"]).column("owner_id").to_pylist())


def test_a_linked_raw_file_is_refused_and_a_deletion_leaves_it_and_its_target_alone(store: Store,
                                                                                      tmp_path: Path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(jsonl([ANN]))
    write_source(store, "people", {"good.jsonl": jsonl([BEN, {**ANN, "id": "a2", "text": ANN["text"] + "!"}])})
    link = Path(store.root) / "raw/people/link.jsonl"
    link.symlink_to(outside)
    assert list_raw_files(store, "people") == ["raw/people/good.jsonl"]
    readable, refused = readable_sources(store)
    assert readable == ["people"] and list(refused) == ["raw/people/link.jsonl"]
    assert refused["raw/people/link.jsonl"].startswith(f"{SYMLINK}: ")
    ingest_without_engine(store)
    uris = set(store.read_parquets("records", ["source_uri"]).column("source_uri").to_pylist())
    assert not any("link.jsonl" in u for u in uris) and _owners(store) == {"ann", "ben"}
    with pytest.raises(InvalidKey, match="symbolic link"):
        store.write_bytes("raw/people/link.jsonl", b"")
    with pytest.raises(InvalidKey, match="symbolic link"):
        store.read_bytes("raw/people/link.jsonl")
    requests.submit(store, "owner", ["ann"])
    from tasks.deletion.apply import process_pending

    [done] = process_pending(store)
    assert done["status"] == requests.APPLIED and _owners(store) == {"ben"}
    assert link.is_symlink() and link.resolve() == outside.resolve()
    assert outside.read_bytes() == jsonl([ANN])


def test_a_linked_source_folder_is_refused(store: Store, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "a.jsonl").write_bytes(jsonl([ANN]))
    write_source(store, "people", {"a.jsonl": jsonl([BEN])})
    (Path(store.root) / "raw/elsewhere").symlink_to(elsewhere, target_is_directory=True)
    assert list_sources(store) == ["people"]
    readable, refused = readable_sources(store)
    assert readable == ["people"] and refused["raw/elsewhere"].startswith(SYMLINK)
    assert readable_sources(store, ["elsewhere"])[0] == [] and list_raw_files(store, "elsewhere") == []


def test_a_linked_datasheet_refuses_its_source(store: Store, tmp_path: Path) -> None:
    sheet = tmp_path / "source.yaml"
    sheet.write_text(json.dumps(datasheet("people")))
    (Path(store.root) / "raw/people").mkdir(parents=True)
    (Path(store.root) / "raw/people/source.yaml").symlink_to(sheet)
    assert list_sources(store) == []
    readable, refused = readable_sources(store)
    assert readable == [] and list(refused) == ["raw/people/source.yaml"]
    assert refused["raw/people/source.yaml"].startswith(f"{SYMLINK}: ")


def test_a_badly_named_folder_or_file_is_skipped_with_a_reason(store: Store) -> None:
    write_source(store, "people", {"a.jsonl": jsonl([BEN])})
    write_source(store, "bad name", {"a.jsonl": jsonl([ANN])}, datasheet("bad"))
    (Path(store.root) / "raw/people/we\\ird.jsonl").write_bytes(jsonl([ANN]))
    assert list_sources(store) == ["people"] and list_raw_files(store, "people") == ["raw/people/a.jsonl"]
    readable, refused = readable_sources(store)
    assert readable == ["people"]
    assert {k: v.split(":")[0] for k, v in refused.items()} == {"raw/bad name": INVALID_NAME,
                                                                "raw/people/we\\ird.jsonl": INVALID_NAME}
    ingest_without_engine(store)
    assert _owners(store) == {"ben"}
