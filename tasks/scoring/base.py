"""What every scorer shares: its inputs (validated records, partition by partition), run ids, attribute
writing with skip-if-done, length-bucketed batching, and the torch device.

Attributes live beside records, never inside them: ``attributes/<scorer>/<run-id>/source=<s>/<part>.parquet``
keyed by ``record_id``, with ``run.json`` (config, model identity, input) beside them. The run id hashes the
scorer's config and its input (the validation policy in force), so re-running the same thing is skipped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from tasks.config import get_settings
from tasks.errors import Fatal
from tasks.ledger import tombstoned_ids
from tasks.provenance import CURRENT_KEY
from tasks.storage import Store
from tasks.tables import without_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Partition:
    key: str
    source: str
    name: str


def input_policy(store: Store) -> str:
    """The validation policy hash scorers read under (``none`` when nothing is validated yet)."""
    return store.read_json(CURRENT_KEY)["policy_hash"] if store.exists(CURRENT_KEY) else "none"


def input_identity(store: Store) -> str:
    """What scorers read: the policy in force and the exact verdict files (a new ingest or deletion changes it)."""
    policy = input_policy(store)
    files = [f"{k}:{store.size(k)}" for k in store.list(f"validation/{policy}", ".parquet")] if policy != "none" \
        else [f"{k}:{store.size(k)}" for k in store.list("records", ".parquet")]
    return hashlib.sha256("\n".join([policy, *files]).encode()).hexdigest()[:16]


def run_id(scorer: str, cfg: Any, model_identity: str, store: Store) -> str:
    """Content address of a run: config, model and input; the same three mean the same attributes."""
    payload = json.dumps({"cfg": asdict(cfg), "model": model_identity, "input": input_identity(store)},
                         sort_keys=True)
    return f"{scorer}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def partitions(store: Store, sources: list[str] | None = None) -> list[Partition]:
    out = []
    for key in store.list("records", ".parquet"):
        source = key.split("/")[1].removeprefix("source=")
        if not sources or source in sources:
            out.append(Partition(key, source, key.rsplit("/", 1)[1].removesuffix(".parquet")))
    return out


def load_partition(store: Store, part: Partition, columns: list[str]) -> pa.Table:
    """Records of one partition that passed the current policy (redacted text), minus tombstones.

    Before any validation has run, all records are scored (with a warning), so scoring can be tried early.
    """
    want = list(dict.fromkeys(["record_id", *columns]))
    records = store.read_parquet(part.key, want)
    records = without_ids(records, tombstoned_ids(store))
    policy = input_policy(store)
    if policy == "none":
        log.warning("no validation has run: scoring all records of %s", part.key)
        return records
    verdict_key = f"validation/{policy}/source={part.source}/{part.name}.parquet"
    if not store.exists(verdict_key):
        raise Fatal(f"{part.key} has no verdict under policy {policy}: run `custody validate` again")
    verdicts = store.read_parquet(verdict_key, ["record_id", "passed", "text_redacted"])
    passed = verdicts.filter(verdicts.column("passed")).select(["record_id", "text_redacted"])
    joined = records.join(passed, "record_id", join_type="inner")
    if "text" in want:
        text = pc.coalesce(joined.column("text_redacted"), joined.column("text"))
        joined = joined.set_column(joined.column_names.index("text"), "text", text)
    return joined.drop(["text_redacted"]).select(want)


def attribute_key(scorer: str, rid: str, part: Partition) -> str:
    return f"attributes/{scorer}/{rid}/source={part.source}/{part.name}.parquet"


def is_done(store: Store, scorer: str, rid: str, part: Partition) -> bool:
    return store.exists(f"_done/score/{scorer}/{rid}/source={part.source}/{part.name}.json")


def write_attribute(store: Store, scorer: str, rid: str, part: Partition, table: pa.Table,
                    stats: dict[str, Any]) -> None:
    """Write one partition's attribute table, then its done marker (last)."""
    store.write_parquet(attribute_key(scorer, rid, part), table)
    store.write_json(f"_done/score/{scorer}/{rid}/source={part.source}/{part.name}.json", stats)


def write_run(store: Store, scorer: str, rid: str, cfg: Any, model_identity: str, summary: dict[str, Any]) -> None:
    store.write_json(f"attributes/{scorer}/{rid}/run.json",
                     {"scorer": scorer, "run_id": rid, "config": asdict(cfg), "model": model_identity,
                      "input_policy": input_policy(store), "finished_at": dt.datetime.now(dt.UTC).isoformat(),
                      **summary})
    store.write_json(f"attributes/{scorer}/latest.json", {"run_id": rid})


def cached_run(store: Store, scorer: str, rid: str) -> dict[str, Any] | None:
    """The finished run's summary when this exact run (config and input) is already done, else None."""
    key = f"attributes/{scorer}/{rid}/run.json"
    if not store.exists(key):
        return None
    store.write_json(f"attributes/{scorer}/latest.json", {"run_id": rid})
    return {"scorer": scorer, "run_id": rid, "skipped": True, **store.read_json(key)}


def latest_run(store: Store, scorer: str) -> str:
    key = f"attributes/{scorer}/latest.json"
    if not store.exists(key):
        raise Fatal(f"no {scorer} attributes yet: run `custody score --scorer {scorer}` first")
    return store.read_json(key)["run_id"]


def read_attribute(store: Store, scorer: str, rid: str | None = None, columns: list[str] | None = None) -> pa.Table:
    """All partitions of a scorer's run (the latest by default)."""
    rid = rid or latest_run(store, scorer)
    return store.read_parquets(f"attributes/{scorer}/{rid}", columns)


def each_partition(parts: list[Partition], fn: Any, desc: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Apply ``fn`` to every partition; one that fails is reported and the others still run.

    A failed partition has no done marker, so the next run retries just that one.
    """
    stats, failures = [], []
    for part in tqdm(parts, desc=desc):
        try:
            stats.append(fn(part))
        except Exception as exc:  # one bad partition must not sink the batch
            log.exception("%s failed on %s", desc, part.key)
            failures.append({"partition": part.key, "error": f"{type(exc).__name__}: {exc}"})
    return stats, failures


def finish(store: Store, scorer: str, rid: str, cfg: Any, model_identity: str, summary: dict[str, Any],
           failures: list[dict[str, str]]) -> dict[str, Any]:
    """Record a complete run (then it is skipped next time), or report the failed partitions."""
    if failures:
        store.write_json(f"attributes/{scorer}/{rid}/failures.json", failures)
        return {"scorer": scorer, "run_id": rid, **summary, "failed": failures}
    write_run(store, scorer, rid, cfg, model_identity, summary)
    return {"scorer": scorer, "run_id": rid, **summary}


def device() -> str:
    return get_settings().resolved_device()
