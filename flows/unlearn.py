"""Unlearning flow: a deletion request through unlearning, evaluation against the oracle, and certification.

``custody unlearn REQUEST_ID [--method auto|sisa|retrain|neggrad-plus|npo|scrub]``; the deployment triggered by
the event ``custody.deletion.requested`` runs the same flow with the request id from the event payload. The
sweep deployment finishes any request still open on a short schedule, so no request depends on one event being
delivered (Prefect drops an event that arrives before its automation is loaded) or on one run surviving.
"""

from __future__ import annotations

import base64
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from flows.progress import text_safe
from flows.transparency import after_certificate
from tasks import layout
from tasks.certificate import CERT_MD, SCORES_PNG, SUMMARY_FIELDS
from tasks.deletion import requests
from tasks.errors import CustodyError
from tasks.storage import Store
from tasks.unlearning import UnlearnConfig, unlearn_request

unlearn_task = task(text_safe(unlearn_request), name="unlearn-and-certify", cache_policy=NONE)


def certificate_markdown(store: Store, doc: dict[str, Any]) -> str:
    """The certificate's markdown with its plot inlined, for the Prefect UI."""
    text = store.read_bytes(layout.deletion_report(doc["request_id"], CERT_MD)).decode()
    plot = layout.deletion_report(doc["request_id"], SCORES_PNG)
    if store.exists(plot):
        png = base64.b64encode(store.read_bytes(plot)).decode()
        text = text.replace(f"({SCORES_PNG})", f"(data:image/png;base64,{png})")
    return text


@flow(name="unlearn", log_prints=True)
def unlearn_flow(request_id: str, method: str = "auto", retain_sample: int = 1000,
                 mink_sample: int = 500, oracle_seeds: int = 1, max_steps: int = 40) -> dict[str, Any]:
    """Apply the request if still open, unlearn every model that learned its records, certify (``oracle_seeds=2``
    also retrains the oracle with the next seed to measure the noise floor; ``max_steps`` caps an approximate
    method's optimizer steps)."""
    store = Store.from_settings()
    doc = unlearn_task(store, request_id, UnlearnConfig(method=method, retain_sample=retain_sample,
                                                        mink_sample=mink_sample, oracle_seeds=oracle_seeds,
                                                        max_steps=max_steps))
    after_certificate(store, doc)  # the public summaries of the versions it produced; the old ones superseded
    create_markdown_artifact(key="deletion-certificate", markdown=certificate_markdown(store, doc),
                             description=f"certificate for {request_id}")
    rows = [{k: m.get(k) for k in SUMMARY_FIELDS} for m in doc["certificate"]["models"]]
    if rows:
        create_table_artifact(key="unlearned-models", table=rows, description=f"models unlearned for {request_id}")
    return {"request_id": request_id, "status": doc["status"], "certificate": doc["certificate"]}


@flow(name="deletion-sweep", log_prints=True)
def sweep_flow(min_age_seconds: float = 300.0, method: str = "auto") -> list[dict[str, Any]]:
    """Unlearn and certify every request older than ``min_age_seconds`` that is not yet certified.

    The age leaves a fresh request to its event-triggered run; if both run, the unlearning lock serialises them
    and the second finds the request certified. A request that fails does not stop the others; the sweep then
    fails naming it, and the next sweep tries it again.
    """
    store = Store.from_settings()
    due = requests.unfinished(store, min_age_seconds)
    print(f"{len(due)} deletion request(s) not yet certified")
    rows = [{"request_id": d["request_id"], "was": d["status"], "now": _finish(d["request_id"], method)}
            for d in due]
    create_table_artifact(key="deletion-sweep", table=rows or [{"request_id": None, "was": None, "now": None}],
                          description=f"{len(rows)} open request(s) swept")
    failed = [r["request_id"] for r in rows if r["now"] != "certified"]
    if failed:
        raise CustodyError(f"the sweep could not finish {failed}; see their unlearn flow runs")
    return rows


def _finish(request_id: str, method: str) -> str:
    """The request's status after its unlearn sub-flow, or ``failed: <error>``."""
    state = unlearn_flow(request_id=request_id, method=method, return_state=True)
    return state.result()["status"] if state.is_completed() else f"failed: {state.message}"
