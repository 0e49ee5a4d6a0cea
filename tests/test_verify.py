"""``custody verify-deletion``: a store and its databases scanned for a deleted owner's texts by fingerprints only.

Each test plants a leftover on purpose in one kind of place (a Parquet row, a gzip raw line, a JSON report, a log
line, a Prefect-like SQLite table, an MLflow param and text artifact on a real SQLite tracking store), as an exact
copy, a lightly edited one or one embedded in longer text, and expects the scan to name the place; a clean store
and a text that merely shares a few words with a deleted one are not hits.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from tasks import layout
from tasks.config import get_settings
from tasks.deletion import requests
from tasks.deletion.fingerprints import read_fingerprints, store_salt, write_fingerprints
from tasks.deletion.scan_files import file_strings
from tasks.deletion.verify import VERIFICATION_FILE, Matcher, latest_verification, verify_deletion
from tasks.errors import Fatal
from tasks.fingerprints import char_shingles, salted_hashes
from tasks.ids import content_hash, normalize_text
from tasks.storage import Store

DELETED = ["The cinematography is gorgeous but the plot wanders aimlessly for two long hours before it ends",
           "A warm and funny story about a family bakery that made me call my grandmother the very next day"]
OTHERS = ["A cold thriller about a bank heist with a twist that anyone could see coming from the first scene",
          "Dull and overlong, with performances that never rise above the material they were given"]
# shares "the plot wanders" and "two long hours" with DELETED[0], differs in the rest
NEAR_MISS = "Great acting, yet the plot wanders through two long hours of a script nobody should have approved"
EDITED = "the cinematography is GORGEOUS, but the plot wanders aimlessly for 2 long hours before it ends!"
ROOT = Path(__file__).parents[1]


@pytest.fixture
def deleted(store: Store, custody_env: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A request whose two texts were deleted (fingerprints kept), a store holding only other owners' text, and
    Prefect's home and MLflow's database under the test's CUSTODY_HOME."""
    for var in ("PREFECT_API_DATABASE_CONNECTION_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(custody_env / "prefect"))
    doc = requests.submit(store, "owner", ["owner-7"], "withdrawn")
    write_fingerprints(store, doc["request_id"], DELETED)
    table = pa.table({"record_id": ["r1", "r2"], "text": OTHERS, "source": ["rt", "rt"],
                      "content_hash": [content_hash(normalize_text(t)) for t in OTHERS]})
    store.write_parquet("records/source=rt/part-a.parquet", table)
    store.write_bytes("raw/rt/a.jsonl.gz", gzip.compress(
        "\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(OTHERS)).encode()))
    store.write_json("reports/scoring/run1/summary.json", {"top": [{"record_id": "r1", "text": OTHERS[0]}]})
    store.write_bytes("reports/scoring/run1/hist.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    (custody_env / "logs").mkdir(parents=True, exist_ok=True)
    (custody_env / "logs" / "custody.log").write_text(f"INFO scored {OTHERS[1]}\n")
    return doc["request_id"]


def _where(report: dict) -> set[tuple[str, str]]:
    return {(h["place"], h["location"]) for h in report["leftovers"]}


# -- matching -----------------------------------------------------------------------------------------------------
def test_matcher_finds_copies_edited_and_embedded_but_not_a_text_sharing_some_words(store: Store) -> None:
    write_fingerprints(store, "del-unit", DELETED)
    matcher = Matcher(read_fingerprints(store, "del-unit"), store_salt(store))
    assert matcher.match(DELETED[0].upper() + " ...") == [(0, 1.0, "exact")]
    (index, score, how), = matcher.match(EDITED)  # "2" for "two", case and punctuation: no longer exact
    assert (index, how) == (0, "contained") and 0.8 <= score < 1.0
    swapped = DELETED[1].replace("grandmother", "grandpa")
    assert [i for i, _, _ in matcher.match(swapped)] == [1]
    assert [i for i, _, _ in matcher.match(f"## Top flagged\n\n| r9 | {DELETED[1]} | 0.93 |\n| r3 | x |")] == [1]
    assert matcher.match(NEAR_MISS) == [] and matcher.match(OTHERS[0]) == []


def test_a_short_text_is_found_as_a_whole_value_only(store: Store) -> None:
    write_fingerprints(store, "del-short", ["Call me, Ana!"])  # 9 shingles: inside text it would be a phrase
    matcher = Matcher(read_fingerprints(store, "del-short"), store_salt(store))
    assert matcher.match("call me ana") == [(0, 1.0, "exact")]
    assert matcher.match("If you need anything, call me. Ana will answer otherwise.") == []


def test_the_matchers_fast_hashes_are_the_fingerprint_contracts(store: Store) -> None:
    salt = store_salt(store)
    items = [*char_shingles(DELETED[0]), "é", ""]
    fast = Matcher(read_fingerprints(store, "none"), salt).hashes(items)
    assert fast.tolist() == salted_hashes(items, salt).tolist()


def test_a_file_decodes_to_its_strings_and_a_binary_one_is_skipped() -> None:
    import io

    found = list(file_strings("x.csv.gz", io.BytesIO(gzip.compress(b"id,text\n1,hello there\n"))))
    assert [b.text for b in found] == ["id", "text", "1", "hello there"]
    assert [type(s).__name__ for s in file_strings("w.bin", io.BytesIO(b"abc"))] == ["Skipped"]
    assert [type(s).__name__ for s in file_strings("blob", io.BytesIO(b"ab\x00cd"))] == ["Skipped"]


# -- the scan ----------------------------------------------------------------------------------------------------
def test_a_clean_store_is_reported_clean_with_what_was_scanned(store: Store, deleted: str) -> None:
    report = verify_deletion(store, get_settings(), deleted)
    assert report["clean"] is True and report["hits"] == 0 and report["leftovers"] == []
    by_place = {p["place"]: p for p in report["places"]}
    assert {"store", "logs", "prefect_files"} <= set(by_place)
    assert by_place["store"]["strings"] >= 6 and by_place["logs"]["strings"] == 1
    assert report["not_scanned"] == {"binary": 1}
    assert store.read_json(layout.deletion_report(deleted, VERIFICATION_FILE))["clean"] is True


@pytest.mark.parametrize("place", ["attributes", "arrow_ipc", "raw_gzip", "report_json", "log", "near_miss"])
def test_a_leftover_planted_in_a_file_is_found(store: Store, deleted: str, custody_env: Path, place: str) -> None:
    key = {"attributes": "attributes/quality_v1/run1/source=rt/part-a.parquet", "raw_gzip": "raw/rt/b.jsonl.gz",
           "report_json": "reports/scoring/run1/top.json", "log": str(custody_env / "logs" / "custody.log"),
           "near_miss": "reports/scoring/run1/near.json", "arrow_ipc": "dedup/copies/source=rt/a.arrow"}[place]
    if place == "attributes":
        store.write_parquet(key, pa.table({"record_id": ["r1", "r5"], "text": [OTHERS[0], DELETED[1].lower()]}))
    elif place == "arrow_ipc":  # in the second batch, a string field of a dictionary-encoded struct column
        texts = pa.array([OTHERS[0], DELETED[1].lower()])
        records = pa.StructArray.from_arrays([pa.array([1, 2], pa.uint64()), texts], names=["key", "text"])
        batch = pa.record_batch({"record": pa.DictionaryArray.from_arrays(pa.array([0, 1], pa.int32()), records)})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, batch.schema) as writer:
            writer.write_batch(batch.slice(0, 1))
            writer.write_batch(batch.slice(1, 1))
        store.write_bytes(key, sink.getvalue().to_pybytes())
    elif place == "raw_gzip":
        store.write_bytes(key, gzip.compress(f'{{"id": 1, "text": {json.dumps(EDITED)}}}\n'.encode()))
    elif place == "report_json":
        store.write_json(key, {"markdown": f"# Top flagged\n\n| r5 | {DELETED[1]} | 0.98 |\n"})
    elif place == "log":
        with Path(key).open("a") as fh:
            fh.write(f"ERROR task failed on record r5: {EDITED}\n")
    else:
        store.write_json(key, {"text": NEAR_MISS})
    report = verify_deletion(store, get_settings(), deleted)
    if place == "near_miss":
        assert report["clean"] is True, report["leftovers"]
        return
    assert report["clean"] is False and report["hits"] == 1
    (hit,) = report["leftovers"]
    assert (hit["place"], hit["location"]) == ("logs" if place == "log" else "store", key)
    assert hit["fingerprint"] == (1 if place in ("attributes", "arrow_ipc", "report_json") else 0)
    assert DELETED[0] not in json.dumps(report) and DELETED[1] not in json.dumps(report).lower()


def test_a_leftover_in_a_prefect_like_database_table_is_found(store: Store, deleted: str, custody_env: Path) -> None:
    db = custody_env / "prefect" / "prefect.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE artifact (id CHAR(36) PRIMARY KEY, key VARCHAR, type VARCHAR, data JSON)")
        conn.executemany("INSERT INTO artifact VALUES (?, ?, ?, ?)", [
            ("a-1", "score-quality", "markdown", json.dumps(f"| r1 | {OTHERS[0]} |")),
            ("a-2", "score-quality", "markdown", json.dumps(f"## Top flagged\n| r5 | {EDITED} | 0.9 |"))])
    report = verify_deletion(store, get_settings(), deleted)
    assert _where(report) == {("prefect_db", "artifact.data[a-2]")}
    assert next(p for p in report["places"] if p["place"] == "prefect_db")["strings"] >= 6


def test_a_leftover_in_mlflow_params_and_artifacts_is_found(store: Store, deleted: str, custody_env: Path) -> None:
    import mlflow

    settings = get_settings()
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.create_experiment("verify-test", artifact_location=settings.mlflow_artifact_location)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_param("example", DELETED[0])
        mlflow.log_text(f"# Model card\n\nTrained on, among others: {EDITED.upper()}\n", "card/model_card.md")
        mlflow.log_text(OTHERS[1], "card/other.txt")
    report = verify_deletion(store, settings, deleted)
    where = _where(report)
    assert ("mlflow_db", f"params.value[example,{run.info.run_id}]") in where, where
    assert any(place == "mlflow_artifacts" and location.endswith("card/model_card.md") for place, location in where)
    assert not any(location.endswith("other.txt") for _, location in where)


QUOTING = (f"My favourite review of last year said it best: '{DELETED[0]}'. I disagree with every word of that; "
           "the plot is tight, the pacing brisk, and the two hours fly by with a score I still hum at work today.")


def test_a_quote_is_told_from_a_copy_by_how_much_else_the_string_holds(store: Store) -> None:
    write_fingerprints(store, "del-quote", DELETED)
    matcher = Matcher(read_fingerprints(store, "del-quote"), store_salt(store))
    assert [how for _, _, how in matcher.match(EDITED)] == ["contained"]
    assert [(i, how) for i, _, how in matcher.match(QUOTING)] == [(0, "quoted")]


@pytest.mark.parametrize("also_in_report", [False, True])
def test_a_live_record_quoting_a_deleted_text_is_reported_apart_and_a_report_quoting_it_is_a_leftover(
        store: Store, deleted: str, also_in_report: bool) -> None:
    store.write_parquet("records/source=rt/part-q.parquet", pa.table({
        "record_id": ["r9"], "text": [QUOTING], "source": ["rt"], "content_hash": [content_hash(QUOTING)]}))
    store.write_bytes("raw/rt/q.jsonl", json.dumps({"id": 9, "text": QUOTING}).encode() + b"\n")
    if also_in_report:
        store.write_json("reports/scoring/run1/quote.json", {"markdown": f"| r9 | {QUOTING} |"})
    report = verify_deletion(store, get_settings(), deleted)
    assert report["quoted_by_live_records"] == {"hits": 2, "record_ids": ["r9"]}
    assert {(q["location"], q["record_id"]) for q in report["quotes"]} == {
        ("records/source=rt/part-q.parquet", "r9"), ("raw/rt/q.jsonl", "r9")}
    assert report["clean"] is not also_in_report
    assert _where(report) == ({("store", "reports/scoring/run1/quote.json")} if also_in_report else set())
    store.delete("records/source=rt/part-q.parquet")  # the quoting record itself deleted: its raw line is left
    assert _where(verify_deletion(store, get_settings(), deleted)) >= {("store", "raw/rt/q.jsonl")}


def test_the_requests_own_vault_is_an_expected_holder_until_certification(store: Store, deleted: str) -> None:
    store.write_parquet(layout.vault(deleted), pa.table({"record_id": ["r5"], "text": [DELETED[1]]}))
    report = verify_deletion(store, get_settings(), deleted)
    assert report["clean"] is True and report["expected_hits"] == 1 and report["hits"] == 0


def test_a_pickled_exception_in_prefects_result_storage_is_found(store: Store, deleted: str, custody_env: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # what configure_environment sets for every command (an earlier test in this process set it to its own home)
    monkeypatch.setenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(custody_env / "prefect" / "storage"))
    payload = base64.b64encode(pickle.dumps(ValueError(f"bad row: {DELETED[1]}"))).decode()
    result = custody_env / "prefect" / "storage" / "0c9a2f"
    result.parent.mkdir(parents=True)
    result.write_text(json.dumps({"metadata": {"serializer": {"type": "pickle"}}, "result": payload}))
    assert _where(verify_deletion(store, get_settings(), deleted)) == {("prefect_files", str(result))}


def test_a_store_on_s3_is_scanned_like_a_local_one(moto_s3: dict, deleted: str) -> None:
    s3 = Store(f"s3://verify-{uuid.uuid4().hex[:8]}/store", moto_s3)
    s3.ensure_bucket()
    doc = requests.submit(s3, "owner", ["owner-7"])
    write_fingerprints(s3, doc["request_id"], DELETED)
    s3.write_bytes("raw/rt/b.jsonl.gz", gzip.compress(json.dumps({"text": EDITED}).encode()))
    s3.write_parquet("records/source=rt/part-b.parquet", pa.table({"text": [*OTHERS, DELETED[1]]}))
    report = verify_deletion(s3, get_settings(), doc["request_id"])
    assert {(h["location"], h["detail"]) for h in report["leftovers"] if h["place"] == "store"} == {
        ("raw/rt/b.jsonl.gz", "line 1 $.text"), ("records/source=rt/part-b.parquet", "text[row 2]")}


def test_a_server_database_out_of_reach_makes_the_scan_incomplete_not_clean_by_default(
        store: Store, deleted: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # a Prefect server whose database is elsewhere
    report = verify_deletion(store, get_settings(), deleted)
    prefect_db = next(p for p in report["places"] if p["place"] == "prefect_db")
    assert report["complete"] is False and "PREFECT_API_DATABASE_CONNECTION_URL" in prefect_db["note"]
    assert next(p for p in report["places"] if p["place"] == "store")["strings"] >= 6  # the others still scanned


def test_the_verdict_goes_into_the_certificate_and_the_command_exits_1_on_leftovers(
        store: Store, deleted: str, custody_env: Path) -> None:
    cert_key = layout.deletion_report(deleted, "certificate.json")
    store.write_json(cert_key, {"request_id": deleted, "models": []})
    assert latest_verification(store, deleted) is None  # a certificate issued now would say "not verified"
    assert verify_deletion(store, get_settings(), deleted)["clean"] is True
    assert store.read_json(cert_key)["verification"] == latest_verification(store, deleted)
    assert latest_verification(store, deleted)["clean"] is True
    store.write_parquet("records/source=rt/part-b.parquet", pa.table({"text": [DELETED[0]]}))
    env = {**os.environ, "CUSTODY_HOME": str(custody_env)}
    done = subprocess.run([sys.executable, "-m", "flows.cli", "verify-deletion", deleted, "--json"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    answer = json.loads(done.stdout)
    assert done.returncode == 1 and answer["ok"] is False and answer["hits"] == 1, done.stderr[-2000:]
    assert answer["leftovers"][0]["location"] == "records/source=rt/part-b.parquet"
    verification = store.read_json(cert_key)["verification"]
    assert verification["clean"] is False and verification["hits"] == 1 and verification["scanned"]["strings"] > 0


def test_an_unknown_request_is_a_clear_error(store: Store) -> None:
    with pytest.raises(Fatal, match="no deletion request 'del-nope'"):
        verify_deletion(store, get_settings(), "del-nope")
