"""Language-model unlearning on tweets: SmolLM2 + LoRA, its training throughput, and three deletions in a row.

The platform's causal-LM path, called directly (no store, no MLflow), on the Health News tweets
(``tasks.sample.health_news_frame``, duplicate texts dropped): ``--accounts`` (5 by default), each with ``--train``
(16) training tweets and ``--heldout`` (8) held-out tweets drawn with ``--seed``. The model is
``TrainConfig(model="smollm2", lora_rank=8, epochs=3, batch_size=8, lr=2e-3, max_length=64)``; ``--model tiny-lm``
(full fine-tuning of a 2-layer Llama) is the smoke run.

1. **Throughput.** ``tasks.training.lm.fit_lm`` on the train split beside a plain transformers loop written here
   on the same texts, model, LoRA config, seed, epochs and learning rate: ``tokenizer(padding="max_length",
   truncation=True)``, fixed-order batches of ``batch_size``, AdamW, the loss of ``model(..., labels=ids)`` with
   padding at -100. Examples/s and real (non-pad) tokens/s, over the fit alone (model building timed apart) and
   over the whole call. ``fit_lm``'s model is the **source** of part 2.
2. **Three deletions** (``--deletions``, the first accounts in order). At step k the deleted accounts so far leave
   the training set. Models:
   - **oracle**: ``fit_lm`` on what remains (the exact retrain; its wall time is the cost yardstick);
   - **npo** / **graddiff**: ``Npo`` / ``NegGradPlus`` ``.unlearn`` on a deep copy of the previous step's model of
     the same method (the source at step 1), forget = account k's train tweets, retain = the remaining train,
     ``UnlearnConfig(max_steps=--max-steps)``, target = the source's mean held-out record loss (what
     ``steps.source_heldout_loss`` reads from the registry);
   - **sisa**: ``train_models`` with ``shards=--sisa-shards`` and shard = account index % shards, trained once at
     the start; each deletion retrains only the touched shard (``only=``), which may then be empty (no model);
   - **source** at step 1 only: the positive control, it trained on the forget set.

   Each model is assessed by ``tasks.lm_evaluation.assess_lm`` with forget = account k's train tweets, retain = up
   to ``--retain-sample`` remaining train tweets, test = the held-out tweets of the remaining accounts (all of them
   attacked), plus the perplexity of account k's own held-out tweets (same author, never trained on). PrivLeak
   (``tasks.lm_metrics.privleak``, Min-K% and loss attacks) is relative to that step's oracle. Costs are wall and
   CPU seconds of the method's own call (the deep copy that stands for loading the source is not counted), and
   the fraction of the oracle's wall seconds.

Writes the JSON (config, sizes, machine, throughput, per-step per-model figures, and plain-sentence readings
derived from the numbers) after every step, and a 2x2 plot over the steps beside it. Run from the repository root
(``CUSTODY_HOME`` defaults to ``.custody``, where the SmolLM2 checkpoint is cached)::

    .venv/bin/python bench/lm_unlearning.py --threads 1             # SmolLM2, ~45 min on 2 shared cores -> results/
    .venv/bin/python bench/lm_unlearning.py --model tiny-lm --quick # ~1 min smoke run -> /tmp
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ACCOUNTS = ("bbchealth", "cnnhealth", "nprhealth", "reuters_health", "KaiserHealthNews")
METHODS = ("oracle", "npo", "graddiff", "sisa")  # source is assessed at step 1 only
PLATFORM_MODULES = ("tasks.training.lm", "tasks.lm_evaluation", "tasks.lm_metrics", "tasks.unlearning.npo",
                    "tasks.unlearning.neggrad_plus")
SCALARS_DROPPED = ("forget_losses", "forget_confidence", "population_confidence")  # per-record lists


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float, float]:
    """``fn``'s result, wall seconds and CPU seconds of this process."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start, time.process_time() - cpu


@dataclass
class Tweets:
    """Train and held-out tweets, with the index (in ``--accounts``) of each tweet's account."""

    train: Any  # tasks.training.Split, shard = account index % shards
    heldout: Any
    train_account: np.ndarray
    heldout_account: np.ndarray

    def of(self, part: str, accounts: set[int]) -> Any:
        """The rows of ``part`` (train | heldout) whose account is in ``accounts``, in order."""
        from tasks.training import take

        owner = self.train_account if part == "train" else self.heldout_account
        return take(getattr(self, part), np.flatnonzero(np.isin(owner, sorted(accounts))))


