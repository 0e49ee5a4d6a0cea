"""Canary drill: delete the current audit canaries through the whole chain, then plant the next generation.

``custody drill`` runs it once; the ``custody-drill`` deployment (prefect.yaml, ``custody server``) runs it weekly,
so a team sees unlearning still works before a real request arrives. ``canaries_flow`` plants a live generation
(``tasks.canaries``) when there is none and ingests and validates it like any delivery; ``custody select
--canaries N``, the pipeline and the drill use it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from flows.ingest import ingest_flow
from flows.progress import text_safe
from flows.unlearn import unlearn_flow
from flows.validate import validate_flow
from tasks import canaries
from tasks.config import get_settings
from tasks.deletion import requests
from tasks.deletion.verify import verify_deletion
from tasks.ingest import IngestConfig
from tasks.storage import Store

plant_task = task(text_safe(canaries.plant), name="plant-canaries", cache_policy=NONE)
target_task = task(text_safe(canaries.drill_target), name="drill-target", cache_policy=NONE)
file_task = task(text_safe(requests.submit), name="file-deletion", cache_policy=NONE)
verify_task = task(text_safe(verify_deletion), name="verify-deletion", cache_policy=NONE)


@flow(name="canaries")
def canaries_flow(labels: list[str], count: int = canaries.DEFAULT_COUNT) -> dict[str, Any]:
    """A live generation of canaries for ``labels``, ingested and validated under the store's current policy."""
    store = Store.from_settings()
    planted = plant_task(store, labels, count)
    ingest_flow(sources=[canaries.SOURCE], cfg=IngestConfig.from_settings(get_settings()))
    policy = canaries.current_policy(store)
    if policy is not None:  # before any validation the pipeline's own validation will take them in
        validate_flow(policy=policy)
    return {**planted, "live": canaries.live(store).num_rows}


@flow(name="drill", log_prints=True)
def drill_flow(method: str = "auto", retain_sample: int = 1000, mink_sample: int = 500) -> dict[str, Any]:
    """Delete the current canary owner, unlearn it from every model (the ``unlearn`` flow, as for a real request),
    verify the deletion, plant the next generation; fails, filing nothing, when no live model carries canaries."""
    store, settings = Store.from_settings(), get_settings()
    target = target_task(store, settings.mlflow_tracking_uri)
    request = file_task(store, "owner", [target["owner"]], canaries.DRILL_REASON)
    print(f"drill: {request['request_id']} deletes generation {target['generation']} from {target['models']}")
    unlearn_flow(request["request_id"], method, retain_sample, mink_sample)
    verification = verify_task(store, settings, request["request_id"])
    planted = canaries_flow(target["labels"], target["count"])
    report = canaries.drill_report(store, target, request["request_id"], verification, planted)
    create_markdown_artifact(key="canary-drill", description=f"drill {request['request_id']}", markdown="\n".join([
        f"# Canary drill {request['request_id']}", "",
        f"- generation {report['generation']} ({report['owner']}), in {', '.join(report['models'])}",
        f"- status **{report['status']}**, verdict: {report['verdict']}",
        f"- verify-deletion: {'clean' if report['verification']['clean'] else 'LEFTOVERS'}",
        f"- next generation {planted['generation']} planted ({planted['live']} live)",
        f"- certificate: {report['certificate']}"]))
    return report
