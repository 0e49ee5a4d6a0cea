"""Training dynamics of the proxy classifier: per-example loss, EL2N and Area Under the Margin (AUM).

Mislabelled or ambiguous examples are learned late or never: high final loss, a high EL2N (the norm of the
error vector, Paul et al. 2021) and a negative AUM (the margin of the assigned label averaged over epochs,
Pleiss et al. 2020). The proxy's checkpoints are stored as safetensors beside the attributes for TracIn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tasks import layout
from tasks.scoring import proxy
from tasks.scoring.contract import Scored, Scorer, ScorerRun, Whole
from tasks.scoring.embeddings import NAME as EMBEDDINGS

NAME = "dynamics"
MODEL = "linear head on all-MiniLM-L6-v2 embeddings"


@dataclass(frozen=True)
class DynamicsConfig(proxy.ProxyConfig):
    """Proxy training on a labelled source; see ``ProxyConfig``."""


def dynamics(logits: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    """Signals from per-epoch logits ``(epochs, n, classes)`` and labels ``(n,)``."""
    probs = proxy.softmax(logits)
    n, classes = logits.shape[1], logits.shape[2]
    onehot = np.eye(classes)[y]
    rows = np.arange(n)
    losses = -np.log(np.clip(probs[:, rows, y], 1e-12, None))  # (epochs, n)
    el2n = np.linalg.norm(probs - onehot, axis=-1)  # (epochs, n)
    assigned = logits[:, rows, y]
    others = np.where(onehot.astype(bool)[None], -np.inf, logits).max(-1)
    margins = assigned - others  # (epochs, n)
    return {"loss": losses[-1], "mean_loss": losses.mean(0), "el2n": el2n[: max(1, len(el2n) // 2)].mean(0),
            "aum": margins.mean(0), "forgetting": (np.diff((margins > 0).astype(int), axis=0) < 0).sum(0)}


def train_and_measure(run: ScorerRun) -> Scored:
    """Train the proxy; its per-example dynamics, and its checkpoints as safetensors beside them (for TracIn)."""
    from safetensors.numpy import save

    cfg: DynamicsConfig = run.cfg
    data = proxy.load_data(run, cfg)
    result = proxy.train(data.x, data.y, ~data.is_target, cfg, len(cfg.labels))
    signals = dynamics(result.logits, data.y)
    table = pa.table({"record_id": data.record_ids, "label": [cfg.labels[i] for i in data.y],
                      "is_target": data.is_target, **{k: v.astype(np.float32) for k, v in signals.items()}})
    run.store.write_bytes(layout.attribute_checkpoints(NAME, run.run_id), save(proxy.checkpoint_tensors(result)))
    accuracy = float((result.logits[-1].argmax(-1) == data.y)[data.is_target].mean()) if data.is_target.any() else None
    return Scored({"records": len(data.record_ids), **data.sample_summary(),
                   "target_records": int(data.is_target.sum()),
                   "target_accuracy": accuracy}, (Whole(table, cfg.source),))


SCORER = Scorer(NAME, DynamicsConfig, inputs=proxy.INPUTS, scope="store", needs=(EMBEDDINGS,),
                identity=lambda store, _cfg: proxy.embeddings_identity(store, MODEL), store_step=train_and_measure)
run = SCORER.run