def tweet_splits(accounts: list[str], n_train: int, n_heldout: int, seed: int, shards: int) -> Tweets:
    """``n_train`` + ``n_heldout`` distinct tweets per account, drawn with ``seed``."""
    from tasks.sample import health_news_frame
    from tasks.training import Split

    frame = health_news_frame().drop_duplicates("text")
    missing = sorted(set(accounts) - set(frame["account"]))
    if missing:
        raise SystemExit(f"unknown accounts {missing}; valid: {sorted(set(frame['account']))}")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[int, Any]]] = {"train": [], "heldout": []}
    for idx, account in enumerate(accounts):
        rows = frame[frame["account"] == account]
        chosen = rows.iloc[rng.choice(len(rows), n_train + n_heldout, replace=False)]
        parts["train"].append((idx, chosen.iloc[:n_train]))
        parts["heldout"].append((idx, chosen.iloc[n_train:]))

    def split(pieces: list[tuple[int, Any]]) -> tuple[Split, np.ndarray]:
        owner = np.concatenate([np.full(len(rows), idx, np.int64) for idx, rows in pieces])
        ids = [tid for _, rows in pieces for tid in rows["tweet_id"]]
        texts = [text for _, rows in pieces for text in rows["text"]]
        return Split(ids, texts, np.zeros(len(ids), np.int64), owner % shards), owner

    (train, train_owner), (heldout, heldout_owner) = split(parts["train"]), split(parts["heldout"])
    return Tweets(train, heldout, train_owner, heldout_owner)


def fit_lm_timed(texts: list[str], cfg: Any, device: str, label: str) -> tuple[Any, Any, dict[str, Any]]:
    """``fit_lm`` with its model building timed apart (``build_lm`` wrapped as ``fit_lm`` looks it up)."""
    import tasks.training.lm as lm

    built: list[float] = []
    original = lm.build_lm

    def build(*args: Any, **kwargs: Any) -> Any:
        out, wall, _ = timed(original, *args, **kwargs)
        built.append(wall)
        return out

    def on_epoch(epoch: int, _model: Any, _tok: Any, loss: float) -> None:
        log(f"{label}: epoch {epoch + 1}/{cfg.epochs}, train loss {loss:.3f}")

    lm.build_lm = build
    try:
        (model, tokenizer, seen), wall, cpu = timed(lm.fit_lm, texts, cfg, device, on_epoch)
    finally:
        lm.build_lm = original
    tokens = sum(map(len, lm.encode(tokenizer, texts, lm.fitted_max_length(tokenizer, texts, cfg.max_length))))
    return model, tokenizer, {"examples": seen, "real_tokens": tokens * cfg.epochs, "wall_seconds": wall,
                              "cpu_seconds": cpu, "build_seconds": sum(built)}


def plain_fit(texts: list[str], cfg: Any, device: str) -> dict[str, Any]:
    """The textbook transformers loop on ``texts``: pad to ``max_length``, fixed-order batches, ``labels=``."""
    import torch

    from tasks.training.lm import build_lm

    (tokenizer, model), build_s, _ = timed(build_lm, cfg, device)
    start, cpu = time.perf_counter(), time.process_time()
    enc = tokenizer(texts, padding="max_length", max_length=cfg.max_length, truncation=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    losses = []
    for epoch in range(cfg.epochs):
        model.train()
        total = 0.0
        for lo in range(0, len(texts), cfg.batch_size):
            hi = lo + cfg.batch_size
            out = model(input_ids=enc["input_ids"][lo:hi].to(device),
                        attention_mask=enc["attention_mask"][lo:hi].to(device), labels=labels[lo:hi].to(device))
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            total += float(out.loss.detach()) * (min(hi, len(texts)) - lo)
        losses.append(total / len(texts))
        log(f"plain loop: epoch {epoch + 1}/{cfg.epochs}, train loss {losses[-1]:.3f}")
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"examples": len(texts) * cfg.epochs, "real_tokens": int(enc["attention_mask"].sum()) * cfg.epochs,
            "padded_tokens": int(enc["attention_mask"].numel()) * cfg.epochs, "wall_seconds": wall + build_s,
            "cpu_seconds": cpu, "build_seconds": build_s, "epoch_train_loss": losses}


