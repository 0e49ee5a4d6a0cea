"""Training shards: what SISA sharding costs in test accuracy and training throughput, against the unsharded model.

SISA (``TrainConfig(shards=S)``) trains one model per manifest shard and averages their probabilities, so a
deletion retrains only the shards holding the deleted records. Each shard model sees ~1/S of the data, so the
ensemble may be worse than one model on everything; this bench measures by how much, and what sharding does to
training time, for S = 1 (the unsharded model), 4 and 8. It also checks the issue's CPU target: the demo-sized
training (about 5k examples, MiniLM + LoRA, sequence length 64, 2 epochs) in under 5 minutes on 2 cores.

Data: a store under ``--home`` (default ``/tmp/custody-bench-cache/training-shards``) where the bundled corpora
were sampled, Rotten Tomatoes ingested and validated under the ``research`` policy. If it has no validation yet,
the bench runs ``custody sample``, ``custody ingest --source rotten_tomatoes`` and ``custody validate --policy
research`` there first (~1 minute, once). Each S selects its dataset version with ``tasks.selection.select``:
``strategy="random"``, ``budget=--budget`` train records (5,000), labels fresh/rotten, ``shards=S``. The split of
a record and the random pick do not depend on S, so every S trains on the same 5,000 records and is scored on the
same validation and test sets; only the shard column differs. Shards are assigned by owner (100 simulated
contributors), so shard sizes differ and are recorded.

Training: ``tasks.training.load_splits`` + ``train_models`` with ``TrainConfig(model="minilm")`` (LoRA rank 8,
``--epochs`` 2, ``--max-length`` 64, batch 32, lr 2e-3, seed 0), i.e. what ``custody train`` runs, without MLflow.
Shards train one after another, as in the platform. ``train_models`` evaluates each shard model on the
validation split after every epoch (1,257 records); that is part of its wall time, so the bench wraps
``tasks.training.build_model`` and ``predict_proba`` with timers (bench-local, unchanged behaviour) to split the
wall time into model building, per-epoch validation and fitting proper. Two throughputs are reported:

* ``examples_per_second``: examples processed (records x epochs, summed over shards) / ``train_models`` wall time,
  the number ``tasks.training.run_training`` logs;
* ``fit_examples_per_second``: the same examples / the wall time without model building and validation.

Evaluation: each shard model predicts the test split once; the ensemble is the mean of their probabilities
(exactly what ``predict_proba(models, ...)`` computes), scored with ``tasks.training.metrics`` (accuracy, macro
F1). Per-shard test accuracies are recorded too.

Threads: the measured runs use ``--threads 1`` by default. The machine has 2 cores and is shared with other work
(tests, other benchmarks); with torch's default of one thread per core (what ``custody train`` gets), OpenMP
barriers wait whenever another process holds one of the cores, and a first probe at load ~4.5 fitted at half
and predicted at a quarter of the 1-thread speed. So the bench first reruns that probe (1 vs 2 threads, fit 96
and predict 256 examples, twice) and stores it in the JSON; ``--threads 0`` measures torch's default instead.
Load averages before and after each configuration, and CPU seconds next to wall seconds, are recorded. One
seed; no test asserts on these numbers.

Run from the repository root (~20 minutes on 2 shared cores, plus ~1 minute once to set up the store)::

    .venv/bin/python bench/training_shards.py                       # writes bench/results/training_shards.json
    .venv/bin/python bench/training_shards.py --shards 1 4 --budget 2000 --out /tmp/ts.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_HOME = Path("/tmp/custody-bench-cache/training-shards")
LABELS = ("fresh", "rotten")
SOURCE = "rotten_tomatoes"
DATASET_NAME = "training-shards-bench"
TARGET_SECONDS = 300.0  # issue: demo-sized training in under 5 minutes on 2 cores
SETUP_STEPS = (["sample"], ["ingest", "--source", SOURCE], ["validate", "--policy", "research"])


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def ensure_store(home: Path) -> dict[str, Any]:
    """A sampled, ingested and validated store under ``home``; runs the CLI steps once if it has no validation."""
    from tasks import layout
    from tasks.storage import Store

    store = Store.from_settings()
    if store.exists(layout.CURRENT_POLICY):
        return {"setup": "cached", "home": str(home)}
    home.mkdir(parents=True, exist_ok=True)
    custody = Path(sys.executable).with_name("custody")
    took = {}
    for step in SETUP_STEPS:
        log(f"setting up the store: custody {' '.join(step)}")
        start = time.perf_counter()
        subprocess.run([str(custody), *step], check=True, cwd=home, env={**os.environ, "CUSTODY_HOME": str(home)},
                       stdout=subprocess.DEVNULL)
        took[" ".join(step)] = time.perf_counter() - start
    return {"setup": "ran", "home": str(home), "setup_seconds": took}


class Timers:
    """Wall seconds spent inside wrapped functions, by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1
        return timed


