"""The candidate pool for a selection: validated, non-tombstoned records with the attributes a strategy needs.

Records that are non-representative members of a near-duplicate cluster are left out (the cluster's kept
record stands for it). Splits come from a stable hash of the near-dup cluster id (or the record id when the
record has no cluster), so a record never changes split between dataset versions and a cluster never
straddles two splits. Shards come from the owner (or, without one, the same key as the split): deletions
arrive per owner, so an owner's records sit in one SISA shard and deleting them retrains that shard alone.
Audit canaries (``tasks.canaries``) are never pool records: a selection adds them to its train split on request.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import canaries, layout, passed
from tasks.errors import Fatal
from tasks.ids import unit_interval
from tasks.scoring import base
from tasks.scoring.embeddings import DUPS, embedding_matrix
from tasks.scoring.embeddings import NAME as EMBEDDINGS
from tasks.scoring.report import FLAG
from tasks.storage import Store
from tasks.tables import join_on_id, one_of

log = logging.getLogger(__name__)
POOL_COLUMNS = ["record_id", "label", "source", "owner_id", "license", "consent", "near_dup_cluster", "near_dup_kept"]
LOW_CARDINALITY = ("label", "source", "owner_id", "license", "consent")


def split_key(record_id: str, cluster: str | None) -> str:
    return cluster or record_id


def assign_split(key: str, fractions: tuple[float, float, float]) -> str:
    u = unit_interval(f"split:{key}")
    return "train" if u < fractions[0] else ("validation" if u < fractions[0] + fractions[1] else "test")


def assign_shard(key: str, shards: int) -> int:
    return int(unit_interval(f"shard:{key}") * shards) % shards


def _eligible(part: pa.Table, sources: tuple[str, ...] | None, labels: tuple[str, ...] | None,
              owners: tuple[str, ...] | None) -> pa.Table:
    """One partition's pool rows: cluster representatives, no canaries, of the wanted sources, labels, owners."""
    part = part.filter(pc.fill_null(part.column("near_dup_kept"), False))
    part = part.filter(pc.fill_null(pc.not_equal(part.column("source"), canaries.SOURCE), True))
    for column, wanted in (("source", sources), ("label", labels), ("owner_id", owners)):
        if wanted:
            part = part.filter(one_of(part.column(column), pa.array(list(wanted))))
    return part


def _placed(part: pa.Table, fractions: tuple[float, float, float], shards: int) -> pa.Table:
    """One partition's rows with their ``split`` (dictionary-encoded) and ``shard``: the per-row hashing runs one
    partition at a time, so its Python objects never number more than a partition's rows."""
    keys = [split_key(r, c) for r, c in zip(part.column("record_id").to_pylist(),
                                            part.column("near_dup_cluster").to_pylist(), strict=True)]
    split = pa.array([assign_split(k, fractions) for k in keys]).dictionary_encode()
    shard_keys = [owner or key for owner, key in zip(part.column("owner_id").to_pylist(), keys, strict=True)]
    for column in LOW_CARDINALITY:  # a few distinct values each: as dictionaries, a 10M-row pool takes ~1 GB less
        part = part.set_column(part.column_names.index(column), column, part.column(column).dictionary_encode())
    return part.append_column("split", split).append_column(
        "shard", pa.array([assign_shard(k, shards) for k in shard_keys], pa.int32()))


def score_column(scorer: str, column: str) -> str:
    """The pool column of an attribute that ``load_pool`` attached."""
    return f"{scorer}.{column}"


def _attribute_source(scorer: str, column: str) -> str:
    return DUPS if scorer == EMBEDDINGS and column != "embedding" else scorer


