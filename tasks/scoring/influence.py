"""TracIn influence (Pruthi et al. 2020) from the proxy's checkpoints, restricted to its last (only) layer.

For a linear softmax head the per-example gradient is ``(p - y) ⊗ [x, 1]``, so TracIn is exact and cheap:
``TracIn(z, z') = Σ_e lr_e (p_e(z) - y_z)·(p_e(z') - y_z') ([x_z, 1]·[x_z', 1])``. We report each training
example's influence on the held-out target set (summed; positive = helps it) and its self-influence
(``Σ_e lr_e ‖∇ℓ_e(z)‖²``; high = hard, atypical or mislabelled). ``projection_dim`` > 0 replaces the exact
dot products with a Gaussian random projection of the gradients (for heads too large to keep exact).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tasks.scoring import base, dynamics, proxy
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


def run(store: Store, cfg: InfluenceConfig) -> dict[str, Any]:
    """TracIn for the latest dynamics run (same examples, same checkpoints)."""
    dyn_rid = base.latest_run(store, dynamics.NAME)
    dyn_cfg = store.read_json(f"attributes/{dynamics.NAME}/{dyn_rid}/run.json")["config"]
    pcfg = dynamics.DynamicsConfig(**{**dyn_cfg, "labels": tuple(dyn_cfg["labels"])})
    rid = base.run_id(NAME, cfg, f"tracin on {dyn_rid}", store)
    if (done := base.cached_run(store, NAME, rid)) is not None:
        return done
    data = proxy.load_data(store, pcfg)
    weights, lrs = load_checkpoints(store.read_bytes(f"attributes/{dynamics.NAME}/{dyn_rid}/checkpoints.safetensors"))
    influence, self_inf = tracin(weights, lrs, data.x, data.y, data.is_target, cfg)
    table = pa.table({"record_id": data.record_ids, "is_target": data.is_target,
                      "tracin_target": influence.astype(np.float32), "self_influence": self_inf.astype(np.float32)})
    store.write_parquet(f"attributes/{NAME}/{rid}/source={pcfg.source}/all.parquet", table)
    summary = {"records": len(data.record_ids), "checkpoints": len(weights), "dynamics_run": dyn_rid}
    base.write_run(store, NAME, rid, cfg, f"tracin on {dyn_rid}", summary)
    return {"scorer": NAME, "run_id": rid, **summary}
