"""The ``custody`` command line: one command per stage, each with ``--json`` for machines.

With ``--json`` a command prints exactly one JSON object on stdout (progress and logs go to stderr).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows.runtime import configure_environment, ensure_prefect_api
from tasks.config import get_settings
from tasks.errors import CustodyError

app = typer.Typer(help="Custody: chain of custody for training data.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
out = Console()
err = Console(stderr=True)
# `custody demo --quick`: 1,200 rows a corpus (~250 training records), only the scorers the selection uses,
# smaller membership-attack samples
QUICK_SAMPLE = 1200
QUICK_PIPELINE: dict[str, Any] = {"epochs": 3, "scorers": ["embeddings", "poisoning"], "membership_sample": 100}
QUICK_UNLEARN: dict[str, Any] = {"retain_sample": 300, "mink_sample": 100}
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")]


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], None]) -> None:
    """Print ``result`` as JSON or in human form."""
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        render(result)


def table_of(rows: list[dict[str, Any]], title: str) -> Table:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    return table


def fail(exc: Exception, as_json: bool) -> None:
    """Report a handled error and exit 1 (as JSON when asked)."""
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, "error": str(exc), "type": type(exc).__name__}) + "\n")
    else:
        err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)


@app.command()
def doctor(as_json: JsonOpt = False) -> None:
    """Show the configuration in use and check storage, Dask, Prefect, MLflow and the torch device."""
    from tasks.doctor import run_checks

    configure_environment()
    result = run_checks(get_settings())
    emit(result, as_json, lambda r: (out.print(table_of([{"setting": k, "value": v} for k, v in
                                                          r["settings"].items()], "Settings")),
                                     out.print(table_of(r["checks"], "Checks"))))
    if not result["ok"]:
        raise typer.Exit(1)


@app.command()
def sample(limit: Annotated[int | None, typer.Option(help="rows per corpus (a fixed random subset)")] = None,
           as_json: JsonOpt = False) -> None:
    """Land the bundled real corpora (Rotten Tomatoes, Health News tweets) under raw/."""
    emit(run_sample(limit), as_json, show_sample)


def run_sample(limit: int | None) -> dict[str, Any]:
    from tasks.sample import land_samples
    from tasks.storage import Store

    store = Store.from_settings()
    store.ensure_bucket()
    return {"ok": True, "store": store.url, "sources": land_samples(store, limit=limit)}


def show_sample(result: dict[str, Any]) -> None:
    out.print(table_of([{"source": k, **v} for k, v in result["sources"].items()], f"Landed under {result['store']}"))


@app.command()
def ingest(source: Annotated[list[str] | None, typer.Option(help="only these sources")] = None,
           threshold: Annotated[float, typer.Option(help="near-duplicate Jaccard threshold")] = 0.8,
           ngram: Annotated[int, typer.Option(help="words per shingle")] = 5,
           as_json: JsonOpt = False) -> None:
    """Ingest raw/ into records/ (parallel on Dask), with exact and near-duplicate clustering."""
    try:
        result = run_ingest(source, threshold, ngram)
    except CustodyError as exc:
        fail(exc, as_json)
    emit(result, as_json, show_ingest)


def run_ingest(sources: list[str] | None, threshold: float = 0.8, ngram: int = 5) -> dict[str, Any]:
    from flows.ingest import ingest_flow
    from flows.runtime import dask_task_runner
    from tasks.dedup import MinhashConfig
    from tasks.ingest import IngestConfig

    settings = get_settings()
    ensure_prefect_api(settings)
    cfg = IngestConfig(max_record_bytes=settings.max_record_bytes,
                       minhash=MinhashConfig(threshold=threshold, ngram=ngram))
    result = ingest_flow.with_options(task_runner=dask_task_runner(settings))(sources=sources, cfg=cfg)
    return {"ok": not result["errors"], **result}


def show_ingest(result: dict[str, Any]) -> None:
    out.print(table_of([_compact(row) for row in result["sources"]], "Ingestion"))
    out.print(f"near-dup clusters in store: {result['clusters']['near_dup_clusters']}, "
              f"exact duplicates: {result['clusters']['exact_duplicates']}")


@app.command()
def run(policy: Annotated[str, typer.Option(help="policy YAML, or a built-in name")] = "research",
        model: Annotated[str, typer.Option(help="minilm or tiny")] = "minilm",
        epochs: int = 2, shards: Annotated[int, typer.Option(help="SISA shards for the model")] = 1,
        as_json: JsonOpt = False) -> None:
    """The whole chain once: ingest → validate → score → select → train → evaluate (flows/pipeline.py)."""
    try:
        result = run_pipeline(policy=policy, model=model, epochs=epochs, shards=shards)
    except CustodyError as exc:
        fail(exc, as_json)
    emit({"ok": True, **result}, as_json, show_pipeline)


def run_pipeline(**params: Any) -> dict[str, Any]:
    from flows.pipeline import pipeline_flow

    ensure_prefect_api()
    return pipeline_flow(**params)


def show_pipeline(r: dict[str, Any]) -> None:
    show_ingest(r["ingest"])
    out.print(table_of(r["validate"]["sources"], f"Validation under policy {r['validate']['policy']}"))
    out.print(table_of(r["score"]["runs"], "Scoring runs (attributes/)"))
    out.print(f"dataset [bold]{r['select']['ref']}[/bold]: {r['select']['counts']} "
              f"(excluded {r['select']['excluded']} flagged records)")
    m, e = r["train"]["metrics"], r["evaluate"]
    out.print(f"model [bold]{r['train']['ref']}[/bold]: test accuracy {m['test_accuracy']:.3f}, "
              f"F1 {m['test_f1']:.3f}; "
              f"membership baseline AUC {e['mia_loss_auc']:.3f} (loss), {e['mia_mink_auc']:.3f} (Min-K%)")


@app.command()
def demo(quick: Annotated[bool, typer.Option("--quick", help="a smaller sample (1,200 rows a corpus)")] = False,
         as_json: JsonOpt = False) -> None:
    """The main job: land the bundled corpora, run the whole chain with embedded defaults, then delete one owner
    the model learned from and unlearn it through to the certificate."""
    from tasks import ledger
    from tasks.selection import owner_shares
    from tasks.storage import Store
    from tasks.unlearn import UnlearnConfig

    steps: dict[str, Any] = {"sample": run_sample(QUICK_SAMPLE if quick else None)}
    steps["pipeline"] = run_pipeline(**QUICK_PIPELINE if quick else {})
    store = Store.from_settings()
    owner, records, share = owner_shares(store, steps["pipeline"]["select"]["ref"])[0]
    request = ledger.submit(store, "owner", [owner], f"demo: {owner} withdrew consent")
    steps["deletion"] = {"owner": owner, "train_records": records, "share": share, "request_id": request["request_id"]}
    steps["unlearn"] = run_unlearn(request["request_id"], UnlearnConfig(**QUICK_UNLEARN if quick else {}))
    from tasks.status import store_status

    emit({"ok": True, **steps, "status": store_status(store)}, as_json, show_demo)


def show_demo(r: dict[str, Any]) -> None:
    show_sample(r["sample"])
    show_pipeline(r["pipeline"])
    d, u = r["deletion"], r["unlearn"]
    out.print(f"\ndeleted owner [bold]{d['owner']}[/bold] ({d['train_records']} training records, {d['share']:.1%}); "
              f"request {d['request_id']} is [bold]{u['status']}[/bold]")
    if u["certificate"]["models"]:
        out.print(table_of(u["certificate"]["models"], "Unlearning"))
    show_status(r["status"])
    settings = get_settings()
    out.print(f"\n[bold]Certificate[/bold]: {u['certificate']['markdown']}\n"
              f"[bold]Store[/bold]: {settings.store_url}\n"
              f"[bold]MLflow UI[/bold]: mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}\n"
              "[bold]Prefect UI[/bold]: `custody server` (http://127.0.0.1:4200) keeps flow runs and serves the "
              "deployments; the demo's own temporary server stopped with it.")


@app.command()
def validate(policy: Annotated[str | None, typer.Option(help="policy YAML, or a built-in name")] = None,
             as_json: JsonOpt = False) -> None:
    """Validate every record against a provenance policy (GX suite); quarantine what fails, with reasons."""
    try:
        result = run_validate(policy)
    except CustodyError as exc:
        fail(exc, as_json)
    emit(result, as_json,
         lambda r: out.print(table_of(r["sources"], f"Validation: {r['policy']} ({r['policy_hash']})")))


def run_validate(policy_path: str | None) -> dict[str, Any]:
    from flows.runtime import dask_task_runner
    from flows.validate import validate_flow
    from tasks.policy import load_policy

    policy = load_policy(policy_path)  # a bad policy stops here, before anything changes
    settings = get_settings()
    ensure_prefect_api(settings)
    return {"ok": True, **validate_flow.with_options(task_runner=dask_task_runner(settings))(policy=policy)}


@app.command()
def delete(owner: Annotated[str | None, typer.Option(help="every record of this owner")] = None,
           record_id: Annotated[list[str] | None, typer.Option(help="these record ids")] = None,
           source: Annotated[str | None, typer.Option(help="every record of this source")] = None,
           text_file: Annotated[str | None, typer.Option(help="file with texts to delete, one per line")] = None,
           reason: Annotated[str | None, typer.Option(help="why (kept in the ledger)")] = None,
           apply: Annotated[bool | None, typer.Option(help="apply it here and now; default: yes unless a Prefect "
                                                         "server is configured, whose deployment does it")] = None,
           as_json: JsonOpt = False) -> None:
    """File a deletion request (durable before anything else happens), then apply it, or, with a Prefect server
    configured (PREFECT_API_URL), emit ``custody.deletion.requested`` so the unlearning deployment takes over."""
    from pathlib import Path

    from tasks import ledger
    from tasks.storage import Store

    chosen = [(k, v) for k, v in (("owner", [owner] if owner else None), ("record_id", record_id),
                                  ("source", [source] if source else None),
                                  ("text", ledger.text_hashes(Path(text_file).read_text().splitlines())
                                   if text_file else None)) if v]
    if len(chosen) != 1:
        fail(typer.BadParameter("give exactly one of --owner, --record-id, --source, --text-file"), as_json)
    store = Store.from_settings()
    doc = ledger.submit(store, chosen[0][0], chosen[0][1], reason)
    if not as_json:
        out.print(f"deletion request [bold]{doc['request_id']}[/bold] received")
    result = {"ok": True, "request_id": doc["request_id"], "status": doc["status"]}
    if get_settings().prefect_server_configured:
        from flows.deployments import DELETION_EVENT, emit_deletion_requested

        emit_deletion_requested(doc["request_id"], chosen[0][0])
        result["event"] = DELETION_EVENT
    if apply if apply is not None else not get_settings().prefect_server_configured:
        done = run_apply(doc["request_id"])
        if done:
            result.update(status=done[0]["status"], resolved=done[0]["resolved"]["counts"], applied=done[0]["applied"])
    emit(result, as_json, lambda r: out.print(f"status: {r['status']} {r.get('resolved', '')} {r.get('applied', '')}"))


@app.command()
def server(host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
           port: Annotated[int, typer.Option(help="Prefect server port (UI and API)")] = 4200,
           schedules: Annotated[bool, typer.Option(help="keep the pipeline's cron schedule")] = True) -> None:
    """Serve the deployments of prefect.yaml from this machine (the scheduled pipeline, and the unlearning that a
    deletion's event triggers), on the Prefect server PREFECT_API_URL names, or on one started here (UI at
    http://HOST:PORT)."""
    import os
    import subprocess

    from prefect import serve

    from flows.deployments import build_deployments
    from flows.runtime import wait_for_api

    configure_environment()
    proc = None
    if not get_settings().prefect_server_configured:
        url = f"http://{host}:{port}/api"
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port",
                                 str(port)], env={**os.environ, "PREFECT_API_URL": url})  # one process group
        os.environ["PREFECT_API_URL"] = url
    try:
        wait_for_api(os.environ["PREFECT_API_URL"], proc)
        err.print(f"serving the prefect.yaml deployments on {os.environ['PREFECT_API_URL']}")
        serve(*build_deployments(schedules))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


