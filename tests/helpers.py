"""Tiny inline fixtures shared by tests: datasheets and raw files written into a store."""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tasks import ingest
from tasks.datasheet import load_datasheet
from tasks.sources import list_sources
from tasks.storage import Store


@contextlib.contextmanager
def module_home(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[tuple[Path, Store]]:
    """A CUSTODY_HOME (store + MLflow) for a module-scoped fixture to build once, with embedded defaults."""
    home = tmp_path_factory.mktemp(name) / "custody"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CUSTODY_HOME", str(home))
        for var in ("CUSTODY_STORAGE_URL", "CUSTODY_STORAGE_OPTIONS", "CUSTODY_DASK_ADDRESS", "MLFLOW_TRACKING_URI"):
            mp.delenv(var, raising=False)
        store = Store.from_settings()
        store.ensure_bucket()
        yield home, store


def datasheet(name: str, **overrides: Any) -> dict[str, Any]:
    sheet = {"name": name, "description": f"test source {name}", "license": "CC-BY-4.0",
             "consent_basis": "contract", "consent": "granted",
             "fields": {"text": "text", "label": "label", "owner": "owner", "id": "id"}}
    sheet.update(overrides)
    return sheet


def write_source(store: Store, name: str, files: dict[str, bytes], sheet: dict[str, Any] | None = None) -> None:
    """Write ``raw/<name>/`` with a datasheet (unless ``sheet`` is ``{}``) and the given files."""
    if sheet != {}:
        store.write_bytes(f"raw/{name}/source.yaml", yaml.safe_dump(sheet or datasheet(name)).encode())
    for fname, data in files.items():
        store.write_bytes(f"raw/{name}/{fname}", data)


def jsonl(rows: list[Any], gz: bool = False) -> bytes:
    data = ("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n").encode()
    return gzip.compress(data) if gz else data


def record_files(store: Store) -> list[str]:
    return store.list("records", ".parquet")


def ingest_without_engine(store: Store, cfg: ingest.IngestConfig | None = None) -> tuple[list, list]:
    """Run the three ingestion steps as plain functions, sequentially, on the work the flow would give tasks (the
    reference for flow runs)."""
    cfg = cfg or ingest.IngestConfig()
    parsed = []
    for source in list_sources(store):
        sheet, digest = load_datasheet(store, source)
        todo, parsed_before = ingest.files_to_parse(store, source, digest, cfg)
        parsed += [*parsed_before, *(ingest.parse_file(store, source, key, sheet, digest, cfg) for key in todo)]
    ingest.cluster_store(store, cfg)
    partitions = ingest.staged_partitions(store)
    unchanged = ingest.unchanged_publishes(store, partitions)
    published = [unchanged.get(p) or ingest.publish_partition(store, *p) for p in partitions]
    return parsed, published


def artifacts(key: str) -> list:
    """Prefect artifacts with ``key`` on the current API, newest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                     sort=ArtifactSort.CREATED_DESC)


def files_containing(store: Store, needles: list[str]) -> list[str]:
    """Keys of every file under the store root whose content holds any needle (Parquet and gzip decoded)."""
    import gzip as _gzip

    import pyarrow.parquet as pq

    hits = []
    for key in store.list(""):
        data = store.read_bytes(key)
        if key.endswith(".gz"):
            data = _gzip.decompress(data)
        if key.endswith(".parquet"):
            import io

            table = pq.read_table(io.BytesIO(data))
            text = "\n".join(str(v) for col in table.columns for v in col.to_pylist())
        else:
            text = data.decode("utf-8", errors="replace")
        if any(n in text for n in needles):
            hits.append(key)
    return hits


REVIEW_WORDS = {"fresh": ["great", "good", "best", "love", "lovely", "warm", "fine", "superb"],
                "rotten": ["bad", "worst", "dull", "boring", "slow", "awful", "poor", "weak"]}
FILLER = ["film", "story", "plot", "acting", "music", "scene", "the", "a", "movie", "cast", "ending", "script"]


def review_rows(n: int = 200, owners: int = 20) -> list[dict[str, Any]]:
    """``n`` labelled toy reviews (fresh/rotten alternating) from ``owners`` owners, the same for every run."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        label = "fresh" if i % 2 else "rotten"
        text = " ".join([*rng.choice(REVIEW_WORDS[label], 2), *rng.choice(FILLER, 5), f"r{i}x{rng.integers(1e6)}"])
        rows.append({"id": f"r{i}", "text": text, "label": label, "owner": f"o{i % owners:02d}"})
    return rows


def stop_process_group(proc: Any, first: int = 15, grace: float = 30) -> None:
    """Signal the process group ``proc`` leads (``first``, SIGTERM by default), then SIGKILL after ``grace`` s."""
    import os
    import signal
    import subprocess

    if proc.poll() is None:
        os.killpg(proc.pid, first)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def reviews_store(store: Store, n: int = 200, owners: int = 20, shards: int = 2) -> tuple[str, list[dict[str, Any]]]:
    """A validated store of ``n`` labelled toy reviews from ``owners`` owners and one dataset version (all of it)."""

    from tasks import provenance
    from tasks.policy import load_policy
    from tasks.selection import SelectionConfig, select

    rows = review_rows(n, owners)
    write_source(store, "rt", {"a.jsonl": jsonl(rows[::2]), "b.jsonl": jsonl(rows[1::2])})
    ingest_without_engine(store)
    policy = load_policy("research")
    provenance.mark_current(store, policy, [provenance.validate_partition(store, k, policy)
                                            for k in store.list("records", ".parquet")])
    ref = select(store, SelectionConfig(name="sent", strategy="random", budget=10_000, shards=shards,
                                        fractions=(0.7, 0.15, 0.15)))["ref"]
    return ref, rows


def tiny_train_config(dataset: str, **overrides: Any) -> Any:
    from tasks.training import TrainConfig

    return TrainConfig(**{"dataset": dataset, "model": "tiny", "lora_rank": 0, "epochs": 4, "lr": 3e-3,
                          "batch_size": 16, **overrides})
