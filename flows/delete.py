"""Deletion flows: apply open deletion requests (soft: tombstoned, unreadable at once), then purge their bytes in one
batched pass over the partitions they touch (hard), with a report.

``custody delete`` acknowledges a request first (``tasks.deletion.requests.submit``), then runs
``apply_deletions_flow``; ``custody purge`` and the ``custody-purge`` deployment run ``purge_flow`` on its own, for
every request applied with ``--defer-purge`` (or by a deployment) since the last pass. Partitions are purged as
parallel tasks (Dask when the launcher gives the flow its runner) inside ``tasks.deletion.batch.purge_pass``, which
holds the apply lock throughout.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.progress import text_safe, track_futures
from tasks.deletion import apply, batch, requests
from tasks.storage import Store

apply_pending = task(text_safe(apply.apply_pending), name="apply-deletions", cache_policy=NONE, retries=1)
purge_target = task(text_safe(batch.purge_target), name="purge-partition", cache_policy=NONE, retries=1)


@flow(name="purge-deleted-bytes")
def purge_flow() -> dict[str, Any]:
    """Purge the bytes of every applied request not purged yet, one task per affected partition."""
    store = Store.from_settings()
    done = batch.purge_pass(store, lambda work: track_futures(
        [purge_target.submit(store, work.blocks, t, files) for t, files in work.jobs()], "purge partitions"))
    if not done:
        return {"requests": []}
    purge = done[0]["applied"]["purge"]
    create_table_artifact(key="deletions-purged", table=[
        {"request": d["request_id"], "purged_at": d["applied"]["purge"]["purged_at"]} for d in done],
        description=f"Bytes purged in one pass: {purge['targets_rewritten']} partition(s) rewritten")
    counts = ("targets_rewritten", "rows_removed", "raw_rows_removed", "quarantine_rows_removed", "pass_seconds")
    return {"requests": [d["request_id"] for d in done], "purged_at": purge["purged_at"],
            **{k: purge.get(k, 0) for k in counts}}


@flow(name="apply-deletions")
def apply_deletions_flow(request_id: str | None = None, purge: bool = True) -> list[dict[str, Any]]:
    """Apply every open deletion request (or just ``request_id``) exactly once; then, unless ``purge`` is off,
    purge the bytes of every applied request."""
    store = Store.from_settings()
    done = apply_pending(store, request_id)
    if purge and done:  # two partitions at a time: memory stays bounded by partitions, not by the batch
        purge_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=2))()
        done = [requests.load(store, d["request_id"]) for d in done]
    rows = [{"request": d["request_id"], "selector": d["selector"]["kind"],
             "records": len(d["resolved"]["record_ids"]), "duplicates": d["resolved"]["counts"]["duplicates"],
             "partitions": len(d["applied"]["purge"]["targets"]), "purge": d["applied"]["purge"]["state"]}
            for d in done]
    if rows:
        create_table_artifact(key="deletions-applied", table=rows, description="Deletion requests applied")
    return done
