"""Deletion flow: resolve and apply open deletion requests (tombstones + physical purge), with a report.

``custody delete`` acknowledges a request first (``tasks.deletion.requests.submit``), then runs this flow.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from flows.progress import text_safe
from tasks.deletion import apply
from tasks.storage import Store

process_pending = task(text_safe(apply.process_pending), name="apply-deletions", cache_policy=NONE, retries=1)


@flow(name="apply-deletions")
def apply_deletions_flow(request_id: str | None = None) -> list[dict[str, Any]]:
    """Apply every open deletion request (or just ``request_id``) exactly once."""
    done = process_pending(Store.from_settings(), request_id)
    rows = [{"request": d["request_id"], "selector": d["selector"]["kind"],
             "records": len(d["resolved"]["record_ids"]), "duplicates": d["resolved"]["counts"]["duplicates"],
             **d["applied"]} for d in done]
    if rows:
        create_table_artifact(key="deletions-applied", table=rows, description="Deletion requests applied")
    return done
