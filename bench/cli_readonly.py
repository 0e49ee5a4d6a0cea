"""Wall time of the read-only ``custody`` commands on a 1M-record store: ``python bench/cli_readonly.py``.

Builds a store like ``bench/lineage.py``'s (N records of 1,000 owners in 20 partitions, five dataset manifests of
~N/2 records each) plus what ``custody status`` and ``custody datasets`` read (selection summaries, a validation
summary, deletion requests) and an MLflow registry on SQLite with one model version per dataset version. Then it
runs ``custody lineage --owner X``, ``custody status``, ``custody datasets`` and ``custody deletions`` (all with
``--json``) as subprocesses of the installed console script, a few times each after one warm-up run (the first
lineage run builds the index and asks MLflow), and writes min and median wall times to
``bench/results/cli_readonly.json`` beside two references measured in the same run: ``python -c pass`` (the
interpreter's start) and the same queries in-process (the work itself). Target: every command under 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from lineage import best_of  # bench/lineage.py: this script runs from bench/ like it

from tasks import layout, lineage
from tasks.deletion import requests
from tasks.status import store_status
from tasks.storage import Store

RESULTS = Path(__file__).parent / "results" / "cli_readonly.json"
CUSTODY = Path(sys.executable).with_name("custody")
COMMANDS = {"lineage": ["lineage", "--owner", "owner-0042", "--json"], "status": ["status", "--json"],
            "datasets": ["datasets", "--json"], "deletions": ["deletions", "--json"]}
TARGET_S = 2.0


def populate(store: Store, n: int, rng: np.random.Generator) -> None:
    """Records, manifests with their selection summaries, a validation summary and three deletion requests."""
    ids = np.array([f"r{i:024x}" for i in rng.permutation(n)])
    owners = np.array([f"owner-{i:04d}" for i in rng.integers(0, 1000, n)])
    for part, chunk in enumerate(np.array_split(np.arange(n), 20)):
        store.write_parquet(layout.records("bench", f"{part:05d}"),
                            pa.table({"record_id": ids[chunk], "owner_id": owners[chunk],
                                      "source": pa.repeat("bench", len(chunk)).cast(pa.string())}))
    for version in range(5):
        chosen = ids[rng.random(n) < 0.5]
        store.write_parquet(layout.manifest("bench", f"v{version}"), pa.table({"record_id": chosen}))
        store.write_json(layout.selection("bench", f"v{version}"), {
            "name": "bench", "version": f"v{version}", "strategy": "random", "records": len(chosen),
            "counts": {"train": len(chosen), "validation": 0, "test": 0}, "created_at": f"2026-01-0{version + 1}"})
    store.write_json(layout.CURRENT_POLICY, {"policy": "research", "policy_hash": "bench", "checked": n, "passed": n})
    for owner in ("owner-0001", "owner-0002", "owner-0003"):
        requests.submit(store, "owner", [owner], "bench")


def register_models(tracking_uri: str) -> None:
    """One registered version per dataset version, tagged as training does, so lineage has models to name."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    client.create_registered_model("bench-classifier")
    for version in range(5):
        client.create_model_version("bench-classifier", source="file:///nowhere",
                                    tags={lineage.DATASET_TAG: f"bench@v{version}"})


def wall_times(argv: list[str], env: dict[str, str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times



def summary(times: list[float]) -> dict[str, float]:
    return {"min_s": round(min(times), 3), "median_s": round(statistics.median(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "custody"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODY_", "PREFECT_", "MLFLOW_"))}
        env["CUSTODY_HOME"] = str(home)
        store = Store((home / "store").resolve().as_uri())
        start = time.perf_counter()
        populate(store, args.records, np.random.default_rng(0))
        tracking_uri = f"sqlite:///{(home / 'mlflow.db').resolve()}"
        register_models(tracking_uri)
        populate_s = time.perf_counter() - start
        first = wall_times([str(CUSTODY), *COMMANDS["lineage"]], env, 1)[0]  # builds the index, asks MLflow
        commands = {}
        for name, argv in COMMANDS.items():
            wall_times([str(CUSTODY), *argv], env, 1)  # warm the page cache
            commands[name] = summary(wall_times([str(CUSTODY), *argv], env, args.repeats))
        python_start = summary(wall_times([sys.executable, "-c", "pass"], env, args.repeats))
        work = {"lineage": best_of(lambda: (lineage.build_index(store, tracking_uri),
                                               lineage.query(store, owner="owner-0042")), 3),
                "status": best_of(lambda: store_status(store), 3)}
        rows = lineage.build_index(store, tracking_uri)["rows"]
    result = {"records": args.records, "index_rows": rows, "populate_s": round(populate_s, 1),
              "lineage_first_run_s": round(first, 3), "commands": commands,
              "reference": {"python_c_pass": python_start,
                            "in_process_min_s": {k: round(v, 3) for k, v in work.items()}},
              "target_s": TARGET_S, "meets_target": all(c["median_s"] < TARGET_S for c in commands.values()),
              "repeats": args.repeats, "machine": platform.processor() or "cpu", "cores": os.cpu_count()}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
