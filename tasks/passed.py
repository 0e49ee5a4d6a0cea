"""The one read path for records a stage may use: passed the current policy, redacted text, minus tombstones.

Scoring, selection, training, the model card, reports and the deletion vault all read records through here, so
a policy's redaction and a deletion's tombstones apply everywhere at once. Nothing else reads ``records/`` text
or filters tombstones: validation reads a partition's live records (``live_records``) because it makes the
verdicts the other readers need, and reports show only ``snippet`` of a text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.deletion.tombstones import tombstoned_ids
from tasks.errors import Fatal, NotValidated
from tasks.pii import PII_KINDS, redact, scan
from tasks.storage import Store
from tasks.tables import rows_with_ids, without_ids

log = logging.getLogger(__name__)
NO_POLICY = "none"
SNIPPET_CHARS = 120  # a table cell a person can read at a glance
LOOKUP_THREADS = 2  # partitions a look-up reads at once


def current_policy(store: Store) -> str:
    """Hash of the policy whose verdicts downstream stages read (``none`` before any validation)."""
    return store.read_json(layout.CURRENT_POLICY)["policy_hash"] if store.exists(layout.CURRENT_POLICY) else NO_POLICY


def partitions(store: Store, sources: Iterable[str] | None = None) -> list[layout.Partition]:
    """Record partitions, optionally of some sources only."""
    parts = [layout.partition_of(k) for k in store.list(layout.records_dir(), layout.PARQUET)]
    wanted = set(sources or ())
    return [p for p in parts if not wanted or p.source in wanted]


Reader = Callable[[str, list[str] | None], pa.Table]  # (key, columns) -> the Parquet file's table, or some of it


def live_records(store: Store, part: layout.Partition, columns: list[str] | None = None,
                 tombstoned: frozenset[str] | None = None, read: Reader | None = None) -> pa.Table:
    """A partition's records minus tombstones, before any verdict: what validation checks.

    ``tombstoned`` saves re-reading the tombstones once per partition when a caller already has them; ``read``
    reads some of the file (default: all of it, ``Store.read_parquet``).
    """
    gone = tombstoned_ids(store) if tombstoned is None else tombstoned
    return without_ids((read or store.read_parquet)(layout.partition_key(part), columns), gone)


def _redacted(records: pa.Table, verdicts: pa.Table, policy_hash: str) -> pa.Table:
    """Inner join with the passed verdicts; the redacted text replaces the original where the policy redacts."""
    passed = verdicts.filter(verdicts.column("passed")).select(["record_id", "text_redacted"])
    joined = records.join(passed, "record_id", join_type="inner")
    if "text" in joined.column_names:
        text = pc.coalesce(joined.column("text_redacted"), joined.column("text"))
        joined = joined.set_column(joined.column_names.index("text"), "text", text)
    joined = joined.drop(["text_redacted"])
    return joined.append_column("policy_hash", pa.array([policy_hash] * joined.num_rows, pa.string()))


def _read(store: Store, part: layout.Partition, columns: list[str] | None, policy: str, gone: frozenset[str],
          allow_unvalidated: bool, require_verdict: bool, read: Reader | None = None) -> pa.Table:
    """``read_partition`` with the policy and tombstones already read (once per call of ``read_all``); ``read``
    reads the records and verdict files (default: whole)."""
    read = read or store.read_parquet
    want = list(dict.fromkeys(["record_id", *columns])) if columns else None
    read_cols = [c for c in want if c != "policy_hash"] if want else None
    records = live_records(store, part, read_cols, gone, read)
    if policy == NO_POLICY:
        if not allow_unvalidated:
            raise NotValidated("no validated records yet: run `custody validate` first")
        log.warning("no validation has run: using all records of %s", layout.partition_key(part))
        return records
    verdict_key = layout.verdicts(policy, part)
    if not store.exists(verdict_key):
        if not require_verdict:
            return records.slice(0, 0).append_column("policy_hash", pa.array([], pa.string())).select(
                want or [*records.column_names, "policy_hash"])
        raise Fatal(f"{layout.partition_key(part)} has no verdict under policy {policy}: run `custody validate`")
    verdicts = read(verdict_key, ["record_id", "passed", "text_redacted"])
    out = _redacted(records, verdicts, policy)
    return out.select(want) if want else out


def read_partition(store: Store, part: layout.Partition, columns: list[str] | None = None,
                   allow_unvalidated: bool = False, require_verdict: bool = True) -> pa.Table:
    """One partition's usable records. ``allow_unvalidated`` lets scoring be tried before any validation;
    without ``require_verdict`` a partition ingested since the last validation contributes nothing.

    Raises:
        Fatal: nothing validated yet (unless allowed), or this partition has no verdict under the current policy.
    """
    return _read(store, part, columns, current_policy(store), tombstoned_ids(store), allow_unvalidated,
                 require_verdict)


def read_each(store: Store, columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Every partition's usable records, one partition at a time (a caller that filters keeps memory bounded
    by what it keeps, not by the store).

    Raises:
        Fatal: when nothing has been validated yet.
    """
    return (table for _, table in read_each_partition(store, columns))