@contextmanager
def timed_training_module(timers: Timers) -> Iterator[None]:
    """Time ``build_model`` and ``predict_proba`` as ``train_models`` / ``fit_one`` call them (module globals)."""
    import tasks.training.loop as training

    saved = training.build_model, training.predict_proba
    training.build_model = timers.wrap("build_model", saved[0])
    training.predict_proba = timers.wrap("validation_predict", saved[1])
    try:
        yield
    finally:
        training.build_model, training.predict_proba = saved


def model_list(models: Any) -> list[Any]:
    """``train_models`` returns a list of models or a dict keyed by shard, depending on the code version."""
    return list(models.values()) if isinstance(models, dict) else list(models)


def run_config(store: Any, shards: int, args: argparse.Namespace, device: str) -> dict[str, Any]:
    """Select, train and evaluate one shard count; returns its measurements."""
    from tasks.selection import SelectionConfig, select
    from tasks.training import TrainConfig, config_dict, load_splits, metrics, predict_proba, train_models

    load_before = load()
    selection = select(store, SelectionConfig(name=DATASET_NAME, strategy="random", budget=args.budget,
                                              shards=shards, labels=LABELS, sources=(SOURCE,), seed=args.seed))
    cfg = TrainConfig(dataset=selection["ref"], model="minilm", shards=shards, epochs=args.epochs,
                      max_length=args.max_length, seed=args.seed)
    splits, labels, _ = load_splits(store, cfg)
    train, test = splits["train"], splits["test"]
    sizes = np.bincount(train.shard, minlength=shards).tolist()
    log(f"S={shards}: dataset {selection['ref']}, train {len(train.ids):,} (shards {sizes}), validation "
        f"{len(splits['validation'].ids):,}, test {len(test.ids):,}; load {load_before}")

    start, cpu_start = time.perf_counter(), time.process_time()

    def progress(epoch: int, point: dict[str, float]) -> None:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in point.items())
        log(f"S={shards} epoch {epoch + 1}/{cfg.epochs}: {shown} ({time.perf_counter() - start:.0f}s)")

    timers = Timers()
    with timed_training_module(timers):
        models, tokenizer, info = train_models(splits, cfg, len(labels), device, progress)
    models = model_list(models)
    train_wall, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    load_mid = load()

    start, cpu_start = time.perf_counter(), time.process_time()
    per_model = [predict_proba([m], tokenizer, test.texts, cfg, device) for m in models]
    test_wall, test_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    ensemble = np.mean(per_model, axis=0)  # = predict_proba(models, ...): the average of the shard models
    result = metrics(ensemble, test.y, "test")
    shard_acc = [metrics(p, test.y, "test")["test_accuracy"] for p in per_model]

    examples = int(info["examples_processed"])
    build_s = timers.seconds.get("build_model", 0.0)
    val_s = timers.seconds.get("validation_predict", 0.0)
    fit_s = info["train_seconds"] - build_s - val_s
    history = info["history"]
    final_val = {k.removesuffix("_epoch_val_accuracy") or "model": v[-1] for k, v in history.items()
                 if k.endswith("val_accuracy")}
    out = {
        "shards": shards, "dataset": selection["ref"], "train_config": config_dict(cfg), "shard_sizes": sizes,
        "train_records": len(train.ids), "validation_records": len(splits["validation"].ids),
        "test_records": len(test.ids), "labels": labels,
        "test_accuracy": result["test_accuracy"], "test_f1": result["test_f1"], "test_loss": result["test_loss"],
        "shard_test_accuracy": shard_acc, "shard_final_val_accuracy": final_val,
        "examples_processed": examples,
        "train_seconds": info["train_seconds"], "train_wall_seconds": train_wall, "train_cpu_seconds": train_cpu,
        "build_model_seconds": build_s, "validation_predict_seconds": val_s,
        "validation_predict_calls": timers.calls.get("validation_predict", 0), "fit_seconds": fit_s,
        "examples_per_second": examples / info["train_seconds"], "fit_examples_per_second": examples / fit_s,
        "test_predict_seconds": test_wall, "test_predict_cpu_seconds": test_cpu,
        "test_examples_per_second": len(models) * len(test.ids) / test_wall,
        "history": history, "load_avg_before": load_before, "load_avg_after_train": load_mid,
        "load_avg_after": load(),
    }
    log(f"S={shards}: test accuracy {out['test_accuracy']:.4f}, F1 {out['test_f1']:.4f} (shard models "
        f"{min(shard_acc):.4f}-{max(shard_acc):.4f}); train_models {info['train_seconds']:.0f}s wall, "
        f"{train_cpu:.0f}s CPU (build {build_s:.0f}s, validation {val_s:.0f}s, fit {fit_s:.0f}s); "
        f"{out['examples_per_second']:.1f} ex/s ({out['fit_examples_per_second']:.1f} fitting); load {load()}")
    return out


