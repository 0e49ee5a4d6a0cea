"""Our TracIn (``tasks.scoring.influence.tracin``) against captum's ``TracInCP`` on the same checkpoints.

Setup: ``--train`` (600) + ``--target`` (50) Rotten Tomatoes snippets labelled fresh/rotten (a fixed random
sample, seed ``--seed``), embedded with our MiniLM (``tasks.scoring.embeddings.embed``, 384-d, CPU) — or random
unit vectors with ``--random``. The proxy is trained with ``tasks.scoring.proxy.train(x, y, train_mask,
ProxyConfig(epochs=4), 2)``, the target rows held out, and gives one checkpoint and learning rate per epoch.

* ``ours``: ``tracin(weights, lrs, x, y, target_mask, InfluenceConfig())``, exact, float64. Its first output is
  each row's influence on the target set (summed over the targets), its second the self-influence.
* ``captum``: ``captum.influence.TracInCP`` on an ``nn.Linear(384, 2)`` per checkpoint (``weight = w[:, :-1]``,
  ``bias = w[:, -1]``), saved with ``torch.save`` to a temp dir. ``checkpoints_load_func`` loads the weights and
  returns that epoch's learning rate, so captum sums ``lr_e * grad_e(train) . grad_e(test)`` as we do. Captum's
  ``train_dataset`` is our 600 training rows, and the ``inputs`` of ``influence`` are the 50 target rows.
  ``influence`` returns a ``(n_target, n_train)`` matrix, where ``[i, j]`` is the influence of train ``j`` on
  test ``i``, with the same sign as ours (positive = a step on ``j`` lowers the loss on ``i``). We sum it over
  axis 0 and check the result against ``aggregate=True``. ``self_influence()`` with no inputs gives the self
  influence of the training rows. The loss is ``CrossEntropyLoss``, so each example's loss is cross-entropy
  on a batch of 1. Three variants: float32 with ``reduction="none"`` (captum's per-example jacobian path),
  float32 with ``reduction="sum"`` and ``sample_wise_grads_per_batch=True`` (its hook path), and float64
  ``reduction="none"``. A fourth run, ``control_captum_f32_lr1``, is a control and not a reference: its load
  function returns a learning rate of 1 for every checkpoint, which shows how far a wrong schedule moves the
  metrics.
* ``ours, projected``: ``InfluenceConfig(projection_dim=256, seed=s)`` for ``--proj-seeds`` seeds, against
  our exact scores. The table gives the mean Spearman and Pearson over the seeds, the median of the max
  relative difference and the mean of the scaled max difference.

Metrics on the training rows: Spearman correlation (``scipy.stats.spearmanr``) and two relative differences.
``max_rel_diff`` is ``max_i |a_i - b_i| / |b_i|`` over the rows with ``|b_i| >= 1e-3 * max |b|``, because
influence changes sign and rows near zero would make the ratio meaningless. ``max_abs_diff_over_scale`` is
``max_i |a_i - b_i| / max |b|``. Target: Spearman >= 0.9 against captum.

captum goes into the project's venv with ``--no-deps``. ``pip install captum --dry-run`` showed that it changes
no installed package::

    .venv/bin/pip install --no-deps captum==0.9.0

Run from the repository root (about 30 s, most of it loading MiniLM)::

    .venv/bin/python bench/tracin_reference.py                 # writes bench/results/tracin_reference.json
    .venv/bin/python bench/tracin_reference.py --random --train 2000 --target 100 --out /tmp/tracin.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from tasks.sample import rotten_tomatoes_frame
from tasks.scoring.embeddings import EmbeddingConfig, embed
from tasks.scoring.influence import InfluenceConfig, tracin
from tasks.scoring.proxy import ProxyConfig, train

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LABELS = ("fresh", "rotten")
TARGET_SPEARMAN = 0.9
console = Console(width=max(Console().width, 132))


def load_problem(n_train: int, n_target: int, seed: int, random_x: bool) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(x, y, texts)``: the last ``n_target`` rows are the target set."""
    df = rotten_tomatoes_frame()
    df = df[df["category"].isin(LABELS)]
    df = df[df["text"].fillna("").astype(str).str.strip() != ""]
    df = df.sample(n=n_train + n_target, random_state=seed)
    texts = df["text"].astype(str).tolist()
    y = np.array([LABELS.index(c) for c in df["category"]], dtype=np.int64)
    if random_x:
        x = np.random.default_rng(seed).normal(size=(len(texts), 384))
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    else:
        x = embed(texts, EmbeddingConfig(), device="cpu")
    return x, y, texts


