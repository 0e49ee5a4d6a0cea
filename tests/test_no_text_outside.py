"""Nothing derived quotes a record's text outside the purgeable store (issue 17, item 3).

Prefect's database (artifacts, logs, run parameters, state messages), its result storage, MLflow's tracking
store and artifacts and the log file are beyond a deletion's purge, so they may carry ids, counts and reasons but
never a record's text. The unit tests pin each guard; the last test runs the chain on the session's Prefect
server with a planted sentence, e-mail and phone, plus a flow that fails with that text in reach, and then looks
everywhere outside the store.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import io
import json
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from prefect import flow, task

from flows import runtime
from flows.progress import WithheldError, text_safe
from tasks import layout
from tasks.config import get_settings
from tasks.datasheet import Datasheet
from tasks.deletion.purge import purge_parquet
from tasks.errors import Retryable, ShardError, text_free
from tasks.ids import record_id
from tasks.policy import load_policy
from tasks.rows import Rejected, to_record
from tasks.scoring import quality
from tasks.scoring.report import FLAGGED_FILE, scoring_report
from tasks.storage import Store
from tests.helpers import datasheet, ingest_without_engine, jsonl, review_rows, write_source

SENTENCE = "the quiet lighthouse keeper counted seventeen violet herons"
EMAIL, PHONE = "marguerite.okonkwo@example.org", "(650) 253-0000"
PLANTED = f"{SENTENCE} write to {EMAIL} or call {PHONE}"
NEEDLES = (SENTENCE, EMAIL)


def _leaks(text: str) -> list[str]:
    return [n for n in NEEDLES if n in text]


def test_a_third_party_error_leaves_a_task_as_its_type_and_place_only() -> None:
    @text_safe
    def lookup(text: str) -> None:
        {}[text]  # a KeyError quotes its key, as pyarrow or pandas quote a value they choke on

    with pytest.raises(WithheldError) as caught:
        lookup(PLANTED)
    exc = caught.value
    assert str(exc).startswith("KeyError at ") and "in lookup" in str(exc)
    shown = "".join(traceback.format_exception(exc)) + str(cloudpickle.dumps(exc))  # the logged traceback, the pickle
    assert _leaks(shown) == [] and exc.__context__ is None and exc.__cause__ is None  # tblib would pickle those


@pytest.mark.parametrize("error", [ShardError("records/source=rt/part-a.parquet: unreadable"),
                                   Retryable("throttled"), FileNotFoundError("/store/raw/rt/a.jsonl")])
def test_custody_errors_and_os_errors_pass_unchanged(error: Exception) -> None:
    @text_safe
    def fails() -> None:
        raise error

    with pytest.raises(type(error)) as caught:
        fails()
    assert caught.value is error and text_free(error).endswith(str(error))


def test_every_task_of_every_flow_is_text_safe() -> None:
    import importlib
    import pkgutil

    from prefect import Task

    import flows

    guarded = text_safe(lambda: None).__code__  # every guarded function runs this code
    found = {f"{m.name}.{t.name}": t.fn.__code__ is guarded for m in pkgutil.iter_modules(flows.__path__)
             for t in vars(importlib.import_module(f"flows.{m.name}")).values() if isinstance(t, Task)}
    assert len(found) >= 11 and [name for name, ok in found.items() if not ok] == []


@pytest.fixture
def environ_restored() -> Iterator[None]:
    """The process environment and Prefect's settings as they were, after a test that reconfigures them."""
    from prefect.context import refresh_global_settings_context

    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    refresh_global_settings_context()


def test_prefect_keeps_results_under_custody_home_though_imported_before(environ_restored, tmp_path) -> None:
    from prefect.settings import get_current_settings

    home = tmp_path / "custody"
    os.environ.update(CUSTODY_HOME=str(home), HOME=str(tmp_path / "home"))
    for name in ("PREFECT_HOME", "PREFECT_RESULTS_LOCAL_STORAGE_PATH"):
        os.environ.pop(name, None)
    runtime.configure_environment()  # Prefect was imported long before (this module imports it)
    settings = get_current_settings()
    assert settings.home == home.resolve() / "prefect"
    assert settings.results.local_storage_path == home.resolve() / "prefect" / "storage"
    assert not settings.results.persist_by_default
    os.environ["PREFECT_HOME"] = str(tmp_path / "elsewhere")  # the user's own Prefect home is kept...
    runtime.configure_environment()
    assert get_current_settings().results.local_storage_path == home.resolve() / "prefect" / "storage"  # not results


def test_a_rejected_timestamp_is_described_without_the_value() -> None:
    sheet = Datasheet.model_validate(datasheet("rt", fields={"text": "text", "id": "id", "collected_at": "when"}))
    for when, detail in ((PLANTED, "expected an ISO 8601 timestamp"), (1e20, "timestamp out of range")):
        with pytest.raises(Rejected) as caught:
            to_record({"id": "1", "text": "a fine film", "when": when}, sheet, 10_000)
        assert caught.value.reason == "wrong_type" and detail in caught.value.detail
        assert _leaks(caught.value.detail) == []


