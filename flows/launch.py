"""Starting flows: what each ``custody`` command that changes the store runs, callable from tests and notebooks.

Every function here makes sure a Prefect API is there (a temporary local server unless ``PREFECT_API_URL`` names
one), picks the task runner, runs one flow and returns its summary as a plain dict. ``flows/cli.py`` only parses
arguments and renders what these return; read-only commands (status, lineage, datasets, deletions) never import
this module, so they start no server and no cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from flows.delete import apply_deletions_flow, purge_flow, purge_runner
from flows.deployments import emit_deletion_requested
from flows.drill import canaries_flow, drill_flow
from flows.ingest import ingest_flow
from flows.pipeline import pipeline_flow
from flows.runtime import dask_task_runner, ensure_prefect_api
from flows.score import ORDER, score_flow
from flows.select import select_flow
from flows.train import train_flow
from flows.unlearn import sweep_flow, unlearn_flow
from flows.validate import validate_flow
from tasks import canaries, demo
from tasks.config import get_settings
from tasks.dedup import MinhashConfig
from tasks.deletion import requests
from tasks.deletion.selector import DELETION_EVENT, Selector
from tasks.deletion.verify import verify_deletion
from tasks.errors import Fatal
from tasks.ingest import IngestConfig
from tasks.names import check_names
from tasks.policy import load_policy
from tasks.sample import land_samples
from tasks.scoring import get_scorer
from tasks.selection import SelectionConfig
from tasks.status import store_status
from tasks.storage import Store
from tasks.training import TrainConfig
from tasks.unlearning import UnlearnConfig


class UnlearnOptions(Protocol):
    """What the unlearning flow takes from an unlearning config."""

    method: str
    retain_sample: int
    mink_sample: int
    oracle_seeds: int
    max_steps: int


def run_sample(limit: int | None) -> dict[str, Any]:
    """Land the bundled corpora under ``raw/`` (no engine needed; kept here beside the other steps)."""
    store = Store.from_settings()
    store.ensure_bucket()
    return {"ok": True, "store": store.url, "sources": land_samples(store, limit=limit)}


def run_ingest(sources: list[str] | None, threshold: float = 0.8, ngram: int = 5) -> dict[str, Any]:
    check_names("--source", sources)
    settings = get_settings()
    ensure_prefect_api(settings)
    cfg = IngestConfig.from_settings(settings, minhash=MinhashConfig(threshold=threshold, ngram=ngram))
    result = ingest_flow.with_options(task_runner=dask_task_runner(settings))(sources=sources, cfg=cfg)
    return {"ok": not result["errors"], **result}


def run_pipeline(**params: Any) -> dict[str, Any]:
    """The whole chain (``flows/pipeline.py``); ``params`` are the pipeline flow's parameters."""
    ensure_prefect_api()
    return pipeline_flow(**params)


def run_validate(policy_path: str | None) -> dict[str, Any]:
    policy = load_policy(policy_path)  # a bad policy stops here, before anything changes
    settings = get_settings()
    ensure_prefect_api(settings)
    return {"ok": True, **validate_flow.with_options(task_runner=dask_task_runner(settings))(policy=policy)}


def run_score(scorers: list[str] | None, sources: list[str] | None = None) -> dict[str, Any]:
    for name in scorers or []:
        get_scorer(name)  # unknown names fail here, listing the valid ones
    check_names("--source", sources)
    settings = get_settings()
    ensure_prefect_api(settings)
    runs = score_flow.with_options(task_runner=dask_task_runner(settings))(scorers or ORDER, sources)
    return {"ok": not any(r.get("failed") for r in runs), "runs": runs}


def run_select(cfg: SelectionConfig) -> dict[str, Any]:
    """A dataset version; with ``cfg.canaries`` and no live canary yet, a generation is planted, ingested and
    validated first (for ``cfg.labels``, else every label of the selected sources)."""
    ensure_prefect_api()
    store = Store.from_settings()
    if cfg.canaries and not canaries.live(store).num_rows:
        canaries_flow(list(cfg.labels or canaries.pool_labels(store, cfg.sources)),
                      max(cfg.canaries, canaries.DEFAULT_COUNT))
    return select_flow(cfg)


def run_train(cfg: TrainConfig) -> dict[str, Any]:
    ensure_prefect_api()
    return train_flow(cfg)


