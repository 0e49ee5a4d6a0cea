"""The ``custody`` CLI: one error handler, read-only commands without an engine, and the choices it delegates to
tasks (the deletion selector and its event, the demo's plan and owner) and the log routing it sets up."""

from __future__ import annotations

import fnmatch
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

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


# -- one error handler: exit codes and the JSON error shape (README, "Exit codes and error codes") ---------------
def test_a_custody_error_exits_1_with_the_json_error_shape(custody_env: Path) -> None:
    result = runner.invoke(cli.app, ["deletions", "--request", "del-20260101T000000-0000beef", "--json"])
    assert result.exit_code == 1
    answer = json.loads(result.stdout)
    assert answer["ok"] is False and (answer["type"], answer["code"]) == ("NotFound", "not_found")
    assert answer["error"].startswith("no deletion request 'del-20260101T000000-0000beef'")
    assert set(answer) == {"ok", "error", "code", "type"}
    assert "Traceback" not in result.stderr


def test_a_custody_error_without_json_is_one_line_on_stderr(custody_env: Path) -> None:
    result = runner.invoke(cli.app, ["deletions", "--request", "del-20260101T000000-0000beef"])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: no deletion request 'del-20260101T000000-0000beef'")


def test_a_bad_selector_is_reported_before_anything_is_filed(custody_env: Path, store: Store) -> None:
    result = runner.invoke(cli.app, ["delete", "--owner", "o1", "--source", "rt", "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"ok": False, "type": "SelectorError", "code": "invalid_input",
                                         "error": "give exactly one of --owner, --record-id, --source, --text-file"}
    assert listing.request_rows(store) == []


@pytest.fixture
def broken_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in a read-only command: listing deletion requests raises an exception Custody does not expect."""
    def broken(store: Store) -> list:
        raise RuntimeError("a bug")

    monkeypatch.setattr(listing, "request_rows", broken)


def test_an_unexpected_error_is_internal_exit_2_without_a_traceback(custody_env: Path, broken_listing: None) -> None:
    result = runner.invoke(cli.app, ["deletions", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"ok": False, "error": "a bug", "code": "internal", "type": "RuntimeError"}
    assert "Traceback" not in result.stderr
    human = runner.invoke(cli.app, ["deletions"])
    assert human.exit_code == 2 and human.stdout == ""
    assert human.stderr.startswith("error: a bug") and "--debug" in human.stderr and "Traceback" not in human.stderr


@pytest.mark.parametrize("debug", [["--debug"], "CUSTODY_DEBUG"], ids=["option", "environment"])
def test_debug_adds_the_traceback_and_keeps_the_json(custody_env: Path, broken_listing: None, debug: object,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    if debug == "CUSTODY_DEBUG":
        monkeypatch.setenv("CUSTODY_DEBUG", "1")
    result = runner.invoke(cli.app, [*(debug if isinstance(debug, list) else []), "deletions", "--json"])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["code"] == "internal"
    assert "Traceback (most recent call last)" in result.stderr and "RuntimeError: a bug" in result.stderr


@pytest.mark.parametrize(("content", "expected"), [(None, "cannot read it: No such file"),
                                                   (b"ok\n\xff\xfe bad\n", "not UTF-8 text (byte 0xff at offset 3)")],
                         ids=["missing", "not-utf8"])
def test_a_text_file_that_cannot_be_read_is_invalid_input(custody_env: Path, store: Store, tmp_path: Path,
                                                          content: bytes | None, expected: str) -> None:
    path = tmp_path / "texts.txt"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(cli.app, ["delete", "--text-file", str(path), "--json"])
    assert result.exit_code == 1, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["ok"], answer["code"], answer["type"]) == (False, "invalid_input", "Fatal")
    assert answer["error"].startswith(f"{path}: {expected}")
    assert "Traceback" not in result.stderr
    assert listing.request_rows(store) == []  # nothing was filed


def test_a_result_that_is_not_ok_exits_1(custody_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``custody ingest`` with a source that failed (the flow itself, with its Prefect server and Dask cluster, is
    left out: what is tested is the command's answer to a result that is not ok)."""
    def ingest_with_a_failing_source(sources: list[str] | None, threshold: float, ngram: int) -> dict:
        result = {"sources": [{"source": "bad", "error": "DatasheetError: missing datasheet"}],
                  "errors": {"bad": "DatasheetError: missing datasheet"},
                  "clusters": {"near_dup_clusters": 0, "exact_duplicates": 0}}
        return {"ok": not result["errors"], **result}  # as flows.launch.run_ingest makes it

    monkeypatch.setattr(cli, "launcher", lambda: SimpleNamespace(run_ingest=ingest_with_a_failing_source))
    result = runner.invoke(cli.app, ["ingest", "--json"])
    assert result.exit_code == 1
    answer = json.loads(result.stdout)
    assert (answer["ok"], answer["code"], answer["errors"]) == (False, "failed", {"bad": "DatasheetError: missing "
                                                                                         "datasheet"})
    assert runner.invoke(cli.app, ["ingest"]).exit_code == 1


# -- credentials are masked in doctor's output and in logs --------------------------------------------------------
SECRETS = {"password": "pw-0123456789", "token": "tok-0123456789", "key": "AKIA0123456789",
           "client_kwargs": {"aws_secret_access_key": "sak-0123456789", "region_name": "eu-west-1"},
           "profiles": [{"session_token": "sess-0123456789"}], "keys": ["names", "not-secrets"]}
DB_PASSWORD = "dbpw-0123456789"


@pytest.fixture
def restored_environ() -> Iterator[None]:
    """The environment as it was: ``custody doctor`` sets Prefect's defaults in it (flows.runtime)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_doctor_masks_credentials_at_any_depth(custody_env: Path, monkeypatch: pytest.MonkeyPatch,
                                               restored_environ: None) -> None:
    from tasks import doctor

    monkeypatch.setenv("CUSTODY_STORAGE_OPTIONS", json.dumps(SECRETS))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql://custody:{DB_PASSWORD}@db:5432/mlflow")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-0123456789")

    def echoes_its_credentials(settings: object) -> str:  # a service whose error quotes what it was given
        raise ConnectionError(f"refused: token=tok-0123456789 via {os.environ['MLFLOW_TRACKING_URI']} "
                              "with env-secret-0123456789")

    for name in ("check_dask", "check_prefect", "check_mlflow", "check_device"):  # the slow services, offline
        monkeypatch.setattr(doctor, name, echoes_its_credentials)
    result = runner.invoke(cli.app, ["doctor", "--json"])
    assert result.exit_code == 1  # the checks failed
    secrets = ["pw-0123456789", "tok-0123456789", "AKIA0123456789", "sak-0123456789", "sess-0123456789",
               DB_PASSWORD, "env-secret-0123456789"]
    assert [s for s in secrets if s in result.stdout + result.stderr] == []
    answer = json.loads(result.stdout)
    options = answer["settings"]["storage_options"]
    assert options["client_kwargs"] == {"aws_secret_access_key": "***", "region_name": "eu-west-1"}
    assert options["profiles"] == [{"session_token": "***"}] and options["keys"] == ["names", "not-secrets"]
    assert answer["settings"]["mlflow_tracking_uri"] == "postgresql://custody:***@db:5432/mlflow"
    assert answer["checks"][1]["detail"].startswith("ConnectionError: refused: token=*** via postgresql://custody:***@")


@pytest.mark.parametrize(("name", "secret"), [
    ("password", True), ("aws_secret_access_key", True), ("SecretAccessKey", True), ("sas_token", True),
    ("api_key", True), ("key", True), ("AWS_SESSION_TOKEN", True), ("connection_string", True), ("auth", True),
    ("keys", False), ("key_prefix", False), ("monkey", False), ("region_name", False), ("PWD", False),
    ("endpoint_url", False)])
def test_which_names_are_credentials(name: str, secret: bool) -> None:
    from tasks.secrets import is_secret_key

    assert is_secret_key(name) is secret


def test_a_log_record_with_a_secret_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging
    import logging.config

    from tasks.secrets import SecretFilter

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-0123456789")
    monkeypatch.setenv("CUSTODY_STORAGE_OPTIONS", json.dumps(SECRETS))
    spec = yaml.safe_load(runtime.LOGGING_CONFIG.read_text())
    assert all("secrets" in h["filters"] for h in spec["handlers"].values())  # every handler Prefect configures
    make_filter = logging.config.BaseConfigurator({}).resolve(spec["filters"]["secrets"]["()"])
    assert make_filter is SecretFilter
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(make_filter())
    logger = logging.getLogger("tests.secrets")
    logger.addHandler(handler)
    try:
        logger.warning("s3 with %s and %s; db postgresql://u:%s@h/db; password=%s", "env-secret-0123456789",
                       SECRETS["client_kwargs"], DB_PASSWORD, "hunter2")
        try:
            raise ValueError("token: sess-0123456789")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    logged = stream.getvalue()
    assert [s for s in ("env-secret-0123456789", "sak-0123456789", DB_PASSWORD, "hunter2", "sess-0123456789")
            if s in logged] == []
    assert "'aws_secret_access_key': '***'" in logged and "postgresql://u:***@h/db" in logged
    assert "ValueError: token: ***" in logged  # the traceback too


# -- read-only commands import no engine and start no server ------------------------------------------------------
@pytest.mark.parametrize("argv", READ_ONLY, ids=lambda argv: argv[0])
def test_read_only_commands_import_no_engine(custody_env: Path, argv: list[str]) -> None:
    code = ("import json, os, sys\nfrom typer.main import get_command\nfrom flows.cli import app\n"  # app() exits
            "code = get_command(app).main(sys.argv[1:], standalone_mode=False) or 0\n"
            "print(json.dumps({'exit': code, 'api': os.environ.get('PREFECT_API_URL'), "
            f"'engines': sorted(m for m in sys.modules if m.split('.')[0] in {ENGINES!r})}}))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    proc = subprocess.run([sys.executable, "-c", code, *argv], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    *lines, last = proc.stdout.strip().splitlines()
    assert json.loads(lines[-1])["ok"] is True, proc.stderr
    assert json.loads(last) == {"exit": 0, "api": None, "engines": []}


# -- clean shutdown: a read-only command that read Parquet exits 0 every time -------------------------------------
def test_status_exits_cleanly_every_time(store: Store) -> None:
    """Arrow's reader threads once outlived a read at exit ("terminate called without an active exception", rc 134,
    after the JSON was printed; apache/arrow#34314, #50482). Ten runs at once, so the machine is loaded."""
    import pyarrow as pa

    from tasks import layout

    for source in ("a", "b", "c"):
        for i in range(3):
            store.write_parquet(layout.records(source, f"f{i}"), pa.table({"source": [source] * 20}))
            store.write_parquet(layout.quarantine(source, "ingest", f"f{i}"),
                                pa.table({"source": [source], "stage": ["ingest"], "reasons": [["too_long"]]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    runs = [subprocess.Popen([sys.executable, "-m", "flows.cli", "status", "--json"], env=env, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(10)]
    for run in runs:
        stdout, stderr = run.communicate(timeout=120)
        assert (run.returncode, stderr) == (0, "")
        assert json.loads(stdout)["records"] == 180 and json.loads(stdout)["quarantined"] == 9


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


def test_the_language_model_demo_trains_smollm2_on_a_few_accounts_without_canaries() -> None:
    from flows.launch import run_demo
    from tasks.errors import Fatal
    from tasks.training import TrainConfig

    plan = demo.demo_plan(False, lm=True)
    assert plan.pipeline["model"] == "smollm2" and plan.pipeline["owners"] == demo.LM_ACCOUNTS
    assert TrainConfig(dataset="d@1", model=plan.pipeline["model"]).task == "lm"
    assert (plan.canaries, plan.drill, plan.pipeline["scorers"]) == (0, False, [])
    with pytest.raises(Fatal, match="--lm"):
        run_demo(True, print, lm=True)  # --quick --lm: refused before anything runs


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
            "logging.getLogger('prefect.client').warning('prefect-warning')\n"
            "logging.getLogger('prefect.client').warning('with env-secret-0123456789 at postgresql://u:dbpw-12345678@h')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["AWS_SECRET_ACCESS_KEY"] = "env-secret-0123456789"
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=True)
    assert "prefect-warning" in proc.stderr
    assert "prefect-info" not in proc.stderr and "dask-info" not in proc.stderr
    logged = runtime.log_file(runtime.get_settings()).read_text()
    assert all(line in logged for line in ("prefect-info", "dask-info", "prefect-warning"))
    for output in (proc.stderr, logged):  # logging.yml's filter on the terminal and in the file
        assert "with *** at postgresql://u:***@h" in output and "secret-0123" not in output and "dbpw" not in output
