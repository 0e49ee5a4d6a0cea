"""Unlearning a deletion request from every registered model that learned it, judged against the oracle.

For a request (already applied: tombstoned, purged, its forget texts in the vault), lineage names each
registered model version whose dataset holds the deleted records. For each live version:

1. **candidate**: a new version without the records, by one of
   - ``sisa``: retrain only the shards that held deleted records (exact; shards follow owners);
   - ``retrain``: train from scratch on the dataset minus the records (exact; this is also the oracle);
   - ``neggrad-plus``: gradient ascent on the forget set with descent on the retain set;
   - ``scrub``: teacher–student SCRUB (Kurmanji et al., 2023).
   The approximate methods stop as soon as the forget set's mean loss reaches the source model's held-out
   loss, the best estimate of the oracle's forget loss available without training it, so they do not
   overshoot. The derived dataset version (minus the records) is written like any other.
2. **evaluation** (tasks.evaluation): the candidate against the oracle (a registered retrain, tagged
   ``custody.role=oracle``, never served) and the source, on the forget set, a retain sample and test.
3. **promotion**: when the gate passes the candidate takes the source's aliases; when it fails the next
   exact method takes over (SISA for sharded models, else the oracle itself), and the report says so. The
   source, the rejected candidate and any other version holding the records lose every alias and are tagged
   ``custody.status`` retired/rejected, never served again.

Every step writes its result under ``reports/deletions/<request-id>/`` and tags what it registers, so a
process killed mid-way is finished by re-running. Then the request moves to ``unlearned``; the certificate
is written (tasks.certificate), the vault destroyed, and the request is ``certified``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import ledger
from tasks.certificate import REPORTS, certify
from tasks.config import get_settings
from tasks.errors import Fatal, unknown_name
from tasks.evaluation import GateConfig, assess, compare, gate
from tasks.lineage import build_index, query
from tasks.registry import load_version, register, start_run
from tasks.selection import derive_without, load_manifest
from tasks.storage import Store
from tasks.training import (
    Split,
    TrainConfig,
    load_splits,
    per_example_loss,
    predict_proba,
    subsample,
    train_models,
)

log = logging.getLogger(__name__)
METHODS = ("auto", "sisa", "retrain", "neggrad-plus", "scrub")
EXACT = ("sisa", "retrain")
EXPERIMENT = "custody-unlearning"
STATUS_TAG, ROLE_TAG, REQUEST_TAG, FROM_TAG, METHOD_TAG = (
    "custody.status", "custody.role", "custody.request", "custody.unlearned_from", "custody.method")
UNLEARN_LOCK = "ledger/unlearn.lock"


@dataclass(frozen=True)
class UnlearnConfig:
    """How to unlearn. ``auto`` is SISA for sharded models and NegGrad+ otherwise (both gated)."""

    method: str = "auto"
    max_steps: int = 40
    lr_scale: float = 0.5  # of the training learning rate
    alpha: float = 0.5  # NegGrad+: weight of the forget-set ascent against the retain-set descent
    retain_sample: int = 1000  # retain records used for evaluation
    mink_sample: int = 500  # test records the Min-K%-style attack sees (nine forward passes each)
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise unknown_name("method", self.method, METHODS)


def _client() -> Any:
    from mlflow import MlflowClient

    return MlflowClient(get_settings().mlflow_tracking_uri)


def _split_ref(ref: str) -> tuple[str, str]:
    name, version = ref.split("@", 1)
    return name, version


def _tags(ref: str) -> dict[str, str]:
    name, version = _split_ref(ref)
    return dict(_client().get_model_version(name, version).tags or {})


def affected_versions(store: Store, record_ids: list[str]) -> list[str]:
    """Registered versions (``NAME@VERSION``) whose dataset holds any of ``record_ids``, oldest first."""
    build_index(store, get_settings().mlflow_tracking_uri)
    models = query(store, record_ids=record_ids)["models"]
    return [f"{m['model']}@{m['model_version']}" for m in sorted(models, key=lambda m: (m["model"],
                                                                                          int(m["model_version"])))]


# --- the sets every model of one source version is judged on ---------------------------------------------

@dataclass
class Sets:
    cfg: TrainConfig  # the source's config, pointed at the derived dataset
    labels: list[str]
    selection: dict[str, Any]  # of the derived dataset
    splits: dict[str, Split]  # of the derived dataset
    forget: Split  # deleted records the source trained on
    retain: Split  # a sample of the derived train split


def _forget_split(store: Store, request_id: str, source_dataset: str, deleted: set[str], labels: list[str],
                  sharded: bool) -> Split:
    manifest, _ = load_manifest(store, source_dataset)
    hit = pc.and_(pc.is_in(manifest.column("record_id"), value_set=pa.array(sorted(deleted), pa.string())),
                  pc.equal(manifest.column("split"), "train"))
    rows = manifest.filter(hit)
    rows = rows.filter(pc.is_in(rows.column("label"), value_set=pa.array(labels, pa.string())))
    if rows.num_rows == 0:
        return Split([], [], np.zeros(0, np.int64), np.zeros(0, np.int64))
    key = ledger.vault_key(request_id)
    if not store.exists(key):
        raise Fatal(f"the forget texts of {request_id} are gone ({store.uri(key)}): was it certified already?")
    vault = store.read_parquet(key, ["record_id", "text"])
    texts = dict(zip(vault.column("record_id").to_pylist(), vault.column("text").to_pylist(), strict=True))
    rows = rows.filter(pc.is_in(rows.column("record_id"), value_set=pa.array(sorted(texts), pa.string())))
    ids = rows.column("record_id").to_pylist()
    shard = np.array(rows.column("shard").to_pylist(), np.int64) if sharded else np.zeros(len(ids), np.int64)
    return Split(ids, [texts[r] for r in ids], np.array([labels.index(x) for x in rows.column("label").to_pylist()]),
                 shard)


def judged_sets(store: Store, request: dict[str, Any], source_ref: str, ucfg: UnlearnConfig) -> Sets:
    """Derive the dataset without the request's records and build forget / retain / test for ``source_ref``."""
    name, version = _split_ref(source_ref)
    source = store.read_json(f"models/{name}/{version}/model.json")
    deleted = set(request["resolved"]["record_ids"])
    derived = derive_without(store, source["dataset"], deleted, request["request_id"])
    cfg = replace(TrainConfig(**source["config"]), dataset=derived["ref"], registered_model=name)
    splits, labels, selection = load_splits(store, cfg)
    if labels != source["labels"]:
        raise Fatal(f"{source_ref}: labels changed after deletion ({source['labels']} -> {labels}); retrain instead")
    forget = _forget_split(store, request["request_id"], source["dataset"], deleted, labels, cfg.shards > 1)
    return Sets(cfg, labels, selection, splits, forget, subsample(splits["train"], ucfg.retain_sample, cfg.seed))