def _per_partition_runs(store: Store, scores: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """The wanted attributes whose latest run wrote one file per partition (those ``load_pool`` attaches), with
    their run ids; a run that wrote one whole-store table is read by ``attribute_column`` instead."""
    runs = {}
    for scorer, column in scores:
        source = _attribute_source(scorer, column)
        rid = base.latest_run(store, scorer)
        folder = layout.attribute_run_dir(source, rid)
        if not any(k.endswith(f"/all{layout.PARQUET}") for k in store.list(folder, layout.PARQUET)):
            runs[(scorer, column)] = rid
    return runs


def _attached(store: Store, part: layout.Partition, table: pa.Table, runs: dict[tuple[str, str], str]) -> pa.Table:
    """One partition's pool rows with each attribute of ``runs`` from that partition's file (NaN where a record
    has none): joined a partition at a time, never as one store-wide table and hash."""
    for (scorer, column), rid in runs.items():
        key = layout.attribute(_attribute_source(scorer, column), rid, part)
        values = pa.nulls(table.num_rows, pa.float64())
        if store.exists(key):
            scores = store.read_parquet(key, ["record_id", column])
            where = pc.index_in(table.column("record_id"), value_set=scores.column("record_id"))
            values = scores.column(column).combine_chunks().take(where).cast(pa.float64())
        field = pa.field(score_column(scorer, column), pa.float64(), metadata={b"run_id": rid.encode()})
        table = table.append_column(field, pc.fill_null(values, float("nan")))
    return table


def load_pool(store: Store, sources: tuple[str, ...] | None, labels: tuple[str, ...] | None,
              fractions: tuple[float, float, float], shards: int, owners: tuple[str, ...] | None = None,
              with_text: bool = False, scores: Sequence[tuple[str, str]] = ()) -> pa.Table:
    """Usable records (``tasks.passed``: current policy, no tombstones), filtered and placed (``split``, ``shard``)
    partition by partition, sorted by record id; their texts only ``with_text`` (the one strategy that reads them:
    memory), and the attributes ``scores`` names (scorer, column) as columns (``score_column``) where their runs
    are per partition."""
    columns = [*POOL_COLUMNS, "text"] if with_text else POOL_COLUMNS
    runs = _per_partition_runs(store, scores)
    parts = []
    for part, table in passed.read_each_partition(store, columns):
        table = _eligible(table, sources, labels, owners)
        if table.num_rows:
            parts.append(_attached(store, part, _placed(table, fractions, shards), runs))
    if not parts:
        raise Fatal("the selection pool is empty: check --source/--label/--owner and that records passed validation")
    pool = pa.concat_tables(parts, promote_options="default").unify_dictionaries()
    parts.clear()
    order, schema, columns = pc.sort_indices(pool.column("record_id")), pool.schema, []
    for name in schema.names:  # sorted a column at a time, each let go once sorted: the sort costs one column
        columns.append(pool.column(name).take(order))
        pool = pool.drop_columns([name])
    pa.default_memory_pool().release_unused()  # the partitions' copies and Python objects: give them back
    return pa.table(columns, schema=schema)


def split_mask(pool: pa.Table, split: str) -> np.ndarray:
    """Which rows of a pool or manifest are in ``split`` (vectorised: a pool has millions of rows)."""
    column = pool.column("split")
    if not pa.types.is_dictionary(column.type):
        return pc.fill_null(pc.equal(column, split), False).to_numpy(zero_copy_only=False)
    masks = [np.zeros(0, dtype=bool)]
    for chunk in column.chunks:  # compare the codes with the split's code: no string per row
        code = chunk.dictionary.index(split).as_py()
        masks.append(pc.fill_null(pc.equal(chunk.indices, code), False).to_numpy(zero_copy_only=False))
    return np.concatenate(masks)


def canary_rows(store: Store, n: int, labels: list[str], shards: int) -> pa.Table:
    """Up to ``n`` live canaries of the current generation whose label is among ``labels``, as train rows (weight
    1, ``canary`` true, the shard of their owner); none when ``n`` is 0.

    Raises:
        Fatal: ``n`` > 0 and no such canary is live (none planted, ingested and validated, or other labels).
    """
    table = canaries.live(store) if n else pa.table({c: pa.array([], pa.string()) for c in canaries.COLUMNS})
    table = table.filter(pc.is_in(table.column("label"), value_set=pa.array(labels, pa.string()))).slice(0, n)
    if n and table.num_rows == 0:
        raise Fatal(f"--canaries {n}: no live audit canary with a label among {labels}; `custody select --canaries N` "
                    "plants them (as `custody demo` does) when none is live, for the labels it selects")
    if table.num_rows < n:
        log.warning("--canaries %d: only %d live canaries of the current generation fit the labels", n, table.num_rows)
    rows = table.num_rows
    return pa.table({**{c: table.column(c) for c in canaries.COLUMNS}, "split": pa.array(["train"] * rows),
                     "shard": pa.array([assign_shard(o, shards) for o in table.column("owner_id").to_pylist()],
                                       pa.int32()),
                     "weight": pa.array(np.ones(rows), pa.float32()), "canary": pa.array([True] * rows, pa.bool_())})


def attribute_column(store: Store, pool: pa.Table, scorer: str, column: str) -> tuple[np.ndarray, str]:
    """One attribute column aligned with the pool (NaN where a record has no score), and the run id used: the
    column ``load_pool`` attached when it did, else read whole and joined."""
    name = score_column(scorer, column)
    if name in pool.column_names:
        return pool.column(name).to_numpy().astype(np.float64), pool.schema.field(name).metadata[b"run_id"].decode()
    rid = base.latest_run(store, scorer)
    table = base.read_attribute(store, _attribute_source(scorer, column), rid, ["record_id", column])
    where = pc.index_in(pool.column("record_id"), value_set=table.column("record_id"))
    values = table.column(column).combine_chunks().take(where).cast(pa.float64())
    return pc.fill_null(values, float("nan")).to_numpy(zero_copy_only=False).astype(np.float64), rid


def embeddings_for(store: Store, pool: pa.Table) -> tuple[np.ndarray, str]:
    """Embeddings aligned with the pool; every pool record must have one."""
    rid = base.latest_run(store, EMBEDDINGS)
    table = join_on_id(pool.select(["record_id"]), base.read_attribute(store, EMBEDDINGS, rid))
    if table.num_rows != pool.num_rows:
        raise Fatal(f"{pool.num_rows - table.num_rows} pool records have no embedding in run {rid}: "
                    "run `custody score --scorer embeddings` over the same sources")
    order = {r: i for i, r in enumerate(table.column("record_id").to_pylist())}
    matrix = embedding_matrix(table)
    return matrix[[order[r] for r in pool.column("record_id").to_pylist()]], rid


def parse_exclusion(spec: str) -> tuple[str, str, float]:
    """``SCORER:THRESHOLD`` or ``SCORER.COLUMN:THRESHOLD`` → (scorer, column, threshold)."""
    try:
        name, threshold = spec.rsplit(":", 1)
        value = float(threshold)
    except ValueError as exc:
        raise Fatal(f"--exclude {spec!r}: expected SCORER:THRESHOLD, e.g. poisoning:0.6") from exc
    scorer, _, column = name.partition(".")
    if not column:
        if scorer not in FLAG:
            raise Fatal(f"--exclude {spec!r}: unknown scorer; valid: {sorted(FLAG)}")
        column = FLAG[scorer][0]
    return scorer, column, value


def exclusion_mask(store: Store, pool: pa.Table, specs: tuple[str, ...]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rows flagged beyond a threshold (high is bad, or low for low-is-bad columns), and what was applied."""
    drop = np.zeros(pool.num_rows, dtype=bool)
    applied = []
    for spec in specs:
        scorer, column, threshold = parse_exclusion(spec)
        values, rid = attribute_column(store, pool, scorer, column)
        high_is_bad = FLAG.get(scorer, (column, True))[1] if FLAG.get(scorer, ("",))[0] == column else True
        hit = (values > threshold) if high_is_bad else (values < threshold)
        hit &= ~np.isnan(values)
        drop |= hit
        applied.append({"scorer": scorer, "column": column, "threshold": threshold, "run_id": rid,
                        "direction": "above" if high_is_bad else "below", "excluded": int(hit.sum())})
    return drop, applied