def test_the_scoring_report_names_records_by_id_and_keeps_snippets_where_the_purge_reaches(store) -> None:
    rows = [{"id": str(i), "text": f"the story of the year and a warm film number {i}", "label": "fresh",
             "owner": "o"} for i in range(6)] + [{"id": "planted", "text": PLANTED, "label": "fresh", "owner": "v"}]
    write_source(store, "rt", {"a.jsonl": jsonl(rows)})
    ingest_without_engine(store)
    rid = quality.run(store, quality.QualityConfig())["run_id"]  # before validation: nothing redacted yet
    markdown, _, _ = scoring_report(store, "quality", rid)
    planted = record_id("rt", "planted")
    assert planted in markdown and _leaks(markdown) == [] and "253-0000" not in markdown
    key = layout.scoring_report(rid, FLAGGED_FILE)
    snippets = dict(zip(*store.read_parquet(key, ["record_id", "snippet"]).to_pydict().values(), strict=True))
    assert SENTENCE in snippets[planted] and EMAIL not in snippets[planted]  # a person sees it in the store only
    purge_parquet(store, {planted}, set())
    assert planted not in store.read_parquet(key, ["record_id"]).column("record_id").to_pylist()


def _text_of(path: Path) -> str:
    """A file's content as text, Parquet, gzip and base64 decoded (Prefect stores a pickle as base64)."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(data))
        return "\n".join(str(v) for column in table.columns for v in column.to_pylist())
    with contextlib.suppress(binascii.Error):
        data += base64.b64decode(data, validate=False)
    return data.decode("latin-1")


def _files_with_text(root: Path, skip: Path | None = None) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and (skip is None or skip not in p.parents)
            and _leaks(_text_of(p))]


@task(name="read-a-record")
@text_safe
def _choke_on_a_record(store: Store) -> None:
    """A task with a record's text in reach that fails on it, as a lookup keyed by content would."""
    from tasks import passed

    texts = passed.read_all(store, ["text"]).column("text").to_pylist()
    {}[next(t for t in texts if SENTENCE in t)]


@flow(name="fails-on-purpose")
def _fails_on_purpose() -> None:
    _choke_on_a_record(Store.from_settings())


def _prefect_records(flow_run_ids: list) -> str:
    """Everything Prefect's API holds about these flow runs, as one JSON string: the runs (parameters, state
    messages), their task runs, logs and artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas import filters
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=60)  # logs are sent in batches
    runs = filters.FlowRunFilter(id=filters.FlowRunFilterId(any_=flow_run_ids))
    logs = filters.LogFilter(flow_run_id=filters.LogFilterFlowRunId(any_=flow_run_ids))
    with get_client(sync_client=True) as client:
        found = [*client.read_flow_runs(flow_run_filter=runs), *client.read_task_runs(flow_run_filter=runs),
                 *client.read_artifacts(artifact_filter=filters.ArtifactFilter(
                     flow_run_id=filters.ArtifactFilterFlowRunId(any_=flow_run_ids)))]
        offset = len(found)
        while page := client.read_logs(log_filter=logs, limit=200, offset=len(found) - offset):  # the API's cap
            found += page
    return json.dumps([f.model_dump(mode="json") for f in found])


@pytest.fixture
def log_file(custody_env: Path) -> Iterator[Path]:
    """The log file of a command (``flows/logging.yml``: INFO and above of every logger), for this test only: the
    test process imported Prefect before any command could point its logging there."""
    path = runtime.log_file(get_settings())
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    yield path
    logging.getLogger().removeHandler(handler)
    handler.close()


@pytest.mark.integration
def test_the_chain_and_a_failing_flow_leave_no_text_outside_the_store(prefect_api, store, custody_env, log_file,
                                                                       tmp_path, monkeypatch) -> None:
    from flows.ingest import ingest_flow
    from flows.score import score_flow
    from flows.select import select_flow
    from flows.train import train_flow
    from flows.validate import validate_flow
    from tasks.selection import SelectionConfig
    from tests.helpers import files_containing, tiny_train_config

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow on SQLite under CUSTODY_HOME
    runtime.ensure_prefect_api()  # what every command does first: Prefect's storage under this CUSTODY_HOME
    rows = review_rows(12, owners=3)
    for i in (0, 1, 2):  # three variants: whichever ten records the quality report flags, one holds the sentence
        rows[i]["text"] = f"{PLANTED} take {i}"
    write_source(store, "rt", {"a.jsonl": jsonl(rows) + f'{{"id": "bad", "text": "{SENTENCE}"'.encode()})

    states = [ingest_flow(return_state=True), validate_flow(load_policy("research"), return_state=True),
              score_flow(["quality"], return_state=True)]
    selected = select_flow(SelectionConfig(name="sent", strategy="random", budget=10_000, shards=1,
                                           fractions=(0.6, 0.2, 0.2)), return_state=True)
    states += [selected, train_flow(tiny_train_config(selected.result()["ref"], epochs=1), return_state=True)]
    assert all(s.is_completed() for s in states)
    failed = _fails_on_purpose(return_state=True)
    assert failed.is_failed() and failed.message.count("KeyError at ") == 1

    hits = files_containing(store, [SENTENCE])  # the text was in reach: records/, quarantine/, reports/ hold it
    assert any(k.startswith(layout.QUARANTINE) for k in hits) and any(k.startswith(layout.REPORTS) for k in hits)
    held = _prefect_records([s.state_details.flow_run_id for s in [*states, failed]])
    assert "training-curves" in held and "Top flagged records" in held and _leaks(held) == []
    stored = runtime.prefect_storage(get_settings())
    assert any(stored.iterdir())  # the failed flow's pickled exception, under CUSTODY_HOME
    assert "WithheldError: KeyError at " in log_file.read_text()  # the failure's traceback is in the log file
    assert _files_with_text(custody_env, skip=custody_env / "store") == []  # MLflow, Prefect storage, the log file
    assert not (tmp_path / "home" / ".prefect").exists()
