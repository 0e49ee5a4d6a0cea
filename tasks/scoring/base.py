"""What every scorer shares: run ids, attribute writing with skip-if-done, the run record, and the torch device.

Attributes live beside records, never inside them: ``attributes/<scorer>/<run-id>/source=<s>/<part>.parquet``
(or ``all.parquet`` for a scorer that works on the whole store) keyed by ``record_id``, with ``run.json``
(config, model identity, input) beside them. The run id hashes the scorer's config and its input (the
validation policy in force), so re-running the same thing is skipped. Records are read through
``tasks.passed``; how a scorer is declared and driven is ``tasks.scoring.contract``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pyarrow as pa
from tqdm import tqdm

from tasks import layout, passed
from tasks.config import get_settings
from tasks.errors import Fatal, text_free
from tasks.storage import Store

log = logging.getLogger(__name__)


def input_identity(store: Store) -> str:
    """What scorers read: the policy in force and the exact verdict files (a new ingest or deletion changes it)."""
    policy = passed.current_policy(store)
    folder = layout.verdicts_dir(policy) if policy != passed.NO_POLICY else layout.records_dir()
    files = [f"{k}:{store.size(k)}" for k in store.list(folder, layout.PARQUET)]
    return hashlib.sha256("\n".join([policy, *files]).encode()).hexdigest()[:16]


def run_id(scorer: str, cfg: Any, model_identity: str, store: Store) -> str:
    """Content address of a run: config, model and input; the same three mean the same attributes."""
    payload = json.dumps({"cfg": asdict(cfg), "model": model_identity, "input": input_identity(store)},
                         sort_keys=True)
    return f"{scorer}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def is_done(store: Store, scorer: str, rid: str, part: layout.Partition) -> bool:
    return store.exists(layout.score_marker(scorer, rid, part))


def write_attribute(store: Store, scorer: str, rid: str, part: layout.Partition, table: pa.Table,
                    stats: dict[str, Any]) -> None:
    """Write one partition's attribute table, then its done marker (last)."""
    store.write_parquet(layout.attribute(scorer, rid, part), table)
    store.write_json(layout.score_marker(scorer, rid, part), stats)


def write_whole(store: Store, scorer: str, rid: str, table: pa.Table, source: str | None = None) -> None:
    """Write the attribute table of a run that covers the whole store (or one source) at once."""
    store.write_parquet(layout.attribute_whole(scorer, rid, source), table)


def write_run(store: Store, scorer: str, rid: str, cfg: Any, model_identity: str, summary: dict[str, Any]) -> None:
    store.write_json(layout.attribute_run(scorer, rid),
                     {"scorer": scorer, "run_id": rid, "config": asdict(cfg), "model": model_identity,
                      "input_policy": passed.current_policy(store),
                      "finished_at": dt.datetime.now(dt.UTC).isoformat(), **summary})
    store.write_json(layout.latest_attribute_run(scorer), {"run_id": rid})


def cached_run(store: Store, scorer: str, rid: str) -> dict[str, Any] | None:
    """The finished run's summary when this exact run (config and input) is already done, else None."""
    key = layout.attribute_run(scorer, rid)
    if not store.exists(key):
        return None
    store.write_json(layout.latest_attribute_run(scorer), {"run_id": rid})
    return {"scorer": scorer, "run_id": rid, "skipped": True, **store.read_json(key)}


def latest_run(store: Store, scorer: str) -> str:
    key = layout.latest_attribute_run(scorer)
    if not store.exists(key):
        raise Fatal(f"no {scorer} attributes yet: run `custody score --scorer {scorer}` first")
    return store.read_json(key)["run_id"]


def read_attribute(store: Store, scorer: str, rid: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """All partitions of a scorer's run (the latest by default)."""
    rid = rid or latest_run(store, scorer)
    return store.read_parquets(layout.attribute_run_dir(scorer, rid), columns)


def each_partition(parts: list[layout.Partition], fn: Callable[[layout.Partition], Any], desc: str
                   ) -> tuple[list[Any], list[dict[str, str]]]:
    """Apply ``fn`` to every partition; one that fails is reported and the others still run.

    A failed partition has no done marker, so the next run retries just that one.
    """
    results, failures = [], []
    for part in tqdm(parts, desc=desc):
        key = layout.partition_key(part)
        try:
            results.append(fn(part))
        except Exception as exc:  # one bad partition must not sink the batch
            error = text_free(exc)  # published as a Prefect artifact and logged: never a text the scorer choked on
            log.error("%s failed on %s: %s", desc, key, error)
            failures.append({"partition": key, "error": error})
    return results, failures


def finish(store: Store, scorer: str, rid: str, cfg: Any, model_identity: str, summary: dict[str, Any],
           failures: list[dict[str, str]]) -> dict[str, Any]:
    """Record a complete run (then it is skipped next time), or report the failed partitions."""
    if failures:
        store.write_json(layout.attribute_failures(scorer, rid), failures)
        return {"scorer": scorer, "run_id": rid, **summary, "failed": failures}
    write_run(store, scorer, rid, cfg, model_identity, summary)
    return {"scorer": scorer, "run_id": rid, **summary}


def device() -> str:
    return get_settings().resolved_device()
