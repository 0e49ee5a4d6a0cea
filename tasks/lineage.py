"""Lineage: which dataset versions and models hold which records.

The sources of truth are the dataset manifests and MLflow's registered model versions (tag
``custody.dataset = NAME@VERSION``). The lineage index is derived from them — record → dataset version rows
sorted by record id, and dataset version → model rows — and rebuilt whenever the set of manifests or models
changes, so it can always be thrown away. Records a deletion removed are still named, through the ids their
requests kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.deletion.requests import list_requests
from tasks.errors import Fatal
from tasks.model_registry import DATASET_TAG
from tasks.names import parse_ref
from tasks.storage import Store

log = logging.getLogger(__name__)
SQLITE = "sqlite:///"  # the embedded tracking store's URI scheme (tasks/config.py)
NO_REGISTRY = "none"
RECORD_DATASETS_SCHEMA = pa.schema([("record_id", pa.string()), ("dataset", pa.string()), ("version", pa.string())])
DATASET_MODELS_SCHEMA = pa.schema([("dataset", pa.string()), ("version", pa.string()), ("model", pa.string()),
                            ("model_version", pa.string()), ("run_id", pa.string())])


def manifest_keys(store: Store) -> list[str]:
    """Keys of every dataset version's manifest."""
    return [k for k in store.list(layout.DATASETS, layout.PARQUET) if layout.is_manifest(k)]


def registered_models(tracking_uri: str | None) -> list[dict[str, str]]:
    """Registered model versions tagged with the dataset version they were trained on."""
    if not tracking_uri:
        return []
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    rows = []
    for model in client.search_registered_models():
        for mv in client.search_model_versions(f"name='{model.name}'"):
            tag = (mv.tags or {}).get(DATASET_TAG)
            if tag and "@" in tag:
                dataset, version = tag.split("@", 1)
                rows.append({"dataset": dataset, "version": version, "model": mv.name,
                             "model_version": str(mv.version), "run_id": mv.run_id or ""})
    return rows


def _fingerprint(store: Store, keys: list[str], models: list[dict[str, str]]) -> str:
    parts = [f"{k}:{store.size(k)}" for k in keys] + [json.dumps(m, sort_keys=True) for m in models]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def registry_stamp(tracking_uri: str | None) -> str | None:
    """A token that changes whenever the embedded SQLite tracking store is written (its files' sizes and mtimes),
    so an unchanged registry is known without importing MLflow (seconds a command); ``NO_REGISTRY`` when there is
    no URI or no database yet; None for a tracking server, which has to be asked."""
    if not tracking_uri:
        return NO_REGISTRY
    if not tracking_uri.startswith(SQLITE):
        return None
    db = Path(tracking_uri.removeprefix(SQLITE))
    stats = [p.stat() for p in (db, db.with_name(f"{db.name}-wal")) if p.exists()]
    return ";".join(f"{st.st_size}:{st.st_mtime_ns}" for st in stats) or NO_REGISTRY


