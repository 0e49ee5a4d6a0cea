"""TracIn influence (Pruthi et al. 2020) from the proxy's checkpoints, restricted to its last (only) layer.

For a linear softmax head the per-example gradient is ``(p - y) ⊗ [x, 1]``, so TracIn is exact and cheap:
``TracIn(z, z') = Σ_e lr_e (p_e(z) - y_z)·(p_e(z') - y_z') ([x_z, 1]·[x_z', 1])``. We report each training
example's influence on the held-out target set (summed; positive = helps it) and its self-influence
(``Σ_e lr_e ‖∇ℓ_e(z)‖²``; high = hard, atypical or mislabelled). ``projection_dim`` > 0 replaces the exact
dot products with a Gaussian random projection of the gradients (for heads too large to keep exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tasks import layout
from tasks.scoring import base, dynamics, proxy
from tasks.scoring.contract import Scored, Scorer, ScorerRun, Whole
from tasks.scoring.embeddings import NAME as EMBEDDINGS
from tasks.storage import Store

NAME = "influence"


@dataclass(frozen=True)
class InfluenceConfig:
    projection_dim: int = 0
    seed: int = 0


def load_checkpoints(data: bytes) -> tuple[list[np.ndarray], np.ndarray]:
    from safetensors.numpy import load

    tensors = load(data)
    lrs = tensors["lrs"].astype(np.float64)
    return [tensors[f"epoch{e}.weight"].astype(np.float64) for e in range(len(lrs))], lrs


def per_example_grads(w: np.ndarray, xb: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient factors: error ``(n, classes)`` and input ``(n, 385)``; the gradient is their outer product."""
    err = proxy.softmax(xb @ w.T) - np.eye(w.shape[0])[y]
    return err, xb


def tracin(weights: list[np.ndarray], lrs: np.ndarray, x: np.ndarray, y: np.ndarray, target: np.ndarray,
           cfg: InfluenceConfig) -> tuple[np.ndarray, np.ndarray]:
    """(influence on the target set, self-influence) for every row of ``x``."""
    xb = proxy.with_bias(x.astype(np.float64))
    n = len(xb)
    influence, self_inf = np.zeros(n), np.zeros(n)
    proj = None
    if cfg.projection_dim:
        d = weights[0].size
        proj = np.random.default_rng(cfg.seed).normal(size=(d, cfg.projection_dim)) / np.sqrt(cfg.projection_dim)
    for w, lr in zip(weights, lrs, strict=True):
        err, inp = per_example_grads(w, xb, y)
        if proj is None:
            target_sum = err[target].T @ inp[target]  # Σ_t (p_t - y_t) ⊗ x_t: (classes, 385)
            influence += lr * np.einsum("nc,cd,nd->n", err, target_sum, inp)
            self_inf += lr * (err**2).sum(1) * (inp**2).sum(1)
        else:
            grads = (err[:, :, None] * inp[:, None, :]).reshape(n, -1) @ proj  # (n, k)
            influence += lr * grads @ grads[target].sum(0)
            self_inf += lr * (grads**2).sum(1)
    return influence, self_inf


def _identity(store: Store, _cfg: InfluenceConfig) -> str:
    return f"tracin on {base.latest_run(store, dynamics.NAME)}"


def trace(run: ScorerRun) -> Scored:
    """TracIn for the latest dynamics run (same examples, same checkpoints)."""
    dyn_rid = base.latest_run(run.store, dynamics.NAME)
    dyn_cfg = run.store.read_json(layout.attribute_run(dynamics.NAME, dyn_rid))["config"]
    pcfg = dynamics.DynamicsConfig(**{**dyn_cfg, "labels": tuple(dyn_cfg["labels"])})
    data = proxy.load_data(run, pcfg)
    weights, lrs = load_checkpoints(run.store.read_bytes(layout.attribute_checkpoints(dynamics.NAME, dyn_rid)))
    influence, self_inf = tracin(weights, lrs, data.x, data.y, data.is_target, run.cfg)
    table = pa.table({"record_id": data.record_ids, "is_target": data.is_target,
                      "tracin_target": influence.astype(np.float32), "self_influence": self_inf.astype(np.float32)})
    return Scored({"records": len(data.record_ids), **data.sample_summary(),
                   "checkpoints": len(weights), "dynamics_run": dyn_rid},
                  (Whole(table, pcfg.source),))


SCORER = Scorer(NAME, InfluenceConfig, inputs=proxy.INPUTS, scope="store", needs=(EMBEDDINGS, dynamics.NAME),
                identity=_identity, store_step=trace)
run = SCORER.run