def read_each_partition(store: Store, columns: list[str] | None = None
                        ) -> Iterator[tuple[layout.Partition, pa.Table]]:
    """``read_each`` with each table's partition (to join what other stages wrote for that partition)."""
    policy = current_policy(store)
    if policy == NO_POLICY:
        raise NotValidated("no validated records yet: run `custody validate` first")
    gone = tombstoned_ids(store)
    for part in partitions(store):
        yield part, _read(store, part, columns, policy, gone, False, False)


def read_all(store: Store, columns: list[str] | None = None) -> pa.Table:
    """Every usable record (whole store); an empty table when there are no partitions.

    Raises:
        Fatal: when nothing has been validated yet.
    """
    tables = list(read_each(store, columns))
    tables = [t for t in tables if t.num_rows] or tables[:1]
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in (columns or ["record_id"])})
    return pa.concat_tables(tables, promote_options="default")


def lookup(store: Store, record_ids: list[str], columns: list[str],
           parts: list[layout.Partition] | None = None) -> pa.Table:
    """The usable records among ``record_ids`` (a report's handful, a deletion vault's hundreds), read partition
    by partition (of ``parts`` when the caller knows which hold them), two at a time, and of each file only the row
    groups holding them (``tables.rows_with_ids``), so memory and reads follow the ids asked for. Before any validation
    every live record is usable, as it is for scoring."""
    policy, gone = current_policy(store), tombstoned_ids(store)
    wanted = pa.array(record_ids, pa.string())

    def read(key: str, cols: list[str] | None) -> pa.Table:
        with store.random_access(key) as fh:
            return rows_with_ids(fh, wanted, cols)

    parts = [p for p in (partitions(store) if parts is None else parts) if store.exists(layout.partition_key(p))]
    with ThreadPoolExecutor(LOOKUP_THREADS) as pool:  # Arrow decodes without the GIL
        found = pool.map(lambda part: _read(store, part, columns, policy, gone, True, False, read), parts)
        tables = [t for t in found if t.num_rows]
    if not tables:
        return pa.table({c: pa.array([], pa.string()) for c in dict.fromkeys(["record_id", *columns])})
    return pa.concat_tables(tables, promote_options="default")


def snippet(text: str | None, limit: int = SNIPPET_CHARS) -> str:
    """What a report may show of a text: every PII kind redacted (whatever the policy allows for training, and
    before any policy has redacted anything), then cut to ``limit`` characters, so no identifier is cut in half."""
    if not text:
        return ""
    shown = redact(text, scan(text), set(PII_KINDS))
    return shown[:limit - 3] + "..." if len(shown) > limit else shown
