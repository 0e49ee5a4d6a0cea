"""What is in the store: sources, records, quarantine by reason, validation, datasets, models, deletions."""

from __future__ import annotations

from collections import Counter
from typing import Any

from tasks import ledger
from tasks.lineage import INDEX, manifest_keys
from tasks.provenance import CURRENT_KEY
from tasks.storage import Store


def store_status(store: Store) -> dict[str, Any]:
    records = store.read_parquets("records", ["source"])
    by_source = Counter(records.column("source").to_pylist()) if records.num_rows else Counter()
    quarantine = store.read_parquets("quarantine", ["source", "stage", "reasons"])
    reasons: Counter[str] = Counter()
    if quarantine.num_rows:
        for stage, rs in zip(quarantine.column("stage").to_pylist(), quarantine.column("reasons").to_pylist(),
                             strict=True):
            reasons.update(f"{stage}:{r}" for r in rs)
    datasets = [{"dataset": k.split("/")[1], "version": k.split("/")[2]} for k in manifest_keys(store)]
    models = []
    if store.exists(f"{INDEX}/dataset_models.parquet"):
        models = store.read_parquet(f"{INDEX}/dataset_models.parquet").to_pylist()
    requests = ledger.list_requests(store)
    validation = store.read_json(CURRENT_KEY) if store.exists(CURRENT_KEY) else None
    return {
        "store": store.url,
        "sources": [{"source": s, "records": by_source.get(s, 0)} for s in sorted(set(store.list_dirs("raw"))
                                                                                   | set(by_source))],
        "records": int(sum(by_source.values())),
        "quarantined": quarantine.num_rows,
        "quarantine_reasons": dict(sorted(reasons.items())),
        "validation": ({k: validation[k] for k in ("policy", "policy_hash", "checked", "passed")}
                       if validation else None),
        "datasets": datasets,
        "models": models,
        "tombstoned": len(ledger.tombstoned_ids(store)),
        "deletions": {"total": len(requests),
                      "open": [r["request_id"] for r in requests if r["status"] in ledger.OPEN],
                      "by_status": dict(Counter(r["status"] for r in requests))},
        "dedup": store.read_json("dedup/stats.json") if store.exists("dedup/stats.json") else None,
    }
