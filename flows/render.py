"""How ``custody`` shows results: exactly one JSON object on stdout with ``--json``, rich tables otherwise.

One ``show_*`` per command's result, the error report every command shares, and the reading of input files.
Progress and errors go to stderr so stdout stays clean for ``--json``. Imports no engine: read-only commands
render with this alone.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tasks.config import get_settings
from tasks.errors import Fatal, error_code
from tasks.secrets import known_secrets, mask_text

out = Console()
err = Console(stderr=True)
Result = dict[str, Any]


def emit(result: Result, as_json: bool, render: Callable[[Result], None]) -> None:
    """Print ``result`` as JSON or in human form. A result that is not ok (a source that failed, a verdict not
    clean) ends the command with exit code 1, and its JSON carries ``code`` ``failed`` like any error's."""
    failed = result.get("ok") is False
    if failed:
        result = {"ok": False, "code": "failed", "error": "the command finished with failures (see this result)",
                  **result}
    if as_json:
        sys.stdout.write(json.dumps(result, default=str) + "\n")
    else:
        render(result)
    if failed:
        raise typer.Exit(1)


def emit_error(exc: Exception, as_json: bool, debug: bool) -> int:
    """Report the error that ended a command and return its exit code: 2 for a bug (code ``internal``), else 1.

    With ``--json`` one object ``{"ok": false, "error", "code", "type"}`` on stdout, a red line on stderr otherwise;
    the traceback goes to stderr with ``--debug`` only. Credentials in the message are masked.
    """
    code = error_code(exc)
    message = mask_text(str(exc) or type(exc).__name__, known_secrets())
    if debug:
        sys.stderr.write(mask_text("".join(traceback.format_exception(exc)), known_secrets()))
    if as_json:
        sys.stdout.write(json.dumps({"ok": False, "error": message, "code": code, "type": type(exc).__name__}) + "\n")
    else:
        hint = "" if debug or code != "internal" else " (a bug: rerun with --debug for the traceback)"
        err.print(f"[red]error:[/red] {escape(message)}{hint}", highlight=False, soft_wrap=True)
    return 2 if code == "internal" else 1


def text_lines(path: str) -> list[str]:
    """The lines of an input file such as ``--text-file``; a missing, unreadable or non-UTF-8 file is invalid
    input for the user to fix, not a traceback."""
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise Fatal(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})") from exc
    except OSError as exc:
        raise Fatal(f"{path}: cannot read it: {exc.strerror or exc}") from exc


def table_of(rows: list[dict[str, Any]], title: str) -> Table:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in columns))
    return table


def show_doctor(r: Result) -> None:
    out.print(table_of([{"setting": k, "value": v} for k, v in r["settings"].items()], "Settings"))
    out.print(table_of(r["checks"], "Checks"))


def show_sample(r: Result) -> None:
    out.print(table_of([{"source": k, **v} for k, v in r["sources"].items()], f"Landed under {r['store']}"))


def _compact(row: dict[str, Any]) -> dict[str, Any]:
    """A per-source summary row with quarantine reasons folded into one column."""
    reasons = ", ".join(f"{k.removeprefix('quarantined_')}={v}" for k, v in row.items()
                        if k.startswith("quarantined_") and v)
    keep = ("source", "files", "rows_in", "records", "exact_duplicates", "near_dup_members", "quarantined", "error")
    return {**{k: row[k] for k in keep if k in row}, "reasons": reasons}


def show_ingest(r: Result) -> None:
    out.print(table_of([_compact(row) for row in r["sources"]], "Ingestion"))
    out.print(f"near-dup clusters in store: {r['clusters']['near_dup_clusters']}, "
              f"exact duplicates: {r['clusters']['exact_duplicates']}")


def show_validate(r: Result) -> None:
    out.print(table_of(r["sources"], f"Validation: {r['policy']} ({r['policy_hash']})"))


def show_score(r: Result) -> None:
    out.print(table_of(r["runs"], "Scoring runs"))


def show_select(r: Result) -> None:
    out.print(f"dataset [bold]{r['ref']}[/bold]: {r['counts']} (excluded {r['excluded']})")


def show_train(r: Result) -> None:
    out.print(f"registered [bold]{r['ref']}[/bold] (MLflow run {r['run_id']}) on {r['dataset']}")
    out.print(table_of([{"metric": k, "value": round(v, 4)} for k, v in sorted(r["metrics"].items())], "Metrics"))


def show_pipeline(r: Result) -> None:
    show_ingest(r["ingest"])
    out.print(table_of(r["validate"]["sources"], f"Validation under policy {r['validate']['policy']}"))
    out.print(table_of(r["score"]["runs"], "Scoring runs (attributes/)"))
    out.print(f"dataset [bold]{r['select']['ref']}[/bold]: {r['select']['counts']} "
              f"(excluded {r['select']['excluded']} flagged records)")
    m, e = r["train"]["metrics"], r["evaluate"]
    if "test_perplexity" in m:  # a language model
        out.print(f"model [bold]{r['train']['ref']}[/bold]: test perplexity {m['test_perplexity']:.2f}; membership "
                  f"baseline AUC {e['mia_loss_auc']:.3f} (loss), {e['mia_min_k_auc']:.3f} (Min-K%), "
                  f"{e['mia_min_k_plus_plus_auc']:.3f} (Min-K%++), verbatim ROUGE-L {e['verbatim_rouge_l']:.3f}")
        return
    out.print(f"model [bold]{r['train']['ref']}[/bold]: test accuracy {m['test_accuracy']:.3f}, "
              f"F1 {m['test_f1']:.3f}; "
              f"membership baseline AUC {e['mia_loss_auc']:.3f} (loss), {e['mia_mink_auc']:.3f} (Min-K%)")