# --- candidates -------------------------------------------------------------------------------------------

def _encode(tokenizer: Any, texts: list[str], cfg: TrainConfig, device: str) -> dict[str, Any]:
    batch = tokenizer(texts, truncation=True, max_length=cfg.max_length, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def _forget_loss(model: Any, tokenizer: Any, forget: Split, cfg: TrainConfig, device: str) -> float:
    return float(per_example_loss(predict_proba([model], tokenizer, forget.texts, cfg, device), forget.y).mean())


def _trainable(model: Any, cfg: TrainConfig) -> Any:
    """Fresh LoRA adapters over the merged weights for LoRA models (as trained), all weights otherwise."""
    if not cfg.lora_rank:
        return model
    from peft import LoraConfig, TaskType, get_peft_model

    return get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_rank, lora_alpha=2 * cfg.lora_rank,
                                            lora_dropout=0.0, target_modules=["query", "value"]))


def _approximate(method: str, model: Any, tokenizer: Any, forget: Split, retain: Split, cfg: TrainConfig,
                 ucfg: UnlearnConfig, target: float, device: str) -> tuple[Any, int]:
    """Run NegGrad+ or SCRUB on one (shard) model until the forget loss reaches ``target``."""
    import copy

    import torch
    import torch.nn.functional as F

    torch.manual_seed(cfg.seed)  # dropout decides SCRUB's first max-steps (the student starts as the teacher)
    teacher = copy.deepcopy(model).eval() if method == "scrub" else None
    student = _trainable(model, cfg)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr * ucfg.lr_scale)
    rng = np.random.default_rng(cfg.seed)
    batch = partial(_batch, tokenizer, rng=rng, cfg=cfg, device=device)
    seen, steps = 0, 0
    while steps < ucfg.max_steps:
        loss_now = _forget_loss(student, tokenizer, forget, cfg, device)
        seen += len(forget.ids)
        if loss_now >= target:
            log.info("%s stopped at step %d: forget loss %.3f >= target %.3f", method, steps, loss_now, target)
            break
        steps += 1
        student.train()
        f_batch, f_y = batch(forget)
        if teacher is None:  # NegGrad+: descend on retain, ascend on forget, one combined step
            r_batch, r_y = batch(retain)
            _step(optimizer, params, (1 - ucfg.alpha) * F.cross_entropy(student(**r_batch).logits, r_y)
                  - ucfg.alpha * F.cross_entropy(student(**f_batch).logits, f_y))
            seen += len(f_y) + len(r_y)
        else:  # SCRUB max-step: away from the teacher on the forget set
            with torch.no_grad():
                t_f = teacher(**f_batch).logits
            _step(optimizer, params, -_kl(student(**f_batch).logits, t_f))
            seen += 2 * len(f_y)
    # SCRUB min-steps, as many as max-steps: stay with the teacher (and the labels) on the retain set. As in the
    # paper the max-steps come first and the min-steps repair utility; the gate then judges the result.
    for _ in range(steps if teacher is not None else 0):
        r_batch, r_y = batch(retain)
        with torch.no_grad():
            t_r = teacher(**r_batch).logits
        s_r = student(**r_batch).logits
        _step(optimizer, params, _kl(s_r, t_r) + F.cross_entropy(s_r, r_y))
        seen += 2 * len(r_y)
    from tasks.registry import merged

    return merged(student).eval(), seen