def rates(run: dict[str, Any]) -> dict[str, Any]:
    """Examples/s and real tokens/s over the fit alone and over the whole call."""
    fit = run["wall_seconds"] - run["build_seconds"]
    return {**run, "fit_seconds": fit, "fit_examples_per_second": run["examples"] / fit,
            "fit_tokens_per_second": run["real_tokens"] / fit,
            "examples_per_second": run["examples"] / run["wall_seconds"],
            "tokens_per_second": run["real_tokens"] / run["wall_seconds"]}


def throughput(train: Any, cfg: Any, device: str) -> tuple[dict[str, Any], Any, Any]:
    """Part 1: the plain loop, then ``fit_lm`` (whose model is returned as the source), after a warm-up step."""
    from tasks.training.lm import batch_loss, build_lm, encode, padded

    tokenizer, model = build_lm(cfg, device)  # warm-up: first load from disk, first backward
    batch_loss(model, padded(tokenizer, encode(tokenizer, train.texts[:cfg.batch_size], cfg.max_length),
                             device)).backward()
    del model
    load_before = load()
    plain = rates(plain_fit(train.texts, cfg, device))
    log(f"plain loop: {plain['fit_examples_per_second']:.2f} examples/s, {plain['fit_tokens_per_second']:.0f} "
        f"real tokens/s ({plain['fit_seconds']:.0f}s fit, {plain['build_seconds']:.1f}s build)")
    source, tokenizer, ours = fit_lm_timed(train.texts, cfg, device, "fit_lm (source)")
    ours = rates(ours)
    log(f"fit_lm: {ours['fit_examples_per_second']:.2f} examples/s, {ours['fit_tokens_per_second']:.0f} real "
        f"tokens/s ({ours['fit_seconds']:.0f}s fit, {ours['build_seconds']:.1f}s build)")
    block = {"fit_lm": ours, "plain_transformers": plain, "load_avg_before": load_before, "load_avg_after": load(),
             "ratio_fit_examples_per_second": ours["fit_examples_per_second"] / plain["fit_examples_per_second"],
             "ratio_fit_tokens_per_second": ours["fit_tokens_per_second"] / plain["fit_tokens_per_second"],
             "ratio_examples_per_second": ours["examples_per_second"] / plain["examples_per_second"]}
    return block, source, tokenizer


def assess(models: list[Any], tokenizer: Any, cfg: Any, device: str, sets: dict[str, Any]) -> dict[str, Any]:
    """``assess_lm``'s scalar figures and the perplexity of the deleted account's own held-out tweets."""
    from tasks.lm_evaluation import assess_lm
    from tasks.training.lm import record_losses

    out = assess_lm(models, tokenizer, cfg, device, sets["forget"], sets["retain"], sets["test"],
                    mink_sample=len(sets["test"].ids))
    own = record_losses(models, tokenizer, sets["forget_account_heldout"].texts, cfg, device)
    out["forget_account_heldout_perplexity"] = float(np.exp(own.mean()))
    return {k: v for k, v in out.items() if k not in SCALARS_DROPPED}


class Sisa:
    """A SISA model over the train split (shard = account index % shards), retrained shard by shard."""

    def __init__(self, train: Any, cfg: Any, device: str) -> None:
        self.cfg, self.device = cfg, device
        self.models, self.tokenizer, self.info = self._train(train, None)

    def _train(self, train: Any, only: set[int] | None) -> tuple[dict[int, Any], Any, dict[str, Any]]:
        from tasks.training import Split, train_models

        empty = Split([], [], np.zeros(0, np.int64), np.zeros(0, np.int64))  # no per-epoch validation curve
        (models, tokenizer, info), wall, cpu = timed(train_models, {"train": train, "validation": empty}, self.cfg,
                                                     0, self.device, lambda *_: None, only)
        return models, tokenizer, {"wall_seconds": wall, "cpu_seconds": cpu,
                                   "examples_processed": info["examples_processed"]}

    def delete(self, account: int, remaining: Any) -> dict[str, Any]:
        """Retrain the shard that held ``account`` on its ``remaining`` tweets (none left: the shard is dropped)."""
        touched = account % self.cfg.shards
        fresh, tokenizer, info = self._train(remaining, {touched})
        self.models = {s: m for s, m in self.models.items() if s != touched} | fresh
        self.tokenizer = tokenizer or self.tokenizer
        return {**info, "retrained_shard": touched, "shard_records_left": int(np.sum(remaining.shard == touched)),
                "shards_left": sorted(self.models)}


