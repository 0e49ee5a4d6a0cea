"""The ``custody`` CLI: one error handler, read-only commands without an engine, and the choices it delegates to
tasks (the deletion selector and its event, the demo's plan and owner) and the log routing it sets up."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flows import cli, runtime
from flows.deployments import PREFECT_YAML
from tasks import demo, lineage
from tasks.deletion import listing
from tasks.deletion.requests import text_hashes
from tasks.deletion.selector import DELETION_EVENT, Selector, SelectorError, build_selector, deletion_event
from tasks.storage import Store

ROOT = Path(__file__).parents[1]
ENGINES = ("prefect", "prefect_dask", "dask", "distributed", "mlflow", "torch")
READ_ONLY = (["status", "--json"], ["lineage", "--owner", "o1", "--json"], ["datasets", "--json"],
             ["deletions", "--json"])
runner = CliRunner()


# -- one error handler ------------------------------------------------------------------------------------------
def test_a_custody_error_exits_1_with_the_json_error_shape(custody_env: Path) -> None:
    result = runner.invoke(cli.app, ["deletions", "--request", "del-nope", "--json"])
    assert result.exit_code == 1
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and answer["type"] == "Fatal"
    assert answer["error"].startswith("no deletion request 'del-nope'")
    assert set(answer) == {"ok", "error", "type"}


def test_a_custody_error_without_json_is_one_line_on_stderr(custody_env: Path) -> None:
    result = runner.invoke(cli.app, ["deletions", "--request", "del-nope"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: no deletion request 'del-nope'")


def test_a_bad_selector_is_reported_before_anything_is_filed(custody_env: Path, store: Store) -> None:
    result = runner.invoke(cli.app, ["delete", "--owner", "o1", "--source", "rt", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"ok": False, "type": "SelectorError",
                                         "error": "give exactly one of --owner, --record-id, --source, --text-file"}
    assert listing.request_rows(store) == []


def test_an_unexpected_error_is_not_swallowed(custody_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(store: Store) -> list:
        raise RuntimeError("a bug")

    monkeypatch.setattr(listing, "request_rows", broken)
    result = runner.invoke(cli.app, ["deletions", "--json"])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "a bug"
    assert result.stdout == ""  # no JSON error object: a bug is not a handled error


# -- read-only commands import no engine and start no server ------------------------------------------------------
@pytest.mark.parametrize("argv", READ_ONLY, ids=lambda argv: argv[0])
def test_read_only_commands_import_no_engine(custody_env: Path, argv: list[str]) -> None:
    code = ("import json, os, sys\nfrom flows.cli import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    code = e.code\nprint(json.dumps({'exit': code, 'api': os.environ.get('PREFECT_API_URL'), "
            f"'engines': sorted(m for m in sys.modules if m.split('.')[0] in {ENGINES!r})}}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    proc = subprocess.run([sys.executable, "-c", code, *argv], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    *lines, last = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1])["ok"] is True, proc.stderr
    assert json.loads(last) == {"exit": 0, "api": None, "engines": []}


# -- the deletion selector and its event --------------------------------------------------------------------------
def test_each_way_of_selecting_makes_its_selector() -> None:
    assert build_selector(owner="o1") == Selector("owner", ["o1"])
    assert build_selector(record_ids=["r1", "r2"]) == Selector("record_id", ["r1", "r2"])
    assert build_selector(source="rt") == Selector("source", ["rt"])


def test_texts_become_hashes_and_never_travel_as_text() -> None:
    texts = ["My phone is 555-0100", "", "  ", "My phone is 555-0100", "another line"]
    selector = build_selector(texts=texts)
    assert selector.kind == "text"
    assert selector.values == text_hashes(["My phone is 555-0100", "another line"]) and len(selector.values) == 2
    assert not any("555" in value for value in selector.values)


@pytest.mark.parametrize("given", [{}, {"owner": "o1", "source": "rt"}, {"record_ids": []}, {"texts": ["", " "]},
                                   {"owner": "o1", "texts": ["a text"]}])
def test_not_exactly_one_way_is_refused(given: dict) -> None:
    with pytest.raises(SelectorError, match="exactly one of --owner"):
        build_selector(**given)


def test_the_event_matches_the_unlearning_trigger_in_prefect_yaml() -> None:
    [deployment] = [d for d in yaml.safe_load(PREFECT_YAML.read_text())["deployments"] if d.get("triggers")]
    [trigger] = deployment["triggers"]
    event = deletion_event("del-1", "owner")
    assert event["event"] == DELETION_EVENT and trigger["expect"] == [DELETION_EVENT]
    assert fnmatch.fnmatch(event["resource"]["prefect.resource.id"], trigger["match"]["prefect.resource.id"])
    assert trigger["parameters"]["request_id"] == "{{ event.payload.request_id }}"
    assert event["payload"] == {"request_id": "del-1", "selector": "owner"}


# -- the demo's choices ---------------------------------------------------------------------------------------------
def test_the_quick_demo_is_smaller_and_the_full_one_uses_defaults() -> None:
    quick, full = demo.demo_plan(True), demo.demo_plan(False)
    assert (quick.sample_limit, quick.pipeline, quick.unlearn) == (demo.QUICK_SAMPLE, demo.QUICK_PIPELINE,
                                                                    demo.QUICK_UNLEARN)
    assert (full.sample_limit, full.pipeline, full.unlearn) == (None, {}, {})
    quick.pipeline["epochs"] = 99  # a plan is a copy: changing it leaves the module's settings alone
    assert demo.QUICK_PIPELINE["epochs"] == 3


def test_the_demo_deletes_an_owner_of_about_one_percent_of_training(store: Store) -> None:
    from tasks.selection import load_manifest
    from tests.helpers import reviews_store

    ref, _ = reviews_store(store, n=400, owners=50)
    chosen = demo.choose_owner(store, ref)
    manifest, _ = load_manifest(store, ref)
    train_owners = [o for o, s in zip(manifest.column("owner_id").to_pylist(), manifest.column("split").to_pylist(),
                                      strict=True) if s == "train"]
    assert chosen["train_records"] == train_owners.count(chosen["owner"]) > 0
    assert chosen["share"] == pytest.approx(chosen["train_records"] / len(train_owners))
    shares = {o: train_owners.count(o) / len(train_owners) for o in set(train_owners)}
    assert abs(chosen["share"] - 0.01) == min(abs(s - 0.01) for s in shares.values())
    assert demo.withdrawal_reason("o7") == "demo: o7 withdrew consent"


# -- lineage asks MLflow only when its store changed ----------------------------------------------------------------
def test_lineage_reuses_the_index_until_the_registry_changes(store: Store, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    client.create_registered_model("clf")
    client.create_model_version("clf", source="file:///nowhere", tags={lineage.DATASET_TAG: "sent@v1"})
    assert lineage.build_index(store, uri)["models"] == 1
    asked = []
    real = lineage.registered_models
    monkeypatch.setattr(lineage, "registered_models", lambda u: asked.append(u) or real(u))
    lineage.build_index(store, uri)
    assert asked == []  # nothing changed: MLflow is not asked
    client.create_model_version("clf", source="file:///nowhere", tags={lineage.DATASET_TAG: "sent@v1"})
    assert lineage.build_index(store, uri)["models"] == 2 and asked == [uri]
    assert lineage.registry_stamp(f"sqlite:///{tmp_path}/none.db") == lineage.NO_REGISTRY
    assert lineage.registry_stamp("http://127.0.0.1:5000") is None  # a server has to be asked


# -- logs: INFO to the file under CUSTODY_HOME, WARNING+ on the terminal --------------------------------------------
def test_prefect_and_dask_info_lines_go_to_the_log_file(custody_env: Path) -> None:
    code = ("import logging\nfrom flows.runtime import configure_environment, route_library_logs\n"
            "configure_environment()\nimport distributed\nfrom prefect import flow\nroute_library_logs()\n"
            "logging.getLogger('prefect.client').info('prefect-info')\n"
            "logging.getLogger('distributed.scheduler').info('dask-info')\n"
            "logging.getLogger('prefect.client').warning('prefect-warning')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    assert "prefect-warning" in proc.stderr
    assert "prefect-info" not in proc.stderr and "dask-info" not in proc.stderr
    logged = runtime.log_file(runtime.get_settings()).read_text()
    assert all(line in logged for line in ("prefect-info", "dask-info", "prefect-warning"))
