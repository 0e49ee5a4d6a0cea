"""The ``custody`` command line: one command per stage, each with ``--json`` for machines.

Commands only parse arguments and render results (``flows/render.py``). Commands that change the store start
their flows through ``flows/launch.py``, imported inside them: read-only commands (status, lineage, datasets,
deletions, doctor) then import no engine, start no Prefect server and no Dask cluster. With ``--json`` a command
prints exactly one JSON object on stdout (progress and logs go to stderr). Exit codes (README, "Exit codes and
error codes"): 0 ok; 1 a handled error or a result that is not ok; 2 a bug (code ``internal``) or a usage error.
An error under ``--json`` is ``{"ok": false, "error", "code", "type"}``; its traceback shows with ``--debug`` only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Annotated, Any

import typer

from flows import cli_deletions, cli_transparency, render
from flows.render import emit, err
from flows.runtime import configure_environment, exit_cleanly, mask_log_secrets, start_prefect_api
from tasks.config import get_settings
from tasks.storage import Store


class App(typer.Typer):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The ``custody`` program (tests invoke the command instead): a read-only command exits without native
        teardown (``runtime.exit_cleanly``)."""
        return exit_cleanly(lambda: super(App, self).__call__(*args, **kwargs))


app = App(help="Custody: chain of custody for training data.", no_args_is_help=True, pretty_exceptions_enable=False)
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")]
options = {"debug": False}  # the global options of this invocation, set by the app's callback before any command


@app.callback()
def global_options(debug: Annotated[bool, typer.Option("--debug", envvar="CUSTODY_DEBUG",
                                                       help="show the traceback of an error")] = False) -> None:
    """Custody: chain of custody for training data."""
    options["debug"] = debug
    mask_log_secrets()