def file_deletion(selector: Selector, reason: str | None) -> dict[str, Any]:
    """File a deletion request, durable before this returns; with a Prefect server configured, announce it so the
    unlearning deployment takes over."""
    if selector.kind == "source":
        check_names("--source", selector.values)  # no folder of raw/ has another name: it would match nothing
    doc = requests.submit(Store.from_settings(), selector.kind, selector.values, reason)
    filed = {"ok": True, "request_id": doc["request_id"], "status": doc["status"]}
    if get_settings().prefect_server_configured:
        emit_deletion_requested(doc["request_id"], selector.kind)
        filed["event"] = DELETION_EVENT
    return filed


def apply_filed(filed: dict[str, Any], apply: bool | None, purge: bool = True) -> dict[str, Any]:
    """Apply a request :func:`file_deletion` filed, here and now when ``apply`` says so; by default (None) only
    when no configured Prefect server's deployment will. Without ``purge`` its bytes wait for the next pass."""
    if not (apply if apply is not None else not get_settings().prefect_server_configured):
        return filed
    done = run_apply(filed["request_id"], purge)
    if not done:
        return filed
    return {**filed, "status": done[0]["status"], "resolved": done[0]["resolved"]["counts"],
            "applied": done[0]["applied"]}


def run_apply(request_id: str | None = None, purge: bool = True) -> list[dict[str, Any]]:
    ensure_prefect_api()
    return apply_deletions_flow(request_id, purge)


def run_purge() -> dict[str, Any]:
    ensure_prefect_api()
    return purge_flow.with_options(task_runner=purge_runner())()


def run_unlearn(request_id: str, cfg: UnlearnOptions) -> dict[str, Any]:
    ensure_prefect_api()
    return unlearn_flow(request_id, cfg.method, cfg.retain_sample, cfg.mink_sample, cfg.oracle_seeds, cfg.max_steps)


def run_sweep() -> list[dict[str, Any]]:
    ensure_prefect_api()
    return sweep_flow(min_age_seconds=0)


def run_drill(method: str = "auto", retain_sample: int = 1000, mink_sample: int = 500) -> dict[str, Any]:
    """The canary drill (``flows/drill.py``); with no live model carrying canaries it fails before any flow runs."""
    UnlearnConfig(method=method)  # an unknown method fails here, listing the valid ones
    settings = get_settings()
    canaries.drill_target(Store.from_settings(), settings.mlflow_tracking_uri)
    ensure_prefect_api(settings)
    return drill_flow(method, retain_sample, mink_sample)


def run_demo(quick: bool, on_step: Callable[[str], None], drill: bool = False, lm: bool = False) -> dict[str, Any]:
    """The demo: land the corpora, run the chain (audit canaries in the training set), delete one owner the model
    learned from and unlearn it through to the certificate, then (``drill``) the canary drill. With ``lm`` the
    model is a causal language model on a few accounts' tweets (``tasks.demo.LM_*``). ``on_step`` hears what
    starts next (the terminal shows it)."""
    if lm and (quick or drill):
        raise Fatal("--lm runs its own size and carries no canaries: use it without --quick and --drill")
    plan = demo.demo_plan(quick, drill, lm)
    on_step(f"landing the bundled corpora ({plan.sample_limit or 'all'} rows each)")
    steps: dict[str, Any] = {"sample": run_sample(plan.sample_limit)}
    on_step("running the chain: ingest, validate, score, select, train, evaluate")
    steps["pipeline"] = run_pipeline(**plan.pipeline, canaries=plan.canaries)
    store = Store.from_settings()
    chosen = demo.choose_owner(store, steps["pipeline"]["select"]["ref"])
    on_step(f"deleting owner {chosen['owner']} and unlearning the model")
    request = requests.submit(store, "owner", [chosen["owner"]], demo.withdrawal_reason(chosen["owner"]))
    steps["deletion"] = {**chosen, "request_id": request["request_id"]}
    steps["unlearn"] = run_unlearn(request["request_id"], UnlearnConfig(**plan.unlearn))
    on_step("verifying that nothing of the owner's texts is left anywhere the platform wrote")
    report = verify_deletion(store, get_settings(), request["request_id"])
    steps["verification"] = {k: report[k] for k in ("clean", "complete", "hits", "scanned", "not_scanned")}
    if plan.drill:
        on_step("drill: deleting the model's audit canaries through the same chain, then planting the next ones")
        steps["drill"] = drill_flow(**plan.unlearn)
    return {"ok": True, **steps, "status": store_status(store)}