def run_apply(request_id: str | None = None) -> list[dict[str, Any]]:
    from flows.delete import apply_deletions_flow

    ensure_prefect_api()
    return apply_deletions_flow(request_id)


@app.command()
def unlearn(request_id: Annotated[str, typer.Argument(help="deletion request id (see custody deletions)")],
            method: Annotated[str, typer.Option(help="auto | sisa | retrain | neggrad-plus | scrub")] = "auto",
            as_json: JsonOpt = False) -> None:
    """Unlearn a deletion request from every model that learned it, judge it against a retrained oracle,
    promote or fall back, and write the deletion certificate."""
    from tasks.unlearn import UnlearnConfig

    try:
        result = run_unlearn(request_id, UnlearnConfig(method=method))
    except CustodyError as exc:
        fail(exc, as_json)
    emit({"ok": True, **result}, as_json, lambda r: (
        out.print(table_of(r["certificate"]["models"], f"Unlearning for {request_id}") if r["certificate"]["models"]
                  else f"{request_id}: no model held these records"),
        out.print(f"status [bold]{r['status']}[/bold]; certificate: {r['certificate']['markdown']}")))


def run_unlearn(request_id: str, cfg: Any) -> dict[str, Any]:
    from flows.unlearn import unlearn_flow

    ensure_prefect_api()
    return unlearn_flow(request_id, cfg.method, cfg.retain_sample, cfg.mink_sample)