def command(fn: Callable[..., None]) -> Callable[..., None]:
    """Register ``fn`` as a command whose errors are reported (as JSON with ``--json``), not raised: exit 1 for a
    handled error, 2 for any other exception (a bug). Typer's own exits and usage errors pass through."""

    @functools.wraps(fn)
    def handled(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            raise typer.Exit(render.emit_error(exc, kwargs.get("as_json", False), options["debug"])) from exc

    return app.command()(handled)


def launcher(flows: bool = True) -> ModuleType:
    """``flows.launch``, imported only by commands that start flows, after the environment (Prefect's home and
    logging) is set for Prefect's import; the temporary Prefect server, when one will run the ``flows``, is
    started first, so that it boots while this process imports them."""
    configure_environment()
    if flows:
        start_prefect_api()
    from flows import launch

    return launch


@command
def doctor(as_json: JsonOpt = False) -> None:
    """Show the configuration in use and check storage, Dask, Prefect, MLflow and the torch device."""
    from tasks.doctor import run_checks

    configure_environment()
    result = run_checks(get_settings())
    emit(result, as_json, render.show_doctor)


@command
def sample(limit: Annotated[int | None, typer.Option(help="rows per corpus (a fixed random subset)")] = None,
           as_json: JsonOpt = False) -> None:
    """Land the bundled real corpora (Rotten Tomatoes, Health News tweets) under raw/."""
    emit(launcher(flows=False).run_sample(limit), as_json, render.show_sample)


@command
def ingest(source: Annotated[list[str] | None, typer.Option(help="only these sources")] = None,
           threshold: Annotated[float, typer.Option(help="near-duplicate Jaccard threshold")] = 0.8,
           ngram: Annotated[int, typer.Option(help="words per shingle")] = 5,
           as_json: JsonOpt = False) -> None:
    """Ingest raw/ into records/ (parallel on Dask), with exact and near-duplicate clustering."""
    emit(launcher().run_ingest(source, threshold, ngram), as_json, render.show_ingest)


@command
def run(policy: Annotated[str, typer.Option(help="policy YAML, or a built-in name")] = "research",
        model: Annotated[str, typer.Option(help="minilm or tiny")] = "minilm",
        epochs: int = 2, shards: Annotated[int, typer.Option(help="SISA shards for the model")] = 1,
        as_json: JsonOpt = False) -> None:
    """The whole chain once: ingest → validate → score → select → train → evaluate (flows/pipeline.py)."""
    result = launcher().run_pipeline(policy=policy, model=model, epochs=epochs, shards=shards)
    emit({"ok": True, **result}, as_json, render.show_pipeline)


@command
def demo(quick: Annotated[bool, typer.Option("--quick", help="a smaller sample (1,200 rows a corpus)")] = False,
         drill: Annotated[bool, typer.Option("--drill", help="end with the canary drill (one unlearning)")] = False,
         lm: Annotated[bool, typer.Option("--lm", help="a language model (SmolLM2 + LoRA) on four accounts' "
                                                       "tweets instead of the sentiment classifier")] = False,
         as_json: JsonOpt = False) -> None:
    """The main job: land the bundled corpora, run the whole chain with embedded defaults (audit canaries in the
    training set), then delete one owner the model learned from and unlearn it through to the certificate."""
    result = launcher().run_demo(quick, lambda step: err.print(f"[bold]demo[/bold]: {step}"), drill, lm)
    emit(result, as_json, render.show_demo)


@command
def validate(policy: Annotated[str | None, typer.Option(help="policy YAML, or a built-in name")] = None,
             as_json: JsonOpt = False) -> None:
    """Validate every record against a provenance policy (GX suite); quarantine what fails, with reasons."""
    emit(launcher().run_validate(policy), as_json, render.show_validate)


@command
def delete(owner: Annotated[str | None, typer.Option(help="every record of this owner")] = None,
           record_id: Annotated[list[str] | None, typer.Option(help="these record ids")] = None,
           source: Annotated[str | None, typer.Option(help="every record of this source")] = None,
           text_file: Annotated[str | None, typer.Option(help="file with texts to delete, one per line")] = None,
           reason: Annotated[str | None, typer.Option(help="why (kept in the ledger)")] = None,
           apply: Annotated[bool | None, typer.Option(help="apply it here and now; default: yes unless a Prefect "
                                                         "server is configured, whose deployment does it")] = None,
           defer_purge: Annotated[bool, typer.Option(help="leave the bytes to the next `custody purge` pass "
                                                     "(unreadable at once all the same)")] = False,
           as_json: JsonOpt = False) -> None:
    """File a deletion request (durable before anything else happens), then apply it, or, with a Prefect server
    configured (PREFECT_API_URL), emit ``custody.deletion.requested`` so the unlearning deployment takes over."""
    from tasks.deletion.selector import build_selector

    texts = render.text_lines(text_file) if text_file else None
    selector = build_selector(owner=owner, record_ids=record_id, source=source, texts=texts)
    launch = launcher(flows=apply is not False)
    filed = launch.file_deletion(selector, reason)
    if not as_json:
        render.out.print(f"deletion request [bold]{filed['request_id']}[/bold] received")
    emit(launch.apply_filed(filed, apply, not defer_purge), as_json, render.show_deletion)


@command
def server(host: Annotated[str, typer.Option(help="listen address")] = "127.0.0.1",
           port: Annotated[int, typer.Option(help="Prefect server port (UI and API)")] = 4200,
           schedules: Annotated[bool, typer.Option(help="keep the pipeline's cron schedule")] = True) -> None:
    """Serve the deployments of prefect.yaml from this machine (the scheduled pipeline, and the unlearning that a
    deletion's event triggers), on the Prefect server PREFECT_API_URL names, or on one started here (UI at
    http://HOST:PORT)."""
    configure_environment()
    from flows.deployments import serve_here

    serve_here(host, port, schedules, on_ready=lambda url: err.print(f"serving the prefect.yaml deployments on {url}"))


@command
def unlearn(request_id: Annotated[str, typer.Argument(help="deletion request id (see custody deletions)")],
            method: Annotated[str, typer.Option(help="auto | sisa | retrain | neggrad-plus | npo | scrub")] = "auto",
            oracle_seeds: Annotated[int, typer.Option(help="2: a second oracle seed measures the noise floor")] = 1,
            max_steps: Annotated[int, typer.Option(help="optimizer steps an approximate method may take")] = 40,
            as_json: JsonOpt = False) -> None:
    """Unlearn a deletion request from every model that learned it, judge it against a retrained oracle,
    promote or fall back, and write the deletion certificate."""
    launch = launcher()
    from tasks.unlearning import UnlearnConfig

    result = launch.run_unlearn(request_id, UnlearnConfig(method=method, oracle_seeds=oracle_seeds,
                                                          max_steps=max_steps))
    emit({"ok": True, **result}, as_json, render.show_unlearn)


@command
def drill(method: Annotated[str, typer.Option(help="auto | sisa | retrain | neggrad-plus | npo | scrub")] = "auto",
          as_json: JsonOpt = False) -> None:
    """Audit unlearning on the audit canaries: delete the current generation through the whole chain (request,
    purge, unlearn, certificate, verify-deletion), then plant the next one. Select with --canaries N first."""
    emit(launcher().run_drill(method), as_json, lambda r: render.out.print(render.escape(
        f"drill {r['request_id']} (canary generation {r['generation']}): {r['status']}; verdict: {r['verdict']}; "
        f"verify-deletion clean: {r['verification']['clean']}; generation {r['next_generation']['generation']} "
        f"planted\ncertificate: {r['certificate']}"), highlight=False))


@command
def lineage(owner: Annotated[str | None, typer.Option()] = None,
            record_id: Annotated[list[str] | None, typer.Option()] = None,
            dataset: Annotated[str | None, typer.Option(help="NAME@VERSION")] = None,
            model: Annotated[str | None, typer.Option(help="NAME@VERSION")] = None,
            as_json: JsonOpt = False) -> None:
    """Which datasets and models hold these records (the index is rebuilt when sources changed)."""
    from tasks import lineage as lin

    store = Store.from_settings()
    lin.build_index(store, get_settings().mlflow_tracking_uri)
    result = lin.query(store, owner=owner, record_ids=record_id, dataset=dataset, model=model)
    emit({"ok": True, **result}, as_json, render.show_lineage)


@command
def status(as_json: JsonOpt = False) -> None:
    """Sources, records, quarantine by reason, validation, datasets, models and open deletion requests."""
    from tasks.status import store_status

    emit({"ok": True, **store_status(Store.from_settings())}, as_json, render.show_status)


@command
def score(scorer: Annotated[list[str] | None, typer.Option(help="scorer(s) to run; all when omitted")] = None,
          source: Annotated[list[str] | None, typer.Option(help="only these sources (embeddings, quality)")] = None,
          as_json: JsonOpt = False) -> None:
    """Score validated records: embeddings, quality, dynamics, influence, poisoning (attributes/)."""
    emit(launcher().run_score(scorer, source), as_json, render.show_score)


@command
def select(name: Annotated[str, typer.Option(help="dataset name")],
           strategy: Annotated[str, typer.Option(help="random, quality, kcenter, facility, target, dsir, "
                                                      "influence")] = "random",
           budget: Annotated[float, typer.Option(help="records (>= 1) or fraction of the train pool (< 1)")] = 0.2,
           target: Annotated[str | None, typer.Option(help="source:NAME, label:VALUE or a text file")] = None,
           balance: Annotated[str | None, typer.Option(help="'label' for equal counts per label")] = None,
           exclude: Annotated[list[str] | None, typer.Option(help="SCORER:THRESHOLD, e.g. poisoning:0.6")] = None,
           source: Annotated[list[str] | None, typer.Option(help="only these sources")] = None,
           label: Annotated[list[str] | None, typer.Option(help="only these labels")] = None,
           owner: Annotated[list[str] | None, typer.Option(help="only these owners' records")] = None,
           shards: Annotated[int, typer.Option(help="shards for sharded (SISA) training")] = 4,
           canaries: Annotated[int, typer.Option(help="audit canaries in the train split (custody drill)")] = 0,
           seed: int = 0, as_json: JsonOpt = False) -> None:
    """Select a dataset version from validated, non-tombstoned records into a versioned manifest."""
    launch = launcher()
    from tasks.selection import SelectionConfig

    cfg = SelectionConfig(name=name, strategy=strategy, budget=budget, target=target, balance=balance,
                          exclude=tuple(exclude or ()), seed=seed, sources=tuple(source) if source else None,
                          labels=tuple(label) if label else None, owners=tuple(owner) if owner else None,
                          shards=shards, canaries=canaries)
    emit({"ok": True, **launch.run_select(cfg)}, as_json, render.show_select)


@command
def datasets(as_json: JsonOpt = False) -> None:
    """List dataset names and versions."""
    from tasks.selection import list_datasets
    emit({"ok": True, "datasets": list_datasets(Store.from_settings())}, as_json, render.show_datasets)


@command
def train(dataset: Annotated[str, typer.Option(help="NAME@VERSION (see custody datasets)")],
          model: Annotated[str, typer.Option(help="classifiers: minilm (real weights) or tiny (for tests); causal "
                                                  "language models: smollm2 (real weights) or tiny-lm")] = "minilm",
          lora_rank: Annotated[int, typer.Option(help="LoRA rank")] = 8,
          full: Annotated[bool, typer.Option("--full", help="full fine-tuning instead of LoRA")] = False,
          shards: Annotated[int, typer.Option(help="SISA shards (1 or the dataset's shard count)")] = 1,
          epochs: int = 2, lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 2e-3,
          seed: int = 0, as_json: JsonOpt = False) -> None:
    """Fine-tune a classifier or a causal language model on a dataset version; tracked in MLflow and registered."""
    launch = launcher()
    from tasks.training import TrainConfig

    result = launch.run_train(TrainConfig(dataset=dataset, model=model, lora_rank=0 if full else lora_rank,
                                          shards=shards, epochs=epochs, lr=lr, seed=seed))
    emit({"ok": True, **result}, as_json, render.show_train)


cli_transparency.register(command)  # summary, export (flows/cli_transparency.py)
cli_deletions.register(command, launcher)  # deletions, purge, verify-deletion (flows/cli_deletions.py)
if __name__ == "__main__":
    app()
