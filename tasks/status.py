"""What is in the store: sources, records, quarantine by reason, validation, datasets, models, deletions."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tasks import layout
from tasks.deletion.requests import OPEN, list_requests, purge_overdue, purge_pending
from tasks.deletion.tombstones import tombstoned_ids
from tasks.lineage import manifest_keys
from tasks.sources import list_sources
from tasks.storage import Store


def _quarantine_reasons(store: Store) -> tuple[int, dict[str, int]]:
    """Quarantined rows, and how many per ``stage:reason``."""
    quarantine = store.read_parquets(layout.quarantine_dir(), ["source", "stage", "reasons"])
    reasons: Counter[str] = Counter()
    if quarantine.num_rows:
        for stage, rs in zip(quarantine.column("stage").to_pylist(), quarantine.column("reasons").to_pylist(),
                             strict=True):
            reasons.update(f"{stage}:{r}" for r in rs)
    return quarantine.num_rows, dict(sorted(reasons.items()))


def _deletions(store: Store) -> dict[str, Any]:
    requests = list_requests(store)
    return {"total": len(requests), "open": [r["request_id"] for r in requests if r["status"] in OPEN],
            "by_status": dict(Counter(r["status"] for r in requests)),
            "purge_pending": [r["request_id"] for r in requests if purge_pending(r)],
            "purge_overdue": [r["request_id"] for r in requests if purge_overdue(r)]}


def _optional_json(store: Store, key: str) -> Any:
    return store.read_json(key) if store.exists(key) else None


def store_status(store: Store) -> dict[str, Any]:
    """Counts and names for ``custody status``: read-only, small files and single columns only."""
    records = store.read_parquets(layout.records_dir(), ["source"])
    by_source = Counter(records.column("source").to_pylist()) if records.num_rows else Counter()
    quarantined, reasons = _quarantine_reasons(store)
    versions = [layout.dataset_of(k) for k in manifest_keys(store)]
    datasets = [{"dataset": name, "version": version} for name, version in versions]
    models = store.read_parquet(layout.DATASET_MODELS).to_pylist() if store.exists(layout.DATASET_MODELS) else []
    validation = _optional_json(store, layout.CURRENT_POLICY)
    return {
        "store": store.url,
        "sources": [{"source": s, "records": by_source.get(s, 0)}
                    for s in sorted(set(list_sources(store)) | set(by_source))],
        "records": int(sum(by_source.values())),
        "quarantined": quarantined,
        "quarantine_reasons": reasons,
        "validation": ({k: validation[k] for k in ("policy", "policy_hash", "checked", "passed")}
                       if validation else None),
        "datasets": datasets,
        "models": models,
        "tombstoned": len(tombstoned_ids(store)),
        "deletions": _deletions(store),
        "dedup": _optional_json(store, layout.DEDUP_STATS),
    }