@app.command()
def deletions(request: Annotated[str | None, typer.Option(help="show one request in full")] = None,
              apply: Annotated[bool, typer.Option("--apply", help="apply every open request now")] = False,
              finish: Annotated[bool, typer.Option("--finish", help="unlearn and certify every request not yet "
                                                   "certified (what the sweep deployment does)")] = False,
              as_json: JsonOpt = False) -> None:
    """List deletion requests and their status (or show one, or apply the open ones, or finish them)."""
    from tasks import ledger
    from tasks.storage import Store

    store = Store.from_settings()
    try:
        if apply:
            run_apply()
        if finish:
            run_sweep()
        if request:
            doc = ledger.load(store, request)
            doc["resolved"] = {k: v for k, v in doc.get("resolved", {}).items() if k != "content_hashes"}
            if doc.get("certificate"):
                doc["certificate"]["document"] = store.read_json(store.key_of(doc["certificate"]["json"]))
            emit({"ok": True, **doc}, as_json, lambda r: out.print_json(data=r))
            return
    except CustodyError as exc:
        fail(exc, as_json)
    rows = [{"request": d["request_id"], "created": d["created_at"][:19], "by": d["selector"]["kind"],
             "status": d["status"], "records": len(d.get("resolved", {}).get("record_ids", []))}
            for d in ledger.list_requests(store)]
    emit({"ok": True, "requests": rows}, as_json, lambda r: out.print(table_of(r["requests"], "Deletion requests")))