def thread_probe(store: Any, args: argparse.Namespace, device: str, rounds: int = 2) -> list[dict[str, Any]]:
    """Fit 96 train examples (1 epoch) and predict 256 test examples with 1 and 2 torch threads, alternating, to
    show what the shared machine does to torch's default of one thread per core (OpenMP barriers stall when
    another process holds a core)."""
    import torch

    from tasks.selection import SelectionConfig, select
    from tasks.training import TrainConfig, fit_one, load_splits, predict_proba

    selection = select(store, SelectionConfig(name=DATASET_NAME, strategy="random", budget=args.budget, shards=1,
                                              labels=LABELS, sources=(SOURCE,), seed=args.seed))
    cfg = TrainConfig(dataset=selection["ref"], epochs=1, max_length=args.max_length, seed=args.seed)
    splits, labels, _ = load_splits(store, cfg)
    train, test = splits["train"], splits["test"]
    saved, out = torch.get_num_threads(), []
    try:
        for _ in range(rounds):
            for threads in (1, 2):
                torch.set_num_threads(threads)
                point: dict[str, Any] = {"threads": threads, "load_avg_before": load()}
                start, cpu = time.perf_counter(), time.process_time()
                model, tokenizer, n = fit_one(train.texts[:96], train.y[:96], cfg, len(labels), device)
                point |= {"fit_examples": n, "fit_seconds": time.perf_counter() - start,
                          "fit_cpu_seconds": time.process_time() - cpu}
                start, cpu = time.perf_counter(), time.process_time()
                predict_proba([model], tokenizer, test.texts[:256], cfg, device)
                point |= {"predict_examples": 256, "predict_seconds": time.perf_counter() - start,
                          "predict_cpu_seconds": time.process_time() - cpu, "load_avg_after": load()}
                log(f"thread probe: {threads} thread(s): fit {n / point['fit_seconds']:.1f} ex/s, predict "
                    f"{256 / point['predict_seconds']:.1f} ex/s; load {point['load_avg_after']}")
                out.append(point)
    finally:
        torch.set_num_threads(saved)
    return out


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "numpy"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    return found