def _batch(tokenizer: Any, split: Split, rng: np.random.Generator, cfg: TrainConfig, device: str) -> tuple[Any, Any]:
    """A random batch of ``split``: encoded inputs and label tensor."""
    import torch

    idx = rng.choice(len(split.ids), min(cfg.batch_size, len(split.ids)), replace=False)
    return _encode(tokenizer, [split.texts[i] for i in idx], cfg, device), torch.tensor(split.y[idx], device=device)


def _kl(student_logits: Any, teacher_logits: Any) -> Any:
    """KL(teacher || student) per batch, from logits."""
    import torch.nn.functional as F

    return F.kl_div(F.log_softmax(student_logits, -1), F.log_softmax(teacher_logits, -1), log_target=True,
                    reduction="batchmean")


def _step(optimizer: Any, params: list[Any], loss: Any) -> None:
    import torch

    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()


def _source_heldout_loss(store: Store, source_ref: str) -> float:
    name, version = _split_ref(source_ref)
    losses = store.read_parquet(f"models/{name}/{version}/per_example_losses.parquet")
    held = losses.filter(pc.equal(losses.column("split"), "validation"))
    if held.num_rows == 0:
        held = losses.filter(pc.equal(losses.column("split"), "test"))
    return float(pc.mean(held.column("loss")).as_py())


def _find_version(request_id: str, source_ref: str, method: str) -> str | None:
    """A version already registered for this step (a re-run after a crash reuses it)."""
    name, _ = _split_ref(source_ref)
    found = _client().search_model_versions(
        f"name='{name}' and tags.`{REQUEST_TAG}`='{request_id}' and tags.`{FROM_TAG}`='{source_ref}' "
        f"and tags.`{METHOD_TAG}`='{method}'")
    return f"{name}@{found[0].version}" if found else None


def make_version(store: Store, request: dict[str, Any], source_ref: str, method: str, sets: Sets,
                 ucfg: UnlearnConfig, role: str = "candidate") -> str:
    """Register the ``method`` version of ``source_ref`` without the request's records (idempotent)."""
    import mlflow

    existing = _find_version(request["request_id"], source_ref, method)
    if existing:
        return existing
    device = get_settings().resolved_device()
    cfg = sets.cfg
    tags = {REQUEST_TAG: request["request_id"], FROM_TAG: source_ref, METHOD_TAG: method, ROLE_TAG: role}
    with start_run(cfg, sets.selection, EXPERIMENT, f"{method} {source_ref} {request['request_id']}", tags) as run:
        start = time.perf_counter()
        on_epoch = lambda step, m: mlflow.log_metrics(m, step=step)  # noqa: E731
        history: dict[str, list[float]] = {}
        if method == "retrain":
            models, tokenizer, info = train_models(sets.splits, cfg, len(sets.labels), device, on_epoch)
        else:
            models, tokenizer = load_version(source_ref)
            start = time.perf_counter()  # the method's work; loading the source (a first one imports a lot) is not
            touched = sorted(set(sets.forget.shard.tolist()))
            if method == "sisa":
                fresh, _, info = train_models(sets.splits, cfg, len(sets.labels), device, on_epoch, set(touched))
                models = {s: m for s, m in models.items() if s not in touched} | fresh
                history = info["history"]
            else:
                target = _source_heldout_loss(store, source_ref)
                seen = 0
                for shard in touched:
                    own = sets.forget.shard == shard
                    forget = Split([i for i, o in zip(sets.forget.ids, own, strict=True) if o],
                                   [t for t, o in zip(sets.forget.texts, own, strict=True) if o],
                                   sets.forget.y[own], sets.forget.shard[own])
                    retain = _shard_rows(sets.splits["train"], shard, cfg.shards > 1)
                    models[shard], n = _approximate(method, models[shard], tokenizer, forget, retain, cfg, ucfg,
                                                    target, device)
                    seen += n
                info = {"history": history, "examples_processed": seen}
            info["train_seconds"] = time.perf_counter() - start
        notes = (f"\n\n## Unlearning\n\nMade from {source_ref} by **{method}** for deletion request "
                 f"{request['request_id']} ({len(sets.forget.ids)} trained-on records removed).")
        summary = register(store, run, cfg, sets.splits, sets.labels, sets.selection, models, tokenizer, info,
                           {**tags, "custody.unlearn_seconds": f"{info['train_seconds']:.3f}",
                            "custody.examples_processed": str(info["examples_processed"])}, notes)
    return summary["ref"]