def unlearned(method: Any, model: Any, tokenizer: Any, sets: dict[str, Any], cfg: Any, ucfg: Any, target: float,
              device: str) -> tuple[Any, dict[str, Any]]:
    """``method.unlearn`` on a deep copy of ``model`` (the copy stands for loading the source: not timed), with the
    optimizer steps ``ascend`` took (wrapped where the method's module looks it up)."""
    module = sys.modules[type(method).__module__]
    original, steps = module.ascend, []

    def counted(*args: Any, **kwargs: Any) -> tuple[int, int]:
        out = original(*args, **kwargs)
        steps.append(out[0])
        return out

    student = copy.deepcopy(model)
    module.ascend = counted
    try:
        (student, seen), wall, cpu = timed(method.unlearn, student, tokenizer, sets["forget"],
                                           sets["train_remaining"], cfg, ucfg, target, device)
    finally:
        module.ascend = original
    return student.eval(), {"wall_seconds": wall, "cpu_seconds": cpu, "examples_processed": seen,
                            "optimizer_steps": steps[0], "max_steps": ucfg.max_steps}


def step_sets(tweets: Tweets, account: int, deleted: set[int], n_accounts: int, retain_sample: int,
              seed: int) -> dict[str, Any]:
    """Step sets after deleting ``deleted`` (``account`` the latest): forget, retain, test and the rest."""
    from tasks.training import subsample

    left = set(range(n_accounts)) - deleted
    remaining = tweets.of("train", left)
    return {"forget": tweets.of("train", {account}), "train_remaining": remaining,
            "retain": subsample(remaining, retain_sample, seed), "test": tweets.of("heldout", left),
            "forget_account_heldout": tweets.of("heldout", {account})}


def with_privleak(figures: dict[str, Any], oracle: dict[str, Any], cost: dict[str, Any],
                  oracle_seconds: float) -> dict[str, Any]:
    from tasks.lm_metrics import privleak

    return {**figures, "privleak_min_k": privleak(figures["mia_min_k_auc"], oracle["mia_min_k_auc"]),
            "privleak_loss": privleak(figures["mia_loss_auc"], oracle["mia_loss_auc"]),
            "cost_seconds": cost["wall_seconds"], "cost_cpu_seconds": cost["cpu_seconds"],
            "cost_fraction_of_oracle": cost["wall_seconds"] / oracle_seconds, "cost": cost}