def run_sweep() -> list[dict[str, Any]]:
    from flows.unlearn import sweep_flow

    ensure_prefect_api()
    return sweep_flow(min_age_seconds=0)


@app.command()
def lineage(owner: Annotated[str | None, typer.Option()] = None,
            record_id: Annotated[list[str] | None, typer.Option()] = None,
            dataset: Annotated[str | None, typer.Option(help="NAME@VERSION")] = None,
            model: Annotated[str | None, typer.Option(help="NAME@VERSION")] = None,
            as_json: JsonOpt = False) -> None:
    """Which datasets and models hold these records (the index is rebuilt when sources changed)."""
    from tasks import lineage as lin
    from tasks.storage import Store

    store = Store.from_settings()
    try:
        lin.build_index(store, get_settings().mlflow_tracking_uri)
        result = lin.query(store, owner=owner, record_ids=record_id, dataset=dataset, model=model)
    except CustodyError as exc:
        fail(exc, as_json)
    emit({"ok": True, **result}, as_json,
         lambda r: (out.print(f"records: {r['records']}"), out.print(table_of(r["datasets"], "Datasets")),
                    out.print(table_of(r["models"], "Models"))))


@app.command()
def status(as_json: JsonOpt = False) -> None:
    """Sources, records, quarantine by reason, validation, datasets, models and open deletion requests."""
    from tasks.status import store_status
    from tasks.storage import Store

    result = {"ok": True, **store_status(Store.from_settings())}
    emit(result, as_json, show_status)


def show_status(r: dict[str, Any]) -> None:
    out.print(f"[bold]store[/bold] {r['store']}: {r['records']} records, {r['quarantined']} quarantined, "
              f"{r['tombstoned']} tombstoned")
    out.print(table_of(r["sources"], "Sources"))
    if r["quarantine_reasons"]:
        out.print(table_of([{"reason": k, "rows": v} for k, v in r["quarantine_reasons"].items()], "Quarantine"))
    out.print(f"validation: {r['validation']}")
    out.print(table_of(r["datasets"], "Datasets") if r["datasets"] else "datasets: none yet")
    out.print(f"deletion requests: {r['deletions']}")


@app.command()
def score(scorer: Annotated[list[str] | None, typer.Option(help="scorer(s) to run; all when omitted")] = None,
          source: Annotated[list[str] | None, typer.Option(help="only these sources (embeddings, quality)")] = None,
          as_json: JsonOpt = False) -> None:
    """Score validated records: embeddings, quality, dynamics, influence, poisoning (attributes/)."""
    try:
        result = run_score(scorer, source)
    except CustodyError as exc:
        fail(exc, as_json)
    emit(result, as_json, lambda r: out.print(table_of(r["runs"], "Scoring runs")))


