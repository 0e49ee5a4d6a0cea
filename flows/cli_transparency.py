"""The ``custody summary`` and ``custody export`` commands; ``flows/cli.py`` registers them (it has no room).

``summary`` runs a flow (a Prefect artifact), so it starts Prefect like the other commands that do; ``export`` only
reads the store and writes under ``reports/``: it imports no engine and starts no server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from flows.render import emit, out, table_of
from flows.runtime import configure_environment
from tasks.storage import Store

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")]


def show_summary(r: dict[str, Any]) -> None:
    if r.get("kept"):
        out.print(f"{r['model']}: summary superseded by {r['superseded_by']}, kept as issued: {r['markdown']}")
        return
    out.print(f"public summary of [bold]{r['model']}[/bold] ({r['training_records']} training records, "
              f"{r['size_band']}; {r['tdm_reservations_honoured']} TDM reservations honoured; {r['unknown']} "
              f"answer(s) the ledger cannot give)\n{r['markdown']}\n{r['json']}")
    if r["superseded"]:
        out.print(f"the summary of {r['superseded']} is now marked superseded")


def show_export(r: dict[str, Any]) -> None:
    out.print(table_of([{k: r[k] for k in ("dataset", "format", "records", "validator", "valid", "path")}],
                       "Export"))


def summary(model: Annotated[str, typer.Option(help="NAME@VERSION of a registered model")],
            provider: Annotated[str | None, typer.Option(help="provider name and contact, as published")] = None,
            as_json: JsonOpt = False) -> None:
    """Write the EU AI Act public summary of a model version's training content (reports/, MLflow, Prefect)."""
    configure_environment()
    from flows.transparency import run_summary

    emit(run_summary(model, provider), as_json, show_summary)


def export(dataset: Annotated[str, typer.Option(help="NAME@VERSION (see custody datasets)")],
           fmt: Annotated[str, typer.Option("--format", help="croissant | spdx")],
           as_json: JsonOpt = False) -> None:
    """Write a dataset version as Croissant 1.1 (RAI) or SPDX 3.0.1 JSON-LD under reports/, once its validator
    (mlcroissant, the SPDX 3.0.1 Python bindings) accepts it."""
    from tasks.transparency import export_dataset

    emit(export_dataset(Store.from_settings(), dataset, fmt), as_json, show_export)


def register(command: Callable[[Callable[..., None]], Any]) -> None:
    """Register both commands through the CLI's ``command`` (its error handling and exit codes)."""
    for fn in (summary, export):
        command(fn)