def deletion_step(k: int, account: int, deleted: set[int], state: dict[str, Any],
                  ctx: dict[str, Any]) -> dict[str, Any]:
    """Step ``k``: the oracle, the two approximate chains and SISA without ``deleted``, each assessed."""
    from tasks.unlearning.neggrad_plus import NegGradPlus
    from tasks.unlearning.npo import Npo

    cfg, device, tokenizer, names = ctx["cfg"], ctx["device"], ctx["tokenizer"], ctx["accounts"]
    sets = step_sets(ctx["tweets"], account, deleted, len(names), ctx["args"].retain_sample, cfg.seed)
    sizes = {name: len(s.ids) for name, s in sets.items()}
    log(f"step {k}: delete {names[account]} ({sizes['forget']} tweets); sizes {sizes}; load {load()}")
    figures: dict[str, dict[str, Any]] = {}
    costs: dict[str, dict[str, Any]] = {}

    def scored(name: str, models: list[Any], tok: Any = tokenizer) -> None:
        figures[name], wall, _ = timed(assess, models, tok, cfg, device, sets)
        f = figures[name]
        log(f"step {k} {name}: test ppl {f['test_perplexity']:.2f}, forget ppl {f['forget_perplexity']:.2f}, "
            f"ROUGE-L {f['verbatim_rouge_l']:.3f}, min_k AUC {f['mia_min_k_auc']:.3f} (assessed in {wall:.0f}s)")

    oracle, tok, run = fit_lm_timed(sets["train_remaining"].texts, cfg, device, f"step {k} oracle")
    costs["oracle"] = {**run, "examples_processed": run["examples"]}
    scored("oracle", [oracle], tok)
    del oracle
    if k == 1:
        costs["source"] = {**ctx["source_cost"], "examples_processed": ctx["source_cost"]["examples"]}
        scored("source", [ctx["source"]])
    for name, method in (("npo", Npo()), ("graddiff", NegGradPlus())):
        state[name], costs[name] = unlearned(method, state[name], tokenizer, sets, cfg, ctx["ucfg"], ctx["target"],
                                             device)
        log(f"step {k} {name}: {costs[name]['optimizer_steps']} steps, {costs[name]['examples_processed']} examples, "
            f"{costs[name]['wall_seconds']:.0f}s")
        scored(name, [state[name]])
    costs["sisa"] = state["sisa"].delete(account, sets["train_remaining"])
    log(f"step {k} sisa: retrained shard {costs['sisa']['retrained_shard']} "
        f"({costs['sisa']['shard_records_left']} records) in {costs['sisa']['wall_seconds']:.0f}s")
    scored("sisa", [state["sisa"].models[s] for s in sorted(state["sisa"].models)], state["sisa"].tokenizer)
    oracle_s = costs["oracle"]["wall_seconds"]
    models = {name: with_privleak(figures[name], figures["oracle"], costs[name], oracle_s) for name in figures}
    return {"step": k, "deleted_account": names[account], "deleted_so_far": [names[a] for a in sorted(deleted)],
            "sizes": sizes, "load_avg_end": load(), "models": models}


def reading(doc: dict[str, Any]) -> list[str]:
    """Plain sentences derived from the numbers."""
    t, steps = doc["throughput"], doc["steps"]
    if not steps:
        return []
    ours, plain = t["fit_lm"], t["plain_transformers"]
    out = [f"fit_lm trained {ours['fit_examples_per_second']:.2f} examples/s ({ours['fit_tokens_per_second']:.0f} "
           f"real tokens/s) against {plain['fit_examples_per_second']:.2f} ({plain['fit_tokens_per_second']:.0f}) "
           f"for the plain transformers loop, {t['ratio_fit_examples_per_second']:.2f}x the examples/s; the plain "
           f"loop spent {1 - plain['real_tokens'] / plain['padded_tokens']:.0%} of its token positions on padding."]
    first = steps[0]["models"]
    src, ora = first["source"], first["oracle"]
    apart = src["verbatim_rouge_l_ci95"][0] > ora["verbatim_rouge_l_ci95"][1]
    out.append(f"Positive control (step 1, {steps[0]['deleted_account']}): the source continues the forget tweets "
               f"with ROUGE-L {src['verbatim_rouge_l']:.3f} against the oracle's {ora['verbatim_rouge_l']:.3f} "
               f"(95% intervals {'apart' if apart else 'overlapping'}), forget perplexity "
               f"{src['forget_perplexity']:.1f} vs {ora['forget_perplexity']:.1f}, min_k AUC "
               f"{src['mia_min_k_auc']:.3f} vs {ora['mia_min_k_auc']:.3f}: privleak(min_k) "
               f"{src['privleak_min_k']:+.1f}.")
    last, k = steps[-1]["models"], len(steps)
    oracle_total = sum(s["models"]["oracle"]["cost_seconds"] for s in steps)
    for name in METHODS[1:]:
        m, o = last[name], last["oracle"]
        total = sum(s["models"][name]["cost_seconds"] for s in steps)
        out.append(f"After {k} deletions {name}: test perplexity {m['test_perplexity']:.2f} vs the oracle's "
                   f"{o['test_perplexity']:.2f} ({m['test_perplexity'] / o['test_perplexity'] - 1:+.0%}), forget "
                   f"ROUGE-L {m['verbatim_rouge_l']:.3f} vs {o['verbatim_rouge_l']:.3f}, privleak(min_k) "
                   f"{m['privleak_min_k']:+.1f}; {total:.0f}s over the {k} deletions, {total / oracle_total:.2f} of "
                   f"the {oracle_total:.0f}s of the {k} oracle retrains.")
    leak = {name: float(np.mean([abs(s["models"][name]["privleak_min_k"]) for s in steps])) for name in METHODS[1:]}
    best = min(leak, key=leak.get)
    out.append("Mean |privleak(min_k)| over the steps: " + ", ".join(f"{n} {v:.1f}" for n, v in leak.items())
               + f"; {best} is closest to the oracle.")
    for name in ("npo", "graddiff"):
        taken = [s["models"][name]["cost"]["optimizer_steps"] for s in steps]
        out.append(f"{name} took {taken} optimizer steps at the {len(steps)} deletions (it stops at "
                   f"{steps[0]['models'][name]['cost']['max_steps']}, or once the forget loss reaches the target "
                   f"{doc['config']['target_loss']:.3f})"
                   + ("; 0: the forget loss was there already, the model was left unchanged" if 0 in taken else "")
                   + ".")
    emptied = [s["step"] for s in steps if s["models"]["sisa"]["cost"]["shard_records_left"] == 0]
    if emptied:
        out.append(f"SISA at step(s) {emptied}: the deleted account was the only one in its shard, so nothing was "
                   f"retrained and the ensemble lost that shard's model.")
    return out


