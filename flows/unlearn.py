"""Unlearning flow: a deletion request through unlearning, evaluation against the oracle, and certification.

``custody unlearn REQUEST_ID [--method auto|sisa|retrain|neggrad-plus|scrub]``; the deployment triggered by
the event ``custody.deletion.requested`` runs the same flow with the request id from the event payload.
"""

from __future__ import annotations

import base64
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from tasks.storage import Store
from tasks.unlearn import UnlearnConfig, unlearn_request

unlearn_task = task(unlearn_request, name="unlearn-and-certify", cache_policy=NONE)


def certificate_markdown(store: Store, doc: dict[str, Any]) -> str:
    """The certificate's markdown with its plot inlined, for the Prefect UI."""
    prefix = f"reports/deletions/{doc['request_id']}"
    text = store.read_bytes(f"{prefix}/certificate.md").decode()
    if store.exists(f"{prefix}/forget_losses.png"):
        png = base64.b64encode(store.read_bytes(f"{prefix}/forget_losses.png")).decode()
        text = text.replace("(forget_losses.png)", f"(data:image/png;base64,{png})")
    return text


@flow(name="unlearn", log_prints=True)
def unlearn_flow(request_id: str, method: str = "auto") -> dict[str, Any]:
    """Apply the request if still open, unlearn every model that learned its records, certify."""
    store = Store.from_settings()
    doc = unlearn_task(store, request_id, UnlearnConfig(method=method))
    create_markdown_artifact(key="deletion-certificate", markdown=certificate_markdown(store, doc),
                             description=f"certificate for {request_id}")
    rows = [{k: m.get(k) for k in ("source", "action", "final", "final_method", "fell_back")}
            for m in doc["certificate"]["models"]]
    if rows:
        create_table_artifact(key="unlearned-models", table=rows, description=f"models unlearned for {request_id}")
    return {"request_id": request_id, "status": doc["status"], "certificate": doc["certificate"]}