def git_state() -> dict[str, Any]:
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=REPO).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"),
            "uncommitted_training_code": git("status", "--porcelain", "tasks/training.py", "tasks/selection")}


def print_table(rows: list[dict[str, Any]]) -> None:
    base = next((r for r in rows if r["shards"] == 1), rows[0])
    print(f"\n{'S':>2} {'shard sizes':<44} {'test acc':>8} {'vs S=1':>7} {'F1':>6} {'train s':>8} {'ex/s':>6} "
          f"{'fit ex/s':>8} {'val s':>6} {'load':>10}")
    for r in rows:
        sizes = ", ".join(str(s) for s in r["shard_sizes"])
        loads = f"{r['load_avg_before'][0]:.1f}-{r['load_avg_after'][0]:.1f}"
        print(f"{r['shards']:>2} {sizes:<44} {r['test_accuracy']:>8.4f} "
              f"{100 * (r['test_accuracy'] - base['test_accuracy']):>+7.2f} {r['test_f1']:>6.4f} "
              f"{r['train_seconds']:>8.0f} {r['examples_per_second']:>6.1f} {r['fit_examples_per_second']:>8.1f} "
              f"{r['validation_predict_seconds']:>6.0f} {loads:>10}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 4, 8], help="shard counts; 1 = unsharded")
    ap.add_argument("--budget", type=int, default=5000, help="train records (the same records for every S)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0, help="selection and training seed")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for the measured runs; 0 = torch's default (one per core, as custody train)")
    ap.add_argument("--no-thread-probe", action="store_true", help="skip the 1-vs-2-thread probe")
    ap.add_argument("--home", type=Path, default=DEFAULT_HOME, help="CUSTODY_HOME of the bench store")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "training_shards.json")
    args = ap.parse_args()

    os.environ["CUSTODY_HOME"] = str(args.home)  # read by tasks.config.get_settings on every call
    import torch

    from tasks.config import get_settings
    from tasks.storage import Store

    wall, load_start = time.perf_counter(), load()
    setup = ensure_store(args.home)
    device = get_settings().resolved_device()
    store = Store.from_settings()
    probe = [] if args.no_thread_probe else thread_probe(store, args, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    log(f"store {store.url}; device {device}, torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, "
        f"load {load_start}")
    rows = [run_config(store, s, args, device) for s in args.shards]
    print_table(rows)

    base = next((r for r in rows if r["shards"] == 1), None)
    verdict: dict[str, Any] = {"target_train_seconds": TARGET_SECONDS}
    if base is not None:
        verdict |= {"unsharded_train_seconds": base["train_seconds"],
                    "pass_under_5_minutes": base["train_seconds"] < TARGET_SECONDS,
                    "accuracy_vs_unsharded_points": {r["shards"]: 100 * (r["test_accuracy"] - base["test_accuracy"])
                                                     for r in rows},
                    "f1_vs_unsharded_points": {r["shards"]: 100 * (r["test_f1"] - base["test_f1"]) for r in rows}}
        status = "PASS" if verdict["pass_under_5_minutes"] else "FAIL"
        print(f"{status}: unsharded training took {base['train_seconds']:.0f}s (target < {TARGET_SECONDS:.0f}s)")

    doc = {"benchmark": "training_shards", "created_at": dt.datetime.now(dt.UTC).isoformat(),
           "platform": platform.platform(), "python": platform.python_version(), "versions": versions(),
           "git": git_state(),
           "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
                       "shared": "yes: 2 cores shared with other work (tests, other benchmarks) during the run",
                       "load_avg_start": load_start, "load_avg_end": load()},
           "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                      "selection": f"strategy=random, labels={list(LABELS)}, sources=[{SOURCE}]",
                      "store": setup},
           "thread_probe": probe, "results": rows, "verdict": verdict, "wall_seconds": time.perf_counter() - wall}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