def _shard_rows(split: Split, shard: int, sharded: bool) -> Split:
    if not sharded:
        return split
    idx = np.flatnonzero(split.shard == shard)
    return Split([split.ids[i] for i in idx], [split.texts[i] for i in idx], split.y[idx], split.shard[idx])


# --- evaluation, promotion, the per-version step -----------------------------------------------------------

def assessment(store: Store, request_id: str, ref: str, sets: Sets, mink_sample: int) -> dict[str, Any]:
    """``assess`` of a registered version on the judged sets, cached in the request's report folder."""
    key = f"{REPORTS}/{request_id}/assessments/{ref.replace('@', '-v')}.json"
    if store.exists(key):
        return store.read_json(key)
    models, tokenizer = load_version(ref)
    result = assess(list(models.values()), tokenizer, sets.cfg, get_settings().resolved_device(), sets.forget,
                    sets.retain, sets.splits["test"], mink_sample)
    tags = _tags(ref)
    result["cost_seconds"] = float(tags.get("custody.unlearn_seconds", "nan"))
    result["examples_processed"] = int(tags.get("custody.examples_processed", "0") or 0)
    store.write_json(key, result)
    return result


def _log_evaluation(ref: str, evaluation: dict[str, Any], comparison: dict[str, float], verdict: dict) -> None:
    name, version = _split_ref(ref)
    client = _client()
    run_id = client.get_model_version(name, version).run_id
    for key, value in {**{f"eval_{k}": v for k, v in evaluation.items() if isinstance(v, float)},
                       **{f"vs_oracle_{k}": v for k, v in comparison.items()}}.items():
        if np.isfinite(value):
            client.log_metric(run_id, key, value)
    client.set_model_version_tag(name, version, "custody.gate", "passed" if verdict["passed"] else "failed")


def retire(ref: str, status: str, request_id: str) -> list[str]:
    """Take every alias from ``ref`` and mark it never to be served; returns the aliases it had."""
    name, version = _split_ref(ref)
    client = _client()
    aliases = list(client.get_model_version(name, version).aliases or [])
    for alias in aliases:
        client.delete_registered_model_alias(name, alias)
    client.set_model_version_tag(name, version, STATUS_TAG, status)
    client.set_model_version_tag(name, version, "custody.retired_by", request_id)
    return aliases


def promote(source_ref: str, final_ref: str, aliases: list[str], request_id: str) -> None:
    """Give the unlearned version the source's ``aliases`` and retire the source (idempotent)."""
    name, version = _split_ref(final_ref)
    retire(source_ref, "retired", request_id)
    client = _client()
    for alias in aliases:
        client.set_registered_model_alias(name, alias, version)
    client.set_model_version_tag(name, version, STATUS_TAG, "serving" if aliases else "live")
    client.set_model_version_tag(name, version, ROLE_TAG, "unlearned")


def resolve_method(method: str, sharded: bool) -> str:
    if method == "auto":
        return "sisa" if sharded else "neggrad-plus"
    if method == "sisa" and not sharded:
        raise Fatal("sisa needs a sharded model (train with --shards S); use retrain, neggrad-plus or scrub")
    return method