def run_score(scorers: list[str] | None, sources: list[str] | None = None) -> dict[str, Any]:
    from flows.runtime import dask_task_runner
    from flows.score import ORDER, score_flow
    from tasks.scoring import get_scorer

    for name in scorers or []:
        get_scorer(name)  # unknown names fail here, listing the valid ones
    settings = get_settings()
    ensure_prefect_api(settings)
    runs = score_flow.with_options(task_runner=dask_task_runner(settings))(scorers or ORDER, sources)
    return {"ok": not any(r.get("failed") for r in runs), "runs": runs}


@app.command()
def select(name: Annotated[str, typer.Option(help="dataset name")],
           strategy: Annotated[str, typer.Option(help="random, quality, kcenter, facility, target, dsir, "
                                                      "influence")] = "random",
           budget: Annotated[float, typer.Option(help="records (>= 1) or fraction of the train pool (< 1)")] = 0.2,
           target: Annotated[str | None, typer.Option(help="source:NAME, label:VALUE or a text file")] = None,
           balance: Annotated[str | None, typer.Option(help="'label' for equal counts per label")] = None,
           exclude: Annotated[list[str] | None, typer.Option(help="SCORER:THRESHOLD, e.g. poisoning:0.6")] = None,
           source: Annotated[list[str] | None, typer.Option(help="only these sources")] = None,
           label: Annotated[list[str] | None, typer.Option(help="only these labels")] = None,
           shards: Annotated[int, typer.Option(help="shards for sharded (SISA) training")] = 4,
           seed: int = 0, as_json: JsonOpt = False) -> None:
    """Select a dataset version from validated, non-tombstoned records into a versioned manifest."""
    from tasks.selection import SelectionConfig

    try:
        cfg = SelectionConfig(name=name, strategy=strategy, budget=budget, target=target, balance=balance,
                              exclude=tuple(exclude or ()), seed=seed, sources=tuple(source) if source else None,
                              labels=tuple(label) if label else None, shards=shards)
        result = run_select(cfg)
    except CustodyError as exc:
        fail(exc, as_json)
    emit({"ok": True, **result}, as_json,
         lambda r: out.print(f"dataset [bold]{r['ref']}[/bold]: {r['counts']} (excluded {r['excluded']})"))


def run_select(cfg: Any) -> dict[str, Any]:
    from flows.select import select_flow

    ensure_prefect_api()
    return select_flow(cfg)


@app.command()
def datasets(as_json: JsonOpt = False) -> None:
    """List dataset names and versions."""
    from tasks.selection import list_datasets
    from tasks.storage import Store

    rows = list_datasets(Store.from_settings())
    emit({"ok": True, "datasets": rows}, as_json, lambda r: out.print(table_of(r["datasets"], "Datasets")))


@app.command()
def train(dataset: Annotated[str, typer.Option(help="NAME@VERSION (see custody datasets)")],
          model: Annotated[str, typer.Option(help="minilm (real weights) or tiny (for tests)")] = "minilm",
          lora_rank: Annotated[int, typer.Option(help="LoRA rank")] = 8,
          full: Annotated[bool, typer.Option("--full", help="full fine-tuning instead of LoRA")] = False,
          shards: Annotated[int, typer.Option(help="SISA shards (1 or the dataset's shard count)")] = 1,
          epochs: int = 2, lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 2e-3,
          seed: int = 0, as_json: JsonOpt = False) -> None:
    """Fine-tune a classifier on a dataset version; tracked in MLflow and registered."""
    from tasks.training import TrainConfig

    try:
        result = run_train(TrainConfig(dataset=dataset, model=model, lora_rank=0 if full else lora_rank,
                                       shards=shards, epochs=epochs, lr=lr, seed=seed))
    except CustodyError as exc:
        fail(exc, as_json)
    emit({"ok": True, **result}, as_json, lambda r: (
        out.print(f"registered [bold]{r['ref']}[/bold] (MLflow run {r['run_id']}) on {r['dataset']}"),
        out.print(table_of([{"metric": k, "value": round(v, 4)} for k, v in sorted(r["metrics"].items())],
                           "Metrics"))))


def run_train(cfg: Any) -> dict[str, Any]:
    from flows.train import train_flow

    ensure_prefect_api()
    return train_flow(cfg)


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    """A per-source summary row with quarantine reasons folded into one column."""
    reasons = ", ".join(f"{k.removeprefix('quarantined_')}={v}" for k, v in row.items()
                        if k.startswith("quarantined_") and v)
    keep = ("source", "files", "rows_in", "records", "exact_duplicates", "near_dup_members", "quarantined", "error")
    return {**{k: row[k] for k in keep if k in row}, "reasons": reasons}


def main() -> None:
    app()


if __name__ == "__main__":
    main()