def show_deletion(r: Result) -> None:
    purge = r.get("applied", {}).get("purge", {})
    counts = {k: v for k, v in r.get("applied", {}).items() if k != "purge"}
    when = purge.get("purged_at") or purge.get("due_by")
    out.print(escape(f"status: {r['status']} {r.get('resolved', '')} {counts}; bytes: {purge.get('state', '-')} "
                     f"({len(purge.get('targets', []))} partition(s)) {when}"), highlight=False)


def show_unlearn(r: Result) -> None:
    out.print(table_of(r["certificate"]["models"], f"Unlearning for {r['request_id']}") if r["certificate"]["models"]
              else f"{r['request_id']}: no model held these records")
    out.print(f"status [bold]{r['status']}[/bold]; verdict: {r['certificate'].get('verdict', '')}\n"
              f"certificate: {r['certificate']['markdown']}")


def show_deletions(r: Result) -> None:
    out.print(table_of(r["requests"], "Deletion requests"))


def show_request(r: Result) -> None:
    out.print_json(data=r)


def show_verification(r: Result) -> None:
    shown = ("place", "locations", "strings", "bytes", "not_scanned", "hits", "seconds", "note")
    out.print(table_of([{k: p[k] for k in shown} for p in r["places"]],
                       f"Verification of {r['request_id']} ({r['fingerprints']} fingerprints)"))
    if r["leftovers"]:  # locations hold brackets ("text[row 3]") that rich would take for markup
        out.print(table_of([{k: escape(str(v)) for k, v in h.items()} for h in r["leftovers"]],
                           "Leftovers (fingerprint index, never text)"))
    if quoted := r.get("quoted_by_live_records", {}).get("hits"):
        out.print(f"{quoted} hit(s) are quotes inside other contributors' live records (kept: not copies): "
                  f"{', '.join(r['quoted_by_live_records']['record_ids'][:10])}")
    verdict = "[green]clean[/green]" if r["clean"] else f"[red]{r['hits']} leftover(s)[/red]"
    out.print(f"{verdict}: {r['scanned']['strings']} strings, {r['scanned']['bytes']} bytes in {r['seconds']} s; "
              f"not scanned: {r['not_scanned'] or 'nothing'}" + ("" if r["complete"] else " (scan incomplete)"))


def show_lineage(r: Result) -> None:
    out.print(f"records: {r['records']}")
    out.print(table_of(r["datasets"], "Datasets"))
    out.print(table_of(r["models"], "Models"))


def show_datasets(r: Result) -> None:
    out.print(table_of(r["datasets"], "Datasets"))


def show_status(r: Result) -> None:
    out.print(f"[bold]store[/bold] {r['store']}: {r['records']} records, {r['quarantined']} quarantined, "
              f"{r['tombstoned']} tombstoned")
    out.print(table_of(r["sources"], "Sources"))
    if r["quarantine_reasons"]:
        out.print(table_of([{"reason": k, "rows": v} for k, v in r["quarantine_reasons"].items()], "Quarantine"))
    out.print(f"validation: {r['validation']}")
    out.print(table_of(r["datasets"], "Datasets") if r["datasets"] else "datasets: none yet")
    out.print(f"deletion requests: {r['deletions']}")


def show_demo(r: Result) -> None:
    show_sample(r["sample"])
    show_pipeline(r["pipeline"])
    d, u = r["deletion"], r["unlearn"]
    out.print(f"\ndeleted owner [bold]{d['owner']}[/bold] ({d['train_records']} training records, {d['share']:.1%}); "
              f"request {d['request_id']} is [bold]{u['status']}[/bold]")
    if u["certificate"]["models"]:
        out.print(table_of(u["certificate"]["models"], "Unlearning"))
    out.print(f"verdict: {u['certificate'].get('verdict', '')}")
    v = r["verification"]
    out.print(f"verify-deletion: {'[green]clean[/green]' if v['clean'] else '[red]leftovers found[/red]'} "
              f"({v['scanned']['strings']:,} strings in {v['scanned']['places']} places scanned, {v['hits']} hits; "
              f"{v.get('quoted_by_live_records', {}).get('hits', 0)} quotes inside other contributors' live records)")
    show_status(r["status"])
    settings = get_settings()
    out.print(f"\n[bold]Certificate[/bold]: {u['certificate']['markdown']}\n"
              f"[bold]Store[/bold]: {settings.store_url}\n"
              f"[bold]MLflow UI[/bold]: mlflow ui --backend-store-uri {settings.mlflow_tracking_uri}\n"
              "[bold]Prefect UI[/bold]: `custody server` (http://127.0.0.1:4200) keeps flow runs and serves the "
              "deployments; the demo's own temporary server stopped with it.")
