"""Evaluation flow: a registered model's utility and its membership-inference baseline, logged to MLflow.

The pipeline ends here. It measures what the unlearning gate later compares against: how well the model
tells its own training records from held-out ones (loss and Min-K%-style attacks on a train sample vs test).
The gate itself — a candidate against the retrained oracle — runs inside ``flows.unlearn``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from flows.progress import text_safe
from tasks.evaluation import evaluate_version
from tasks.storage import Store

evaluate_task = task(text_safe(evaluate_version), name="evaluate", cache_policy=NONE)


@flow(name="evaluate")
def evaluate_flow(model_ref: str, sample: int = 200) -> dict[str, Any]:
    result = evaluate_task(Store.from_settings(), model_ref, sample)
    create_table_artifact(key="model-evaluation", description=f"{model_ref}: utility and membership baseline",
                          table=[{"metric": k, "value": round(v, 4)} for k, v in sorted(result.items())
                                 if isinstance(v, float)])
    return result
