"""The production profile builds the same store as the embedded one: ``python bench/profile_equivalence.py``.

N synthetic records (``bench/scale_corpus.py``) are written once to a local ``file://`` store and the same raw files
copied to an S3 store on a moto server on 127.0.0.1. The real ``custody`` CLI then runs ingest, validate (commercial
policy) and score (quality) twice: with embedded defaults (file:// store, a Dask ``LocalCluster`` of 2 workers, the
temporary Prefect server), and with the production settings (``CUSTODY_STORAGE_URL=s3://...``, the endpoint in
``CUSTODY_STORAGE_OPTIONS``, ``CUSTODY_DASK_ADDRESS`` of a ``dask scheduler`` with 2 ``dask worker`` processes, and a
``prefect server`` on PostgreSQL), each service a process of its own with its own ``CUSTODY_HOME``. A digest of each
store (``store_digest``) says whether they hold the same records, verdicts and attributes; wall seconds per step
and the digests go to ``bench/results/profile_equivalence.json``. Issue #16 item 8; see bench/README.md.

    .venv/bin/python bench/profile_equivalence.py --size 20000
    .venv/bin/python bench/profile_equivalence.py              # 1,000,000 records
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
from scale_corpus import write_corpus  # bench/ modules, imported as scale.py does (it puts the root on sys.path)
from scale_measure import machine, measure

from flows.runtime import wait_for_api
from tasks import layout, passed
from tasks.scoring import base
from tasks.storage import Store
from tests.conftest import MOTO_REGION
from tests.integration.test_production_profile import POSTGRES, SERVICE_TIMEOUT, Services, _dask_workers, _free_port

SOURCE, CORPUS, SCORER = "synthetic", "synthetic", "quality"
STEPS = (("ingest", ("ingest",)), ("validate", ("validate", "--policy", "commercial")),
         ("score_quality", ("score", "--scorer", SCORER)))
COMPONENTS = ("ids", "verdicts", "attributes")
DIGITS = 6  # attribute floats are compared rounded to 6 decimal digits
SHOWN_IDS = 5  # differing record ids reported per component
BIN = Path(sys.executable).parent
RESULTS = Path(__file__).resolve().parent / "results"


# -- the store digest: every component read partition by partition, in a canonical order -----------------------------


def _ids(store: Store, key: str) -> pa.Table:
    return store.read_parquet(key, ["record_id"]).sort_by("record_id")


def _verdicts(store: Store, key: str) -> pa.Table:
    table = store.read_parquet(key, ["record_id", "passed", "reasons", "text_redacted"])
    reasons = pc.binary_join(table["reasons"], "|")  # a list column has no CSV form
    return table.set_column(2, "reasons", reasons).sort_by("record_id")


def _attributes(store: Store, key: str) -> pa.Table:
    table = store.read_parquet(key)
    for i, field in enumerate(table.schema):
        if pa.types.is_floating(field.type):
            table = table.set_column(i, field.name, pc.round(table[field.name], DIGITS))
    return table.select(["record_id", *sorted(n for n in table.column_names if n != "record_id")]).sort_by("record_id")


READERS: dict[str, Callable[[Store, str], pa.Table]] = {"ids": _ids, "verdicts": _verdicts, "attributes": _attributes}


def component_dirs(store: Store) -> dict[str, str]:
    """The folder of each component: records/, the current policy's verdicts, the latest quality run's attributes."""
    return {"ids": layout.records_dir(), "verdicts": layout.verdicts_dir(passed.current_policy(store)),
            "attributes": layout.attribute_run_dir(SCORER, base.latest_run(store, SCORER))}


def table_digest(table: pa.Table) -> str:
    """sha256 of the table as CSV (Arrow's writer: the same values give the same bytes on any store)."""
    buf = io.BytesIO()
    pcsv.write_csv(table, buf)
    return hashlib.sha256(buf.getvalue()).hexdigest()


def store_digest(store: Store) -> dict[str, Any]:
    """Digest of a store's records, verdicts and attributes; memory is one partition's table at a time.

    Each component's partitions are taken in key order (relative to the component's folder, so a policy hash or
    run id in the path does not count) and each partition's rows in record_id order; a component's digest hashes
    its partitions' digests, the store's hashes the components'.

    Returns:
        ``digest``, and per component its ``digest``, ``rows``, folder and ``partitions`` (relative key -> digest).
    """
    components: dict[str, Any] = {}
    for name, folder in component_dirs(store).items():
        parts, rows = {}, 0
        for key in store.list(folder, layout.PARQUET):
            table = READERS[name](store, key)
            parts[key.removeprefix(folder + "/")] = table_digest(table)
            rows += table.num_rows
        joined = "".join(f"{k}\t{d}\n" for k, d in sorted(parts.items()))
        components[name] = {"digest": hashlib.sha256(joined.encode()).hexdigest(), "rows": rows, "folder": folder,
                            "partitions": parts}
    overall = "".join(f"{n}\t{components[n]['digest']}\n" for n in COMPONENTS)
    return {"digest": hashlib.sha256(overall.encode()).hexdigest(), "components": components}


def differing_ids(a: pa.Table, b: pa.Table) -> list[str]:
    """Record ids whose rows differ between two canonical tables of one partition (or are in one only)."""
    rows_a = {r["record_id"]: r for r in a.to_pylist()}
    rows_b = {r["record_id"]: r for r in b.to_pylist()}
    return sorted(i for i in rows_a.keys() | rows_b.keys() if rows_a.get(i) != rows_b.get(i))


def _partition(store: Store, name: str, component: dict[str, Any], rel: str) -> pa.Table:
    """One partition of a component in canonical form; no rows when this store lacks it."""
    if rel not in component["partitions"]:
        return pa.table({"record_id": pa.array([], pa.string())})
    return READERS[name](store, f"{component['folder']}/{rel}")


def differences(stores: tuple[Store, Store], digests: tuple[dict, dict]) -> dict[str, Any]:
    """Per differing component: the partitions that differ and a few record ids whose rows differ."""
    found = {}
    for name in COMPONENTS:
        (ca, cb) = (d["components"][name] for d in digests)
        if ca["digest"] == cb["digest"]:
            continue
        parts = sorted(k for k in ca["partitions"].keys() | cb["partitions"].keys()
                       if ca["partitions"].get(k) != cb["partitions"].get(k))
        ids: list[str] = []
        for rel in parts:
            if len(ids) >= SHOWN_IDS:
                break
            tables = [_partition(s, name, c, rel) for s, c in zip(stores, (ca, cb), strict=True)]
            ids += differing_ids(*tables)[:SHOWN_IDS - len(ids)]
        found[name] = {"partitions": parts, "record_ids": ids, "rows": [ca["rows"], cb["rows"]]}
    return found


# -- the two profiles ------------------------------------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without Custody, Prefect, MLflow or AWS settings, plus ``extra``."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODY_", "PREFECT_", "MLFLOW_", "AWS_"))}
    return {**keep, "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def run_profile(env: dict[str, str], logs: Path, timeout: float) -> dict[str, Any]:
    """Each step through the installed CLI, in order; a failed step ends the profile (the next would read nothing)."""
    steps: dict[str, Any] = {}
    for name, argv in STEPS:
        entry = measure([str(BIN / "custody"), *argv, "--json"], env, logs / name, timeout)
        entry.pop("output", None)
        steps[name] = entry
        print(f"  {name}: {entry['s']:.1f} s ok={entry['ok']}", flush=True)
        if not entry["ok"]:
            break
    return {"steps": steps, "ok": all(s["ok"] for s in steps.values()) and len(steps) == len(STEPS),
            "total_s": round(sum(s["s"] for s in steps.values()), 1)}


def wait_until(check: Callable[[], bool], what: str, services: Services) -> None:
    """Poll ``check`` until it holds; raise with every service's log tail when one dies or time runs out."""
    deadline = time.monotonic() + SERVICE_TIMEOUT
    while time.monotonic() < deadline:
        if any(s.proc.poll() is not None for s in services.started):
            break
        with contextlib.suppress(httpx.HTTPError, OSError):
            if check():
                return
        time.sleep(1)
    raise RuntimeError(f"no {what}\n{services.tails()}")


@contextlib.contextmanager
def prefect_database() -> Iterator[str]:
    """A fresh PostgreSQL database for the Prefect server, dropped afterwards (FORCE: the server may hold it)."""
    import psycopg

    name = f"custody_profile_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"postgresql://{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(f"postgresql://{POSTGRES}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_production(services: Services, work: Path, database: str) -> tuple[Store, dict[str, str]]:
    """moto S3, a Prefect server on PostgreSQL, a Dask scheduler and 2 workers, all on 127.0.0.1; returns the S3
    store (bucket created) and the CLI's environment. Every process gets its own CUSTODY_HOME and PREFECT_HOME."""
    s3_port, prefect_port, dask_port = _free_port(), _free_port(), _free_port()
    endpoint, prefect_url = f"http://127.0.0.1:{s3_port}", f"http://127.0.0.1:{prefect_port}/api"
    options = {"key": "testing", "secret": "testing",
               "client_kwargs": {"endpoint_url": endpoint, "region_name": MOTO_REGION}}
    store = Store("s3://custody-profile/store", options)
    dask_address = f"tcp://127.0.0.1:{dask_port}"
    custody = {"CUSTODY_STORAGE_URL": store.url, "CUSTODY_STORAGE_OPTIONS": json.dumps(options),
               "CUSTODY_DASK_ADDRESS": dask_address, "PREFECT_API_URL": prefect_url}

    def env(name: str, **extra: str) -> dict[str, str]:
        home = work / "homes" / name
        (home / "prefect").mkdir(parents=True, exist_ok=True)
        return clean_env(**custody, CUSTODY_HOME=str(home / "custody"), PREFECT_HOME=str(home / "prefect"), **extra)

    services.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)], clean_env())
    prefect = services.start(
        "prefect-server", [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                           str(prefect_port)],
        env("prefect-server", PREFECT_API_DATABASE_CONNECTION_URL=f"postgresql+asyncpg://{POSTGRES}/{database}"))
    quiet = ["--host", "127.0.0.1", "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
    services.start("dask-scheduler", [str(BIN / "dask"), "scheduler", "--port", str(dask_port), *quiet],
                   env("dask-scheduler"))
    for i in (1, 2):
        services.start(f"dask-worker-{i}", [str(BIN / "dask"), "worker", dask_address, "--nthreads", "1", *quiet],
                       env(f"dask-worker-{i}"))
    wait_until(lambda: httpx.get(endpoint, timeout=5).status_code < 500, "moto S3 server", services)
    store.ensure_bucket()
    wait_for_api(prefect_url, prefect.proc, timeout=SERVICE_TIMEOUT)
    wait_until(lambda: _dask_workers(dask_address) == 2, "two Dask workers", services)
    return store, env("cli")


def deliver(source: Store, target: Store) -> int:
    """Copy the raw files (and datasheet) byte for byte; returns the bytes copied."""
    copied = 0
    for key in source.list(layout.raw_dir(SOURCE)):
        data = source.read_bytes(key)
        target.write_bytes(key, data)
        copied += len(data)
    return copied


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    return fn(), round(time.perf_counter() - start, 1)


def worker_task_runs(logs: Path) -> dict[str, int]:
    """Prefect task-run lines in each Dask worker's log: the workers, not the CLI's process, did the work."""
    return {f"dask-worker-{i}": (logs / f"dask-worker-{i}.log").read_text(errors="replace").count("Task run '")
            for i in (1, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="synthetic records")
    parser.add_argument("--work-dir", default="/tmp/profile", help="homes, stores and logs (removed first)")
    parser.add_argument("--step-timeout", type=float, default=7200, help="seconds for one CLI step")
    parser.add_argument("--out", default=str(RESULTS / "profile_equivalence.json"))
    args = parser.parse_args()
    work = Path(args.work_dir) / str(args.size)
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    result: dict[str, Any] = {"size": args.size, "corpus": CORPUS, "date": dt.datetime.now(dt.UTC).isoformat(),
                              "machine": machine(), "steps": [s for s, _ in STEPS]}
    local = Store((work / "homes" / "local" / "custody" / "store").resolve().as_uri())
    written, result["generate_s"] = timed(lambda: write_corpus(local, CORPUS, SOURCE, args.size))
    result["raw"] = written
    print(f"local profile ({args.size} records)", flush=True)
    result["local"] = run_profile(clean_env(CUSTODY_HOME=str(work / "homes" / "local" / "custody")),
                                  work / "logs" / "local", args.step_timeout)
    services = Services(work / "logs")
    try:
        with prefect_database() as database:
            try:
                (s3, cli_env), result["services_up_s"] = timed(lambda: start_production(services, work, database))
                _, result["deliver_s"] = timed(lambda: deliver(local, s3))
                print("production profile", flush=True)
                result["production"] = run_profile(cli_env, work / "logs" / "production", args.step_timeout)
                result["production"]["worker_task_runs"] = worker_task_runs(work / "logs")
                compare(result, (local, s3))
            finally:
                services.stop()
    finally:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}", flush=True)


def compare(result: dict[str, Any], stores: tuple[Store, Store]) -> None:
    """Digest both stores (while the S3 server still runs) and record whether, and where, they differ."""
    if not (result["local"]["ok"] and result["production"]["ok"]):
        result["equal"] = None
        return
    digests = []
    for profile, store in zip(("local", "production"), stores, strict=True):
        digest, seconds = timed(lambda s=store: store_digest(s))
        digests.append(digest)
        result[profile]["digest_s"] = seconds
        result[profile]["digest"] = digest["digest"]
        result[profile]["components"] = {n: {k: c[k] for k in ("digest", "rows", "folder")} | {
            "partitions": len(c["partitions"])} for n, c in digest["components"].items()}
    result["equal"] = digests[0]["digest"] == digests[1]["digest"]
    result["components_equal"] = {n: digests[0]["components"][n]["digest"] == digests[1]["components"][n]["digest"]
                                  for n in COMPONENTS}
    result["differences"] = differences(stores, (digests[0], digests[1]))
    print(f"equal: {result['equal']} {result['components_equal']}", flush=True)


if __name__ == "__main__":
    main()
