"""The hard step of a deletion: one batched pass that physically purges every applied request's bytes.

Applying a request (``tasks.deletion.apply``) tombstones it at once and records the partitions its rows sit in.
A purge pass takes every request still pending, unions their block lists, and rewrites each affected partition
once — its raw file, staging, records, quarantine, verdicts, attributes, signatures, copy index, clusters and
locator entries — plus the few whole-store tables (whole-store scores, report snippets), of which only the id and
hash columns are read to check. A thousand requests over the same partitions cost one rewrite of each.

Partitions are independent, so a flow can purge them in parallel (``flows/delete.py`` gives ``purge_pass`` a
``run`` that maps ``purge_targets`` over shares of them); by default ``purge_pass`` runs them here, in order. A pass is
crash-safe and idempotent: every rewrite matches rows by content, so a file already purged is left alone, and a
request is marked purged — with the time its bytes were gone, which its certificate records — only after every
target and whole-store table is done. Requests past their ``due_by`` are listed by
``tasks.deletion.requests.overdue`` (``custody status``).
"""
from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tasks import layout
from tasks.certificate import record_purge
from tasks.dedup.copy_index import purge_index
from tasks.dedup.signature_files import blank_signatures
from tasks.deletion.blocklist import BlockList, requests_blocks
from tasks.deletion.locator import drop_entries, located_lines
from tasks.deletion.locks import store_lock
from tasks.deletion.purge import find_in, parquet_files, purge_found, purge_parquet
from tasks.deletion.requests import DONE, for_each, load, pending, save
from tasks.storage import Store

Target = tuple[str, str, str]  # (source, file id, raw key): one partition a purge rewrites


@dataclass
class Plan:
    """One pass: the requests it purges, what they withdraw, and the files to look at, by target partition."""

    request_ids: list[str]
    blocks: BlockList
    targets: list[Target]
    files: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (source, file id) -> its Parquet files
    whole: list[str] = field(default_factory=list)  # whole-store Parquet files

    def jobs(self) -> list[tuple[Target, list[str]]]:
        """Each target with its files: ``purge_target``'s work, one call each."""
        return [(t, self.files.get(t[:2], [])) for t in self.targets]


def partitions_by_stem(targets: Iterable[Target]) -> dict[tuple[str, str], tuple[str, str]]:
    """``(source, stem)`` -> ``(source, file id)`` for every stem a target partition's files have
    (``layout.partition_named`` gives a key's)."""
    return {(source, stem): (source, fid) for source, fid, _ in targets for stem in layout.partition_stems(fid)}


def plan(store: Store, docs: list[dict[str, Any]]) -> Plan:
    """The pass over ``docs``: their block lists united, their targets, and every purged-prefix file sorted to its
    target partition or to the whole-store list (a listing: nothing is read)."""
    targets = sorted({tuple(t) for d in docs for t in d["applied"]["purge"]["targets"]})
    stems = partitions_by_stem(targets)
    out = Plan([d["request_id"] for d in docs], requests_blocks(docs), targets)
    for key in parquet_files(store):
        named = layout.partition_named(key)
        if named is None:
            out.whole.append(key)
        elif named in stems:
            out.files.setdefault(stems[named], []).append(key)
    return out


def purge_target(store: Store, blocks: BlockList, target: Target, files: list[str]) -> dict[str, int]:
    """Purge one partition: the withdrawn raw and quarantine rows (by content), then every Parquet file named by
    it (by record id and content hash), its copy index and signature file (blanked in place, by record id) and its
    locator entries (by record id and key)."""
    source, fid, raw = target
    quarantine = [k for k in files if k.startswith(layout.QUARANTINE + "/")]
    keys = {"record_id": set(blocks.record_ids), "content_hash": set(blocks.content_hashes),
            "owner": set(blocks.owners)}
    located = None if source in blocks.sources else located_lines(store, source, fid, raw, keys)
    found = find_in(store, blocks, {source: [raw]}, quarantine, {raw: located})
    report = purge_found(store, found)
    report.update(purge_parquet(store, keys["record_id"], keys["content_hash"], [k for k in files if store.exists(k)],
                                located=True))
    report["copy_index_rows_removed"] = purge_index(store, source, fid, keys["record_id"])
    report["signature_rows_blanked"] = blank_signatures(store, source, fid, keys["record_id"])
    report["locator_entries_removed"] = drop_entries(store, source, fid, keys, found.raw.get(raw, ()), raw)
    return report


def purge_targets(store: Store, blocks: BlockList, jobs: list[tuple[Target, list[str]]]) -> list[dict[str, int]]:
    """Purge some partitions one after another (``purge_target`` each): a flow's task is a share of the pass
    (``tasks.batching.dealt``), not a partition."""
    return [purge_target(store, blocks, target, files) for target, files in jobs]


def finish(store: Store, plan: Plan, reports: list[dict[str, int]], started: float | None = None
           ) -> list[dict[str, Any]]:
    """Purge the whole-store tables, then mark the pass's requests purged (and their certificates, if any)."""
    reports = [*reports, purge_parquet(store, set(plan.blocks.record_ids), set(plan.blocks.content_hashes),
                                       plan.whole)]
    totals: dict[str, int] = {}
    for report in reports:
        for key, value in report.items():
            totals[key] = totals.get(key, 0) + value
    now = dt.datetime.now(dt.UTC).isoformat()

    def purged(request_id: str) -> dict[str, Any]:  # the pass's requests, not the whole ledger
        doc = load(store, request_id)
        purge = {**doc["applied"]["purge"], "state": DONE, "purged_at": now, "batch_requests": len(plan.request_ids),
                 "targets_rewritten": len(plan.targets), **totals,
                 "pass_seconds": round(time.perf_counter() - started, 3) if started else None}
        doc = save(store, doc, applied={**doc["applied"], **totals, "purge": purge})
        record_purge(store, doc["request_id"], doc["applied"])
        return doc

    return for_each(purged, plan.request_ids)


def purge_pass(store: Store, run: Callable[[Plan], list[dict[str, int]]] | None = None) -> list[dict[str, Any]]:
    """Purge every pending request's bytes in one pass, under the apply lock; returns the purged requests. ``run``
    does the plan's jobs (a flow maps ``purge_targets`` over shares of them); by default they run here, in order."""
    started = time.perf_counter()
    with store_lock(store):
        docs = pending(store)
        if not docs:
            return []
        work = plan(store, docs)
        reports = run(work) if run else [purge_target(store, work.blocks, t, files) for t, files in work.jobs()]
        return finish(store, work, reports, started)
