"""Deletion flows: apply open deletion requests (soft: tombstoned, unreadable at once), then purge their bytes in one
batched pass over the partitions they touch (hard), with a report.

``custody delete`` acknowledges a request first (``tasks.deletion.requests.submit``), then runs
``apply_deletions_flow``; ``custody purge`` and the ``custody-purge`` deployment run ``purge_flow`` on its own, for
every request applied with ``--defer-purge`` (or by a deployment) since the last pass. Partitions are purged in
shares, as parallel tasks, two at a time (``purge_runner``: threads, or the configured Dask scheduler's workers),
inside ``tasks.deletion.batch.purge_pass``, which holds the apply lock throughout.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.progress import text_safe, track_futures
from flows.runtime import dask_task_runner
from tasks.batching import dealt
from tasks.config import get_settings
from tasks.deletion import apply, batch, requests
from tasks.storage import Store

apply_pending = task(text_safe(apply.apply_pending), name="apply-deletions", cache_policy=NONE, retries=1)
purge_targets = task(text_safe(batch.purge_targets), name="purge-partitions", cache_policy=NONE, retries=1)


PURGE_THREADS = 2  # partitions purged at once here
PURGE_TASKS = 8 * PURGE_THREADS  # a pass's shares of partitions, a task each


def purge_runner() -> Any:
    """The purge's task runner: the configured Dask scheduler's (the production profile, where the store is shared),
    else two threads here. A local purge's work is reading and rewriting Parquet, which Arrow does without the GIL:
    two threads purged a 1,000-request batch over 30 partitions in 21 s at 1.7 GB, where a local cluster of two
    processes took 26 s at 2.3 GB (its start and the batch's block list shipped to each task), and a one-record
    purge waited seconds for the cluster to start (one run each; bench/README.md, "Scale"). Two at a time either
    way: memory is bounded by partitions, not by the batch."""
    return dask_task_runner() if get_settings().dask_address else ThreadPoolTaskRunner(max_workers=PURGE_THREADS)


@flow(name="purge-deleted-bytes", task_runner=ThreadPoolTaskRunner(max_workers=PURGE_THREADS))  # a deployment's too
def purge_flow() -> dict[str, Any]:
    """Purge the bytes of every applied request not purged yet: the affected partitions in ``PURGE_TASKS`` tasks of
    nearly equal shares, two running at a time."""
    store = Store.from_settings()

    def run(work: batch.Plan) -> list[dict[str, int]]:
        shares = [purge_targets.submit(store, work.blocks, jobs) for jobs in dealt(work.jobs(), PURGE_TASKS)]
        return [report for share in track_futures(shares, "purge partitions") for report in share]

    done = batch.purge_pass(store, run)
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
    if purge and done:
        purge_flow.with_options(task_runner=purge_runner())()
        done = [requests.load(store, d["request_id"]) for d in done]
    rows = [{"request": d["request_id"], "selector": d["selector"]["kind"],
             "records": len(d["resolved"]["record_ids"]), "duplicates": d["resolved"]["counts"]["duplicates"],
             "partitions": len(d["applied"]["purge"]["targets"]), "purge": d["applied"]["purge"]["state"]}
            for d in done]
    if rows:
        create_table_artifact(key="deletions-applied", table=rows, description="Deletion requests applied")
    return done
