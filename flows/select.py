"""Selection flow: a dataset version from the validated pool and its attributes, with a comparison artifact.

``custody select --name NAME --strategy S --budget B``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from flows.progress import text_safe
from tasks import selection
from tasks.selection.report import comparison
from tasks.storage import Store

select_task = task(text_safe(selection.select), name="select", cache_policy=NONE)


@flow(name="select")
def select_flow(cfg: selection.SelectionConfig) -> dict[str, Any]:
    store = Store.from_settings()
    summary = select_task(store, cfg)
    manifest, _ = selection.load_manifest(store, summary["ref"])
    markdown, _ = comparison(store, manifest, summary)
    create_markdown_artifact(key="selection", markdown=markdown, description=f"dataset {summary['ref']}")
    return summary
