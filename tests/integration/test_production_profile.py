"""The production profile on one machine: every service a separate process, as in infra/compose.yaml.

Prefect server on PostgreSQL, MLflow tracking server on PostgreSQL with artifacts on S3 (moto), a Dask scheduler
with two workers, the Custody store on S3 and `custody server` serving prefect.yaml's deployments. The pipeline
deployment is triggered through the Prefect API and must land a registered model; `custody delete` must then be
certified by the event-triggered unlearning deployment. Each service gets its own CUSTODY_HOME, so anything that
quietly relies on a shared local directory instead of the store, the Prefect API or MLflow fails here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from flows.runtime import wait_for_api
from tasks.deletion import requests
from tasks.selection import owner_shares
from tasks.storage import Store
from tests.conftest import MOTO_REGION
from tests.helpers import datasheet, jsonl, review_rows, write_source

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
POSTGRES = "postgres@127.0.0.1:5432"  # trust auth on loopback
SERVICE_TIMEOUT = 300  # seconds for a service to come up on a loaded 2-core machine


@dataclass
class Service:
    """One started process (in its own process group, so stopping it stops its children) and its log file."""

    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, chars: int = 2500) -> str:
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n{self.log.read_text(errors='replace')[-chars:]}"


class Services:
    """The services of one test and their logs, whose tails go into every failure message."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[Service] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Service:
        log = self.logs / f"{name}.log"
        with log.open("w") as fh:
            proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        service = Service(name, proc, log)
        self.started.append(service)
        return service

    def tails(self) -> str:
        return "\n".join(s.tail() for s in self.started)

    def listening(self) -> dict[str, set[str]]:
        """Addresses each service's process tree listens on (TCP), to prove nothing binds beyond loopback."""
        import psutil

        found: dict[str, set[str]] = {}
        for s in self.started:
            try:
                procs = [psutil.Process(s.proc.pid), *psutil.Process(s.proc.pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            for p in procs:
                try:
                    conns = p.net_connections(kind="inet")
                except psutil.NoSuchProcess:
                    continue
                found.setdefault(s.name, set()).update(
                    f"{c.laddr.ip}:{c.laddr.port}" for c in conns if c.status == psutil.CONN_LISTEN)
        return found

    def stop(self, first: tuple[str, ...] = ("custody-server",)) -> None:
        """Stop ``first`` (the custody server pauses its deployments through the Prefect API on its way out), then
        the rest at once: SIGINT (all of them shut down cleanly on it), SIGTERM after 30 s, SIGKILL after 15 more;
        always to the whole process group, so no child (flow run, Dask worker process) outlives the test."""
        for batch in ([s for s in self.started if s.name in first], [s for s in self.started if s.name not in first]):
            for sig, grace in ((signal.SIGINT, 30), (signal.SIGTERM, 15), (signal.SIGKILL, 15)):
                alive = [s for s in batch if s.proc.poll() is None]
                for s in alive:
                    _signal_group(s.proc.pid, sig)
                deadline = time.monotonic() + grace
                while any(s.proc.poll() is None for s in alive) and time.monotonic() < deadline:
                    time.sleep(0.2)
            for s in batch:  # the leaders are gone; stragglers in their groups go with them
                _signal_group(s.proc.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until(check: Callable[[], bool], what: str, services: Services, service: Service | None = None,
                timeout: float = SERVICE_TIMEOUT) -> None:
    """Poll ``check`` until it holds; fail early with every log tail when ``service`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if service is not None and service.proc.poll() is not None:
            pytest.fail(f"{service.name} exited while waiting for {what}\n{services.tails()}")
        try:
            if check():
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{services.tails()}")


def _http_ok(url: str) -> Callable[[], bool]:
    return lambda: httpx.get(url, timeout=5).status_code == 200


@pytest.fixture
def postgres_databases() -> Iterator[tuple[str, str]]:
    """Two fresh databases (Prefect, MLflow) with unique names, dropped afterwards even if services still hold
    connections (FORCE), so repeated runs never see each other's state."""
    import psycopg

    names = tuple(f"custody_test_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("prefect", "mlflow"))
    conn = psycopg.connect(f"postgresql://{POSTGRES}/postgres", autocommit=True)
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'CREATE DATABASE "{name}"')
        yield names
    finally:
        with conn.cursor() as cur:
            for name in names:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def _land_reviews(store: Store, n: int = 200, owners: int = 20) -> list[dict]:
    """Raw labelled reviews as the pipeline's defaults expect them (source rotten_tomatoes, fresh/rotten), like
    tests.helpers.reviews_store but not ingested: the deployment must do that on the cluster."""
    rows = review_rows(n, owners)
    write_source(store, "rotten_tomatoes", {"a.jsonl": jsonl(rows[::2]), "b.jsonl": jsonl(rows[1::2])},
                 datasheet("rotten_tomatoes"))
    return rows


@pytest.mark.timeout(2400)
def test_pipeline_and_certified_deletion_on_production_services(moto_s3, postgres_databases, tmp_path) -> None:
    import fsspec
    import mlflow
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    started = time.monotonic()
    prefect_db, mlflow_db = postgres_databases
    s3_endpoint = moto_s3["client_kwargs"]["endpoint_url"]
    tag = uuid.uuid4().hex[:8]
    store_bucket, mlflow_bucket = f"custody-store-{tag}", f"custody-mlflow-{tag}"
    s3 = fsspec.filesystem("s3", **moto_s3)
    s3.mkdir(mlflow_bucket)  # the location constraint comes from the options' region_name (eu-west-1)
    store = Store(f"s3://{store_bucket}/store", moto_s3)
    store.ensure_bucket()

    prefect_port, mlflow_port, dask_port = _free_port(), _free_port(), _free_port()
    prefect_url = f"http://127.0.0.1:{prefect_port}/api"
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    dask_address = f"tcp://127.0.0.1:{dask_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CUSTODY_", "MLFLOW_", "AWS_"))}
    base.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false")
    custody_env = {"CUSTODY_STORAGE_URL": store.url, "CUSTODY_STORAGE_OPTIONS": json.dumps(moto_s3),
                   "CUSTODY_DASK_ADDRESS": dask_address, "CUSTODY_DEVICE": "cpu", "PREFECT_API_URL": prefect_url,
                   "MLFLOW_TRACKING_URI": mlflow_url}

    def env(name: str, **extra: str) -> dict[str, str]:
        """A service's environment: its own CUSTODY_HOME and PREFECT_HOME (as separate machines would have)."""
        home = tmp_path / name
        (home / "prefect").mkdir(parents=True, exist_ok=True)
        return {**base, **custody_env, "CUSTODY_HOME": str(home / "custody"), "PREFECT_HOME": str(home / "prefect"),
                **extra}

    py = sys.executable
    services = Services(tmp_path)
    try:
        loopback = ["--host", "127.0.0.1"]
        prefect = services.start(
            "prefect-server", [py, "-m", "prefect", "server", "start", *loopback, "--port", str(prefect_port)],
            env("prefect-server", PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://{POSTGRES}/{prefect_db}"))
        # drivers named as in infra/compose.yaml (psycopg 3); the S3 credentials are the MLflow server's alone
        mlflow_server = services.start(
            "mlflow", [py, "-m", "mlflow", "server", *loopback, "--port", str(mlflow_port), "--workers", "1",
                       "--backend-store-uri", f"postgresql+psycopg://{POSTGRES}/{mlflow_db}",
                       "--artifacts-destination", f"s3://{mlflow_bucket}/artifacts"],
            env("mlflow", MLFLOW_S3_ENDPOINT_URL=s3_endpoint, AWS_ACCESS_KEY_ID="testing",
                AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=MOTO_REGION))
        # --no-dashboard drops the Bokeh pages only: the HTTP server (/health, /metrics) still starts, on all
        # interfaces unless told otherwise
        dask = [str(Path(py).parent / "dask")]
        quiet = [*loopback, "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
        scheduler = services.start("dask-scheduler", [*dask, "scheduler", "--port", str(dask_port), *quiet],
                                   env("dask-scheduler"))
        for i in (1, 2):
            services.start(f"dask-worker-{i}", [*dask, "worker", dask_address, "--nthreads", "1", *quiet],
                           env(f"dask-worker-{i}"))
        try:
            wait_for_api(prefect_url, prefect.proc, timeout=SERVICE_TIMEOUT)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}\n{services.tails()}")
        custody = services.start("custody-server", [py, "-m", "flows.cli", "server", "--no-schedules"],
                                 env("custody-server", PREFECT_RUNNER_POLL_FREQUENCY="2"))  # default 10 s a poll
        _wait_until(_http_ok(f"{mlflow_url}/health"), "the MLflow server", services, mlflow_server)
        _wait_until(lambda: _dask_workers(dask_address) == 2, "two Dask workers", services, scheduler)
        for name in ("pipeline/custody-pipeline", "unlearn/custody-unlearn"):
            _wait_until(_http_ok(f"{prefect_url}/deployments/name/{name}"), f"deployment {name}", services, custody)
        up = time.monotonic()

        rows = _land_reviews(store)
        with temporary_settings(updates={PREFECT_API_URL: prefect_url}):
            run = run_deployment(name="pipeline/custody-pipeline", timeout=1500, poll_interval=5, parameters={
                "model": "tiny", "epochs": 3, "budget": 0.9, "canaries": 0})
        assert run.state is not None and run.state.is_completed(), f"{run.state}\n{services.tails()}"
        pipeline_done = time.monotonic()

        client = mlflow.MlflowClient(tracking_uri=mlflow_url)
        registered = [m.name for m in client.search_registered_models()]
        assert registered == ["sentiment-classifier"], services.tails()
        served = client.get_model_version_by_alias("sentiment-classifier", "serving")
        model_ref = f"sentiment-classifier@{served.version}"
        assert s3.find(f"{mlflow_bucket}/artifacts"), "MLflow artifacts did not reach S3 through the server"
        assert store.list("datasets", "manifest.parquet") and store.exists(f"models/sentiment-classifier/"
                                                                           f"{served.version}/model.json")
        owner = owner_shares(store, served.tags["custody.dataset"])[0][0]  # an owner of training records
        assert owner in {r["owner"] for r in rows}

        filed = subprocess.run([py, "-m", "flows.cli", "delete", "--owner", owner, "--json"], env=env("client"),
                               cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert filed.returncode == 0, f"{filed.stdout}\n{filed.stderr[-3000:]}"
        answer = json.loads(filed.stdout)
        assert answer["status"] == "received" and answer["event"] == "custody.deletion.requested", answer
        status, deadline = "received", time.monotonic() + 600
        while status != "certified" and time.monotonic() < deadline and custody.proc.poll() is None:
            time.sleep(2)
            status = requests.load(store, answer["request_id"])["status"]
        assert status == "certified", f"status {status}\n{services.tails()}"
        cert = store.read_json(f"reports/deletions/{answer['request_id']}/certificate.json")
        assert [m["source"] for m in cert["models"]] == [model_ref], cert
        def unlearned_by_the_deployment() -> tuple[bool, list[dict]]:  # certified inside the run, which then
            runs = httpx.post(f"{prefect_url}/flow_runs/filter", timeout=30, json={}).json()  # writes summaries
            return any(r["parameters"].get("request_id") == answer["request_id"] and r["state_type"] == "COMPLETED"
                       for r in runs), runs

        done, runs, deadline = False, [], time.monotonic() + 180
        while not done and time.monotonic() < deadline:
            done, runs = unlearned_by_the_deployment()
            time.sleep(0 if done else 2)
        assert done, [(r["name"], r["state_type"], r["parameters"], (r.get("state") or {}).get("message"))
                      for r in runs]
        # Prefect task runs log where they run: the Dask worker processes did the work, not the flow run's process
        assert any("Task run 'score-" in (tmp_path / f"dask-worker-{i}.log").read_text() for i in (1, 2))
        certified = time.monotonic()
        auditor = env("client", PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://{POSTGRES}/{prefect_db}")
        report = _verify_deletion(answer["request_id"], auditor)
        print(f"verify-deletion in {time.monotonic() - certified:.0f} s: {report['scanned']}, not scanned "
              f"{report['not_scanned']}, {report['hits']} leftovers: "
              f"{sorted({(h['place'], h['location']) for h in report['leftovers']})[:20]}")
        assert report["clean"] and store.read_json(f"reports/deletions/{answer['request_id']}/certificate.json")[
            "verification"]["clean"], report["leftovers"]
        # a leftover planted on purpose, lightly edited, in the S3 store, Prefect's Postgres and MLflow's server
        quote = next(r["text"] for r in rows if r["owner"] == owner).upper() + "!"
        store.write_json("reports/planted.json", {"note": f"> {quote}"})
        httpx.post(f"{prefect_url}/artifacts/", timeout=30, json={
            "key": "planted", "type": "markdown", "data": f"| r0 | {quote} |"}).raise_for_status()
        client.set_registered_model_tag("sentiment-classifier", "planted", quote)
        planted = _verify_deletion(answer["request_id"], auditor)
        assert {h["place"] for h in planted["leftovers"]} == {"store", "prefect_db", "mlflow_api"}, planted

        print(f"services up in {up - started:.0f} s, pipeline {pipeline_done - up:.0f} s, deletion certified "
              f"{time.monotonic() - pipeline_done:.0f} s after, {time.monotonic() - started:.0f} s in all")
        listening = services.listening()
        assert set(listening) >= {"prefect-server", "mlflow", "dask-scheduler", "dask-worker-1", "dask-worker-2"}
        assert all(a.startswith("127.0.0.1:") for addrs in listening.values() for a in addrs), listening
    finally:
        stopping = time.monotonic()
        services.stop()
        print(f"services stopped in {time.monotonic() - stopping:.0f} s")


def _verify_deletion(request_id: str, env: dict[str, str]) -> dict:
    """``custody verify-deletion`` as an auditor runs it: the store on S3, the Prefect database (Postgres) read
    directly, MLflow through its server (API and proxied S3 artifacts). Every place must have been read."""
    done = subprocess.run([sys.executable, "-m", "flows.cli", "verify-deletion", request_id, "--json"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    report = json.loads(done.stdout)
    assert done.returncode == (0 if report["clean"] and report["complete"] else 1), done.stderr[-3000:]
    places = {p["place"]: p for p in report["places"]}
    assert set(places) == {"store", "logs", "prefect_files", "prefect_db", "mlflow_api", "mlflow_artifacts"}
    assert report["complete"] and report["fingerprints"] > 0, places
    assert all(places[p]["strings"] > 0 for p in ("store", "prefect_db", "mlflow_api", "mlflow_artifacts")), places
    assert places["mlflow_artifacts"]["not_scanned"].get("binary", 0) > 0, places  # the model's weights
    assert report["ok"] is report["clean"] and report["hits"] == len(report["leftovers"])  # complete: asserted
    return report


def _dask_workers(address: str) -> int:
    """Workers registered with the scheduler (a short-lived client: the flows connect their own)."""
    from distributed import Client

    with Client(address, timeout=10) as client:
        return len(client.scheduler_info()["workers"])
