"""Training flow: fine-tune on a dataset version, track in MLflow, register, publish curves and metrics.

``custody train --dataset NAME@VERSION [--model minilm|tiny] [--lora-rank R | --full] [--shards S]``.
"""

from __future__ import annotations

import base64
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from flows.progress import text_safe
from tasks.storage import Store
from tasks.training import TrainConfig, learning_curves_png, run_training

train_task = task(text_safe(run_training), name="train", cache_policy=NONE)


@flow(name="train")
def train_flow(cfg: TrainConfig) -> dict[str, Any]:
    summary = train_task(Store.from_settings(), cfg)
    png = base64.b64encode(learning_curves_png(summary["history"])).decode()
    create_markdown_artifact(key="training-curves", description=f"{summary['ref']} on {summary['dataset']}",
                             markdown=f"# {summary['ref']} on {summary['dataset']}\n\n"
                                      f"![learning curves](data:image/png;base64,{png})\n\n{summary['model_card']}")
    create_table_artifact(key="training-metrics", table=[{"metric": k, "value": round(v, 4)}
                                                         for k, v in sorted(summary["metrics"].items())])
    return {k: v for k, v in summary.items() if k not in ("history", "model_card")}