def build_index(store: Store, tracking_uri: str | None = None, force: bool = False) -> dict[str, Any]:
    """(Re)build the index if the manifests or models changed; returns the index summary. MLflow is asked only
    when its store may have changed since the last build (see :func:`registry_stamp`)."""
    keys = manifest_keys(store)
    stamp, manifests = registry_stamp(tracking_uri), _fingerprint(store, keys, [])
    summary = store.read_json(layout.LINEAGE_SUMMARY) if store.exists(layout.LINEAGE_SUMMARY) else {}
    unchanged = (summary.get("registry_stamp"), summary.get("manifests_fingerprint")) == (stamp, manifests)
    if not force and stamp is not None and unchanged:
        return summary
    models = [] if stamp == NO_REGISTRY else registered_models(tracking_uri)
    fingerprint = _fingerprint(store, keys, models)
    if not force and summary.get("fingerprint") == fingerprint:
        summary = {**summary, "registry_stamp": stamp, "manifests_fingerprint": manifests}
        store.write_json(layout.LINEAGE_SUMMARY, summary)
        return summary
    parts = []
    for key in keys:
        name, version = layout.dataset_of(key)
        ids = store.read_parquet(key, ["record_id"]).column("record_id")
        parts.append(pa.table({"record_id": ids, "dataset": pa.repeat(name, len(ids)).cast(pa.string()),
                               "version": pa.repeat(version, len(ids)).cast(pa.string())}))
    table = pa.concat_tables(parts).cast(RECORD_DATASETS_SCHEMA) if parts else RECORD_DATASETS_SCHEMA.empty_table()
    store.write_parquet(layout.RECORD_DATASETS, table.sort_by("record_id"), RECORD_DATASETS_SCHEMA)
    store.write_parquet(layout.DATASET_MODELS, pa.Table.from_pylist(models, schema=DATASET_MODELS_SCHEMA),
                        DATASET_MODELS_SCHEMA)
    summary = {"fingerprint": fingerprint, "built_at": dt.datetime.now(dt.UTC).isoformat(),
               "manifests": len(keys), "rows": table.num_rows, "models": len(models),
               "manifests_fingerprint": manifests, "registry_stamp": stamp}
    store.write_json(layout.LINEAGE_SUMMARY, summary)
    return summary


def record_ids_of_owner(store: Store, owner: str) -> list[str]:
    """The owner's records still in the store, plus those its deletion requests removed (ids the ledger kept), so
    lineage still names the datasets and retired models that held them."""
    records = store.read_parquets(layout.records_dir(), ["record_id", "owner_id"])
    ids = set()
    if records.num_rows:
        ids |= set(records.filter(pc.equal(records.column("owner_id"), owner)).column("record_id").to_pylist())
    for doc in list_requests(store):
        if doc["selector"]["kind"] == "owner" and owner in doc["selector"]["values"] and doc.get("resolved"):
            ids |= set(doc["resolved"]["record_ids"])
    return sorted(ids)


def query(store: Store, *, owner: str | None = None, record_ids: list[str] | None = None,
          dataset: str | None = None, model: str | None = None) -> dict[str, Any]:
    """Which datasets and models hold the selected records (by owner, ids, dataset or model version)."""
    index, models = RECORD_DATASETS_SCHEMA.empty_table(), DATASET_MODELS_SCHEMA.empty_table()
    if store.exists(layout.LINEAGE_SUMMARY):
        index = store.read_parquet(layout.RECORD_DATASETS)
        models = store.read_parquet(layout.DATASET_MODELS)
    if model:
        name, version = parse_ref("--model", model)
        hit = models.filter(pc.and_(pc.equal(models.column("model"), name),
                                    pc.equal(models.column("model_version"), version)))
        if hit.num_rows == 0:
            raise Fatal(f"no registered model {model} with a {DATASET_TAG} tag in the lineage index")
        dataset = f"{hit.column('dataset')[0].as_py()}@{hit.column('version')[0].as_py()}"
    if dataset:
        name, version = parse_ref("--dataset", dataset)
        rows = index.filter(pc.and_(pc.equal(index.column("dataset"), name),
                                    pc.equal(index.column("version"), version)))
        if rows.num_rows == 0:
            raise Fatal(f"no manifest for dataset {dataset}")
        n_records = rows.num_rows
    else:
        ids = record_ids or (record_ids_of_owner(store, owner) if owner else [])
        rows = index.filter(pc.is_in(index.column("record_id"), value_set=pa.array(ids, pa.string())))
        n_records = len(ids)
    held = rows.group_by(["dataset", "version"]).aggregate([("record_id", "count")]).to_pylist()
    datasets = [{"dataset": h["dataset"], "version": h["version"], "records": h["record_id_count"]} for h in held]
    keys = {(d["dataset"], d["version"]) for d in datasets}
    model_rows = [m for m in models.to_pylist() if (m["dataset"], m["version"]) in keys]
    return {"records": n_records,
            "record_ids": sorted(set(rows.column("record_id").to_pylist()))[:1000],
            "datasets": sorted(datasets, key=lambda d: (d["dataset"], d["version"])),
            "models": sorted(model_rows, key=lambda m: (m["model"], m["model_version"]))}
