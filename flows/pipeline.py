"""The whole chain as one flow: ingest → validate → score → select → train → evaluate, each a sub-flow.

``custody run`` runs it once; the ``custody-pipeline`` deployment (prefect.yaml, ``custody server``) runs it on a
schedule. Every stage skips work already done for the same input, so a scheduled run over an unchanged store
is cheap and a run over new deliveries does only the new work. With ``canaries`` a live generation of audit
canaries (``tasks.canaries``) is planted before ingest when there is none, and the selection trains on them.
With a language model (``model="smollm2"`` or ``"tiny-lm"``) the selection is label-free (the Health News tweets by
default, optionally only some ``owners``' accounts) and the model learns to continue the texts.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.drill import plant_task
from flows.evaluate import evaluate_flow
from flows.ingest import ingest_flow
from flows.runtime import shared_dask
from flows.score import ORDER, score_flow
from flows.select import select_flow
from flows.train import train_flow
from flows.validate import validate_flow
from tasks import canaries as audit
from tasks.config import get_settings
from tasks.errors import Fatal
from tasks.ingest import IngestConfig
from tasks.policy import load_policy
from tasks.selection import SelectionConfig
from tasks.storage import Store
from tasks.training import TrainConfig
from tasks.training.data import LANGUAGE_MODELS


@flow(name="pipeline", log_prints=True)
def pipeline_flow(policy: str = "research", score_sources: list[str] | None = None,
                  dataset: str = "sentiment", strategy: str = "facility", budget: float = 0.3,
                  labels: list[str] | None = None, select_sources: list[str] | None = None,
                  exclude: list[str] | None = None, model: str = "minilm", epochs: int = 2,
                  shards: int = 1, scorers: list[str] | None = None, membership_sample: int = 200,
                  canaries: int = 0, owners: list[str] | None = None, lora_rank: int = 8,
                  batch_size: int = 32) -> dict[str, Any]:
    """The chain with the demo's embedded defaults (a sentiment classifier on Rotten Tomatoes; for a language
    model, on the Health News tweets).

    ``scorers`` defaults to all of them (``[]``: none); the selection itself needs only ``embeddings`` (facility
    location) and ``poisoning`` (the default exclusion). ``membership_sample`` sizes the evaluation's membership
    baseline; ``canaries`` is how many audit canaries the train split holds (none by default; classifiers only).
    """
    settings = get_settings()
    lm = model in LANGUAGE_MODELS
    score_sources = score_sources or ["rotten_tomatoes"]
    labels = None if lm else labels or ["fresh", "rotten"]
    if lm and canaries:
        raise Fatal("audit canaries carry labels: they go into a classifier's dataset, not a language model's")
    if canaries:  # planted as a delivery, so the ingest and validation below take them in like any record
        plant_task(Store.from_settings(), labels, max(canaries, audit.DEFAULT_COUNT))
    with shared_dask(settings) as runner:
        ingested = ingest_flow.with_options(task_runner=runner())(
            sources=None, cfg=IngestConfig.from_settings(settings))
        validated = validate_flow.with_options(task_runner=runner())(policy=load_policy(policy))
        # embeddings-based scorers on the labelled corpus; MiniLM over all 77k texts takes ~10 min on 2 cores
        scorers = list(ORDER) if scorers is None else scorers
        scored = score_flow.with_options(task_runner=runner())(scorers, score_sources) if scorers else []
    selected = select_flow(SelectionConfig(
        name=dataset, strategy=strategy, budget=budget, balance=None if lm else "label",
        labels=tuple(labels) if labels else None, canaries=canaries, owners=tuple(owners) if owners else None,
        sources=tuple(select_sources or (("health_news",) if lm else ("rotten_tomatoes",))),
        exclude=tuple(exclude if exclude is not None else ("poisoning:0.8",) if "poisoning" in scorers else ())))
    trained = train_flow(TrainConfig(dataset=selected["ref"], model=model, epochs=epochs, shards=shards,
                                     lora_rank=lora_rank, batch_size=batch_size))
    evaluated = evaluate_flow(trained["ref"], membership_sample)
    summary = {"ingest": ingested, "validate": validated, "score": {"runs": scored}, "select": selected,
               "train": trained, "evaluate": evaluated}
    create_markdown_artifact(key="pipeline-summary", description="the chain, one run", markdown="\n".join([
        "# Custody pipeline run", "",
        f"- ingested: {sum(s.get('records', 0) for s in ingested['sources'])} records "
        f"({len(ingested['errors'])} file errors)",
        f"- validated under `{policy}`: {validated['policy_hash']}",
        f"- scored: {', '.join(r['scorer'] for r in scored)}",
        f"- dataset **{selected['ref']}**: {selected['counts']}, {selected.get('canaries', 0)} audit canaries",
        f"- model **{trained['ref']}**: " + (f"test perplexity {trained['metrics']['test_perplexity']:.2f}" if lm
                                             else f"test accuracy {trained['metrics']['test_accuracy']:.3f}"),
        f"- membership baseline (loss attack AUC, train sample vs test): {evaluated['mia_loss_auc']:.3f}"]))
    return summary