def unlearn_version(store: Store, request: dict[str, Any], source_ref: str, ucfg: UnlearnConfig) -> dict[str, Any]:
    """Candidate → evaluation against the oracle → gate → promotion (or exact fallback) for one version."""
    request_id = request["request_id"]
    key = f"{REPORTS}/{request_id}/models/{source_ref.replace('@', '-v')}.json"
    if store.exists(key):
        return _finish(store, key, store.read_json(key))
    tags = _tags(source_ref)
    if tags.get(ROLE_TAG) == "oracle" or tags.get(STATUS_TAG) in ("retired", "rejected"):
        result = {"source": source_ref, "action": "retired", "note": "never served; nothing to unlearn",
                  "aliases_removed": retire(source_ref, tags.get(STATUS_TAG) or "retired", request_id)}
        store.write_json(key, result)
        return result
    sets = judged_sets(store, request, source_ref, ucfg)
    if not sets.forget.ids:
        result = {"source": source_ref, "action": "none", "dataset": sets.selection["ref"],
                  "note": "the deleted records were only held out (validation/test), never trained on"}
        store.write_json(key, result)
        return result
    method = resolve_method(ucfg.method, sets.cfg.shards > 1)
    candidate = make_version(store, request, source_ref, method, sets, ucfg)
    oracle = candidate if method == "retrain" else make_version(store, request, source_ref, "retrain", sets, ucfg,
                                                                role="oracle")
    evaluations = {"source": assessment(store, request_id, source_ref, sets, ucfg.mink_sample),
                   "oracle": assessment(store, request_id, oracle, sets, ucfg.mink_sample)}
    steps = []
    final = None
    for attempt in _attempts(method, sets.cfg.shards > 1):
        ref = {method: candidate, "retrain": oracle}.get(attempt) or make_version(store, request, source_ref,
                                                                                 attempt, sets, ucfg)
        evaluation = assessment(store, request_id, ref, sets, ucfg.mink_sample)
        comparison = compare(evaluation, evaluations["oracle"])
        verdict = gate(comparison, attempt in EXACT, ucfg.gate)
        _log_evaluation(ref, evaluation, comparison, verdict)
        steps.append({"method": attempt, "version": ref, "gate": verdict, "vs_oracle": comparison,
                      "evaluation": evaluation})
        if verdict["passed"]:
            final = ref
            break
        retire(ref, "rejected", request_id)
    assert final is not None  # the last attempt is always exact
    name, version = _split_ref(source_ref)
    result = {"source": source_ref, "action": "unlearned", "dataset": sets.selection["ref"],
              "source_dataset": store.read_json(f"models/{name}/{version}/model.json")["dataset"],
              "forget_records": len(sets.forget.ids), "requested_method": method, "final": final,
              "final_method": steps[-1]["method"], "fell_back": len(steps) > 1,
              "aliases_moved": list(_client().get_model_version(name, version).aliases or []), "promoted": False,
              "oracle": oracle, "steps": steps, "evaluations": evaluations}
    store.write_json(key, result)  # before promotion: a re-run after a crash finishes it from here
    return _finish(store, key, result)


def _finish(store: Store, key: str, result: dict[str, Any]) -> dict[str, Any]:
    if result["action"] == "unlearned" and not result["promoted"]:
        promote(result["source"], result["final"], result["aliases_moved"], key.split("/")[2])
        result = {**result, "promoted": True}
        store.write_json(key, result)
    return result


def _attempts(method: str, sharded: bool) -> list[str]:
    """The requested method, then the exact fallbacks in order of cost."""
    order = [method] + [m for m in (("sisa", "retrain") if sharded else ("retrain",)) if m != method]
    return order[: order.index("retrain") + 1] if "retrain" in order else order


def unlearn_request(store: Store, request_id: str, ucfg: UnlearnConfig,
                    on_version: Any = None) -> dict[str, Any]:
    """Apply (if still open), unlearn every affected version, then certify; safe to re-run after a crash."""
    doc = ledger.load(store, request_id)
    if doc["status"] in ledger.OPEN:
        ledger.process_pending(store, request_id)
        doc = ledger.load(store, request_id)
    if doc["status"] == "certified":
        return doc
    with ledger.store_lock(store, UNLEARN_LOCK, timeout=3600):
        doc = ledger.load(store, request_id)  # another run (event, sweep, CLI) may have finished it meanwhile
        if doc["status"] == "certified":
            return doc
        results = []
        for ref in affected_versions(store, doc["resolved"]["record_ids"]) if doc["resolved"]["record_ids"] else []:
            results.append(unlearn_version(store, doc, ref, ucfg))
            if on_version:
                on_version(results[-1])
        if doc["status"] == "applied":
            doc = ledger.set_status(store, doc, "unlearned", unlearned=[
                {k: r.get(k) for k in ("source", "action", "final", "final_method", "fell_back")} for r in results])
        return certify(store, doc, results)