def plot(doc: dict[str, Any], path: Path) -> None:
    """2x2 over the deletion steps: test perplexity, forget ROUGE-L, privleak(min_k), cost seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tasks.plots import figure_png

    panels = (("test_perplexity", "test perplexity"), ("verbatim_rouge_l", "forget verbatim ROUGE-L"),
              ("privleak_min_k", "privleak (min_k) vs oracle"), ("cost_seconds", "cost (wall seconds)"))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    steps = [s["step"] for s in doc["steps"]]
    for ax, (key, title) in zip(axes.ravel(), panels, strict=True):
        for name in (*METHODS, "source"):
            xs = [s["step"] for s in doc["steps"] if name in s["models"]]
            ys = [s["models"][name][key] for s in doc["steps"] if name in s["models"]]
            ci = [s["models"][name]["verbatim_rouge_l_ci95"] for s in doc["steps"] if name in s["models"]]
            yerr = np.abs(np.array(ci).T - ys) if key == "verbatim_rouge_l" else None  # its 95% interval
            ax.errorbar(xs, ys, yerr=yerr, marker="o" if name != "source" else "*", capsize=3,
                        markersize=6 if name != "source" else 12, label=name,
                        linestyle="-" if name != "source" else "none")
        ax.set_title(title)
        ax.set_xticks(steps)
        ax.set_xlabel("deletion step")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"{doc['config']['model']} on tweets: {len(steps)} sequential account deletions")
    path.write_bytes(figure_png(fig))


def machine_info(threads: int, device: str) -> dict[str, Any]:
    from importlib.metadata import version

    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], capture_output=True, text=True, cwd=RESULTS_DIR.parents[1]).stdout

    return {"cpus": os.cpu_count(), "torch_threads": threads, "device": device, "platform": platform.platform(),
            "python": platform.python_version(),
            "versions": {p: version(p) for p in ("torch", "transformers", "peft", "numpy")},
            "git_commit": git("rev-parse", "HEAD").strip(), "uncommitted_files": len(git("status", "--porcelain")
                                                                                    .splitlines())}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2", choices=["smollm2", "tiny-lm"])
    ap.add_argument("--lora-rank", type=int, default=None, help="default 8 for smollm2, 0 for tiny-lm")
    ap.add_argument("--accounts", nargs="+", default=list(ACCOUNTS))
    ap.add_argument("--train", type=int, default=16, help="training tweets per account")
    ap.add_argument("--heldout", type=int, default=8, help="held-out tweets per account")
    ap.add_argument("--deletions", type=int, default=3, help="accounts deleted in turn, the first ones listed")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-steps", type=int, default=10, help="UnlearnConfig.max_steps of npo and graddiff")
    ap.add_argument("--retain-sample", type=int, default=16, help="remaining train tweets assessed as retain")
    ap.add_argument("--sisa-shards", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads; 0 = the settings' resolved_torch_threads")
    ap.add_argument("--quick", action="store_true", help="8 train and 4 held-out tweets an account, 1 epoch, "
                    "3 unlearning steps")
    ap.add_argument("--out", type=Path, default=None, help="default results/lm_unlearning.json for a full smollm2 "
                    "run, else /tmp/lm_unlearning_<model>[_quick].json")
    args = ap.parse_args()
    if args.quick:
        args.train, args.heldout, args.epochs, args.max_steps, args.retain_sample = 8, 4, 1, 3, 8
    if args.lora_rank is None:
        args.lora_rank = 8 if args.model == "smollm2" else 0
    if args.out is None:
        full = args.model == "smollm2" and not args.quick
        args.out = RESULTS_DIR / "lm_unlearning.json" if full else Path(
            f"/tmp/lm_unlearning_{args.model}{'_quick' if args.quick else ''}.json")
    if not 0 < args.deletions < len(args.accounts):
        raise SystemExit("--deletions must leave at least one account")
    return args


def main() -> None:
    args = parse_args()
    import torch

    from tasks.config import get_settings
    from tasks.training import TrainConfig, config_dict
    from tasks.training.lm import record_losses
    from tasks.unlearning.base import UnlearnConfig

    threads = args.threads or get_settings().resolved_torch_threads()
    torch.set_num_threads(threads)
    device = get_settings().resolved_device()
    for module in PLATFORM_MODULES:  # imported now, so the whole run uses the code of one moment
        importlib.import_module(module)
    wall, load_start, machine = time.perf_counter(), load(), machine_info(threads, device)
    cfg = TrainConfig(dataset="bench@tweets", model=args.model, lora_rank=args.lora_rank, epochs=args.epochs,
                      batch_size=8, lr=2e-3, max_length=64, seed=args.seed)
    ucfg = UnlearnConfig(max_steps=args.max_steps)
    tweets = tweet_splits(args.accounts, args.train, args.heldout, args.seed, args.sisa_shards)
    log(f"{args.model} (LoRA rank {cfg.lora_rank}), {len(tweets.train.ids)} train / {len(tweets.heldout.ids)} "
        f"held-out tweets of {len(args.accounts)} accounts; {threads} torch threads, device {device}, load {load()}")

    block, source, tokenizer = throughput(tweets.train, cfg, device)
    target = float(record_losses([source], tokenizer, tweets.heldout.texts, cfg, device).mean())
    log(f"target (the source's mean held-out loss) {target:.3f}; training SISA ({args.sisa_shards} shards)")
    sisa = Sisa(tweets.train, replace(cfg, shards=args.sisa_shards), device)
    log(f"SISA trained in {sisa.info['wall_seconds']:.0f}s")
    doc: dict[str, Any] = {
        "benchmark": "lm_unlearning", "created_at": dt.datetime.now(dt.UTC).isoformat(),
        "config": {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                   "train_config": config_dict(cfg), "unlearn_config": asdict(ucfg), "target_loss": target},
        "sizes": {"accounts": len(args.accounts), "train_per_account": args.train,
                  "heldout_per_account": args.heldout, "train": len(tweets.train.ids),
                  "heldout": len(tweets.heldout.ids),
                  "sisa_shard_sizes": np.bincount(tweets.train.shard, minlength=args.sisa_shards).tolist()},
        "machine": {**machine, "load_avg_before": load_start},
        "throughput": block, "sisa_initial_training": sisa.info, "steps": [], "reading": []}
    ctx = {"cfg": cfg, "ucfg": ucfg, "device": device, "tokenizer": tokenizer, "accounts": args.accounts,
           "tweets": tweets, "args": args, "target": target, "source": source,
           "source_cost": block["fit_lm"]}
    state = {"npo": source, "graddiff": source, "sisa": sisa}
    deleted: set[int] = set()
    for k in range(1, args.deletions + 1):
        deleted.add(k - 1)
        doc["steps"].append(deletion_step(k, k - 1, deleted, state, ctx))
        doc["machine"]["load_avg_after"] = load()
        doc["wall_seconds"] = time.perf_counter() - wall
        doc["reading"] = reading(doc)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    plot(doc, args.out.with_suffix(".png"))
    for sentence in doc["reading"]:
        print(f"- {sentence}", flush=True)
    log(f"wrote {args.out} and {args.out.with_suffix('.png')} ({doc['wall_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
