"""The ``custody deletions``, ``custody purge`` and ``custody verify-deletion`` commands; ``flows/cli.py`` registers
them (through its ``command``, for its error handling and exit codes, and its ``launcher``, which starts Prefect only
for the commands that run flows).

``custody delete`` applies a request (soft: unreadable at once) and purges its bytes; ``custody delete
--defer-purge`` leaves the bytes to the next batched pass, which ``custody purge`` runs now and the ``custody-purge``
deployment runs on schedule, well inside the deadline (``CUSTODY_PURGE_DEADLINE_HOURS``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Annotated, Any

import typer

from flows import render
from flows.render import emit
from flows.runtime import configure_environment
from tasks.config import get_settings
from tasks.storage import Store

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object on stdout")]
_launcher: list[Callable[[], ModuleType]] = []


def deletions(request: Annotated[str | None, typer.Option(help="show one request in full")] = None,
              apply: Annotated[bool, typer.Option("--apply", help="apply every open request now")] = False,
              finish: Annotated[bool, typer.Option("--finish", help="unlearn and certify every request not yet "
                                                   "certified (what the sweep deployment does)")] = False,
              as_json: JsonOpt = False) -> None:
    """List deletion requests and their status (or show one, or apply the open ones, or finish them)."""
    from tasks.deletion.listing import request_detail, request_rows

    if apply:
        _launcher[0]().run_apply()
    if finish:
        _launcher[0]().run_sweep()
    if request:
        emit({"ok": True, **request_detail(Store.from_settings(), request)}, as_json, render.show_request)
        return
    emit({"ok": True, "requests": request_rows(Store.from_settings())}, as_json, render.show_deletions)


def show_purge(r: dict[str, Any]) -> None:
    if not r["requests"]:
        render.out.print("nothing to purge: every applied request's bytes are gone")
        return
    render.out.print(render.escape(
        f"purged {len(r['requests'])} request(s) in one pass: {r['targets_rewritten']} partition(s) rewritten, "
        f"{r['rows_removed']} Parquet rows and {r['raw_rows_removed']} raw rows removed, at {r['purged_at']}"),
        highlight=False)


def purge(as_json: JsonOpt = False) -> None:
    """Physically purge the bytes of every applied deletion request not purged yet, in one batched pass over the
    partitions they touch (``custody delete --defer-purge`` leaves them to it; so does the custody-purge
    deployment)."""
    emit({"ok": True, **_launcher[0]().run_purge()}, as_json, show_purge)


def verify_deletion(request_id: Annotated[str, typer.Argument(help="deletion request id (see custody deletions)")],
                    threshold: Annotated[float, typer.Option(help="share of a deleted text's shingles that makes a "
                                                             "string a leftover")] = 0.8,
                    as_json: JsonOpt = False) -> None:
    """Scan every byte the platform wrote (store, Prefect and MLflow databases, MLflow artifacts, logs) for the
    request's deleted texts, by their fingerprints; record the result in the certificate. Exit 1 on leftovers,
    or when a place could not be read."""
    from tasks.deletion.verify import verify_deletion as verify

    configure_environment()  # where Prefect's home and database are, as the flows had them; no server started
    report = verify(Store.from_settings(), get_settings(), request_id, threshold)
    emit({"ok": report["clean"] and report["complete"], **report}, as_json, render.show_verification)


def register(command: Callable[[Callable[..., None]], Any], launcher: Callable[[], ModuleType]) -> None:
    """Register the commands through the CLI's ``command``; ``launcher`` imports ``flows.launch`` when needed."""
    _launcher[:] = [launcher]
    for fn in (deletions, purge, verify_deletion):
        command(fn)
