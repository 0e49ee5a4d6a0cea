"""Transparency flows: a model version's public summary of training content, as a Prefect artifact too.

``custody summary --model NAME@VERSION`` runs ``summary_flow``. ``after_certificate`` is what the unlearning flow
calls once a deletion request is certified: every version the request produced gets its summary, and the summary
of the version it replaced is kept, marked superseded. The work is ``tasks.transparency``; here are the artifacts
(Markdown of counts, names and codes: no record text).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from flows.progress import text_safe
from flows.runtime import ensure_prefect_api
from tasks import layout
from tasks.model_registry import split_ref
from tasks.storage import Store
from tasks.transparency import refresh_after_certificate, write_summary
from tasks.transparency.publish import SUMMARY_MD

ARTIFACT = "training-content-summary"
summary_task = task(text_safe(write_summary), name="public-summary", cache_policy=NONE)
refresh_task = task(text_safe(refresh_after_certificate), name="refresh-public-summaries", cache_policy=NONE)


def _artifact(store: Store, result: dict[str, Any]) -> None:
    markdown = store.read_bytes(layout.model_summary(*split_ref(result["model"]), SUMMARY_MD)).decode()
    create_markdown_artifact(key=ARTIFACT, markdown=markdown, description=f"public summary of {result['model']}")


@flow(name="public-summary")
def summary_flow(model_ref: str, provider: str | None = None) -> dict[str, Any]:
    """Write the public summary of ``model_ref`` (JSON, Markdown, MLflow) and publish it as an artifact."""
    store = Store.from_settings()
    result = summary_task(store, model_ref, provider)
    _artifact(store, result)
    return result


def after_certificate(store: Store, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Inside the unlearning flow, once ``request`` (its ledger document) is certified: new summaries for the
    versions it produced, their predecessors' superseded; each new one published as an artifact."""
    results = refresh_task(store, request)
    for result in results:
        _artifact(store, result)
    return results


def run_summary(model_ref: str, provider: str | None = None) -> dict[str, Any]:
    """For the CLI: the summary flow on the configured Prefect API (a temporary local server if none)."""
    ensure_prefect_api()
    return summary_flow(model_ref, provider)