def compare(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Spearman and relative differences of ``ours`` against ``ref`` (both 1-d)."""
    diff = np.abs(ours - ref)
    scale = float(np.abs(ref).max())
    keep = np.abs(ref) >= 1e-3 * scale
    return {
        "spearman": float(spearmanr(ours, ref).statistic),
        "pearson": float(np.corrcoef(ours, ref)[0, 1]),
        "max_rel_diff": float((diff[keep] / np.abs(ref[keep])).max()),
        "max_abs_diff_over_scale": float(diff.max() / scale),
        "rows_in_rel_diff": int(keep.sum()),
    }


def save_checkpoints(weights: list[np.ndarray], lrs: list[float], folder: Path) -> list[str]:
    """One ``nn.Linear`` state dict (plus its learning rate) per epoch, float64 on disk."""
    paths = []
    for e, (w, lr) in enumerate(zip(weights, lrs, strict=True)):
        path = folder / f"epoch{e}.pt"
        torch.save({"weight": torch.from_numpy(w[:, :-1].copy()), "bias": torch.from_numpy(w[:, -1].copy()),
                    "lr": float(lr)}, path)
        paths.append(str(path))
    return paths


def loader_for(dtype: torch.dtype, lr_override: float | None) -> Callable[[torch.nn.Module, str], float]:
    def load(model: torch.nn.Module, path: str) -> float:
        state = torch.load(path, weights_only=True)
        model.load_state_dict({"weight": state["weight"].to(dtype), "bias": state["bias"].to(dtype)})
        return float(state["lr"]) if lr_override is None else lr_override
    return load


def run_captum(x: np.ndarray, y: np.ndarray, target: np.ndarray, paths: list[str], dtype: torch.dtype,
               sample_wise: bool, lr_override: float | None = None) -> dict[str, Any]:
    """captum's TracInCP: target-set influence (row sum and ``aggregate=True``) and self-influence of the
    training rows."""
    import warnings

    from captum.influence import TracInCP
    from torch.utils.data import TensorDataset

    model = torch.nn.Linear(x.shape[1], int(y.max()) + 1).to(dtype)
    xt, yt = torch.from_numpy(x).to(dtype), torch.from_numpy(y)
    train_ds = TensorDataset(xt[~target], yt[~target])
    loss = torch.nn.CrossEntropyLoss(reduction="sum" if sample_wise else "none")
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    t0 = time.perf_counter()
    tracer = TracInCP(model, train_ds, checkpoints=paths, checkpoints_load_func=loader_for(dtype, lr_override),
                      loss_fn=loss, batch_size=100, sample_wise_grads_per_batch=sample_wise)
    matrix = tracer.influence((xt[target], yt[target]))  # (n_target, n_train): [i, j] = train j on test i
    t1 = time.perf_counter()
    aggregate = tracer.influence((xt[target], yt[target]), aggregate=True)  # (1, n_train)
    t2 = time.perf_counter()
    self_inf = tracer.self_influence()  # training rows
    t3 = time.perf_counter()
    return {"target": matrix.sum(0).double().numpy(), "aggregate": aggregate[0].double().numpy(),
            "self": self_inf.double().numpy(), "matrix_shape": list(matrix.shape),
            "seconds": {"influence_matrix": t1 - t0, "influence_aggregate": t2 - t1, "self_influence": t3 - t2}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=600)
    p.add_argument("--target", type=int, default=50)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random", action="store_true", help="random unit vectors instead of MiniLM embeddings")
    p.add_argument("--projection-dim", type=int, default=256)
    p.add_argument("--proj-seeds", type=int, default=5)
    p.add_argument("--out", type=Path, default=RESULTS_DIR / "tracin_reference.json")
    args = p.parse_args(argv)
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    x, y, _ = load_problem(args.train, args.target, args.seed, args.random)
    load_s = time.perf_counter() - t0
    target = np.zeros(len(x), dtype=bool)
    target[args.train:] = True
    pcfg = ProxyConfig(epochs=args.epochs)
    run = train(x, y, ~target, pcfg, 2)
    lrs = np.array(run.lrs)
    train_acc = float((run.logits[-1][~target].argmax(1) == y[~target]).mean())
    target_acc = float((run.logits[-1][target].argmax(1) == y[target]).mean())

    t0 = time.perf_counter()
    ours_target, ours_self = tracin(run.weights, lrs, x, y, target, InfluenceConfig())
    ours_s = time.perf_counter() - t0
    ours_target, ours_self = ours_target[~target], ours_self[~target]

    # name: (dtype, sample-wise hook path, learning rate override). The last one is a control, not a reference:
    # it shows how far a wrong learning-rate schedule moves the scores.
    variants: dict[str, tuple[torch.dtype, bool, float | None]] = {
        "captum_f32": (torch.float32, False, None), "captum_f32_samplewise": (torch.float32, True, None),
        "captum_f64": (torch.float64, False, None), "control_captum_f32_lr1": (torch.float32, False, 1.0)}
    captum_results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tracin_ref_") as tmp:
        paths = save_checkpoints(run.weights, run.lrs, Path(tmp))
        for name, (dtype, sample_wise, lr_override) in variants.items():
            res = run_captum(x, y, target, paths, dtype, sample_wise, lr_override)
            captum_results[name] = {
                "dtype": str(dtype), "loss_reduction": "sum" if sample_wise else "none",
                "learning_rates": "ours" if lr_override is None else f"all {lr_override} (control)",
                "sample_wise_grads_per_batch": sample_wise, "influence_matrix_shape": res["matrix_shape"],
                "seconds": res["seconds"],
                "target_influence": compare(ours_target, res["target"]),
                "self_influence": compare(ours_self, res["self"]),
                "row_sum_vs_aggregate_max_abs_diff_over_scale":
                    float(np.abs(res["target"] - res["aggregate"]).max() / np.abs(res["aggregate"]).max()),
            }

    projected = []
    for s in range(args.proj_seeds):
        t0 = time.perf_counter()
        p_target, p_self = tracin(run.weights, lrs, x, y, target,
                                  InfluenceConfig(projection_dim=args.projection_dim, seed=s))
        projected.append({"seed": s, "seconds": time.perf_counter() - t0,
                          "target_influence": compare(p_target[~target], ours_target),
                          "self_influence": compare(p_self[~target], ours_self)})

    def summary(key: str) -> dict[str, float]:
        rho = [r[key]["spearman"] for r in projected]
        rel = [r[key]["max_abs_diff_over_scale"] for r in projected]
        return {"spearman_mean": float(np.mean(rho)), "spearman_min": float(np.min(rho)),
                "pearson_mean": float(np.mean([r[key]["pearson"] for r in projected])),
                "max_rel_diff_median": float(np.median([r[key]["max_rel_diff"] for r in projected])),
                "max_abs_diff_over_scale_mean": float(np.mean(rel))}

    primary = captum_results["captum_f32"]
    met = {k: primary[k]["spearman"] >= TARGET_SPEARMAN for k in ("target_influence", "self_influence")}
    result = {
        "benchmark": "tracin_reference",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                    "torch_threads": torch.get_num_threads()},
        "versions": {pkg: version(pkg) for pkg in ("captum", "torch", "numpy", "scipy")},
        "setup": {"features": "random unit vectors" if args.random else "MiniLM (tasks.scoring.embeddings.embed)",
                  "corpus": "Rotten Tomatoes fresh/rotten (tasks.sample.rotten_tomatoes_frame)",
                  "n_train": args.train, "n_target": args.target, "dim": int(x.shape[1]), "seed": args.seed,
                  "proxy_config": {"epochs": pcfg.epochs, "lr": pcfg.lr, "batch_size": pcfg.batch_size},
                  "lrs": run.lrs, "train_accuracy": train_acc, "target_accuracy": target_acc,
                  "data_seconds": load_s,
                  "captum_orientation": "influence(inputs=target) -> (n_target, n_train), summed over axis 0; "
                                        "self_influence() over train_dataset = our training rows"},
        "ours_exact_seconds": ours_s,
        "scale": {"target_influence_max_abs": float(np.abs(ours_target).max()),
                  "self_influence_max": float(ours_self.max()),
                  "target_influence_share_negative": float((ours_target < 0).mean())},
        "captum": captum_results,
        "projection": {"projection_dim": args.projection_dim, "per_seed": projected,
                       "target_influence": summary("target_influence"), "self_influence": summary("self_influence")},
        "target": {"spearman_min": TARGET_SPEARMAN, "against": "captum_f32", "met": met},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    table = Table(title=f"TracIn: ours vs captum TracInCP ({args.train} train, {args.target} target, "
                        f"{len(run.weights)} checkpoints)")
    for col in ("comparison", "score", "Spearman", "Pearson", "max rel diff", "max |diff| / scale"):
        table.add_column(col, justify="left" if col in ("comparison", "score") else "right", no_wrap=True)
    for name, res in captum_results.items():
        for key in ("target_influence", "self_influence"):
            m = res[key]
            table.add_row(f"ours vs {name}", key.removesuffix("_influence"), f"{m['spearman']:.6f}",
                          f"{m['pearson']:.6f}", f"{m['max_rel_diff']:.2e}", f"{m['max_abs_diff_over_scale']:.2e}")
    for key in ("target_influence", "self_influence"):
        sm = result["projection"][key]
        table.add_row(f"ours k={args.projection_dim} projection vs exact, {args.proj_seeds} seeds",
                      key.removesuffix("_influence"),
                      f"{sm['spearman_mean']:.4f} (min {sm['spearman_min']:.4f})", f"{sm['pearson_mean']:.4f}",
                      f"{sm['max_rel_diff_median']:.2e}", f"{sm['max_abs_diff_over_scale_mean']:.2e}")
    console.print(table)
    console.print(f"target Spearman >= {TARGET_SPEARMAN} vs captum_f32: {met}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
