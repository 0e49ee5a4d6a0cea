"""Ingest's side of a standing withdrawal (``tasks.deletion.blocklist``): rows a deletion names leave the raw file,
staging and the quarantine, and their texts are fingerprinted under the request, so their near copies are known.

Rows already published as records are spared: they are the deletion's to resolve, tombstone and follow into
datasets and models. Every write here happens under the apply lock on fresh reads, because a deletion's purge
rewrites the same files.
"""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.datasheet import Datasheet
from tasks.deletion.blocklist import BlockList, Withdrawal, remember, standing_blocks
from tasks.deletion.locks import store_lock
from tasks.deletion.purge import purge_files, rewrite_raw
from tasks.readers import RawRow, ReadLimits, read_rows
from tasks.rows import RowKeys, raw_row_keys
from tasks.storage import Store
from tasks.tables import filtered_parts, one_of


def published_ids(store: Store, source: str, fid: str) -> frozenset[str]:
    """Record ids the file's records partition holds (from an earlier publish)."""
    key = layout.records(source, fid)
    return frozenset(store.read_parquet(key, ["record_id"]).column("record_id").to_pylist()) \
        if store.exists(key) else frozenset()


def withdraw_raw(store: Store, key: str, sheet: Datasheet, max_bytes: int, published: frozenset[str],
                 limits: ReadLimits | None = None) -> tuple[list[RawRow], dict[str, Withdrawal]]:
    """The raw file's rows minus those the block list withdraws (by location), which are fingerprinted and leave
    the raw file itself; the file is read again after the rewrite, so locations are those of the file as it stays.

    Raises:
        ShardError: the file as a whole cannot be read.
    """
    with store_lock(store):  # a deletion's purge rewrites raw files too: one writer at a time, on fresh bytes
        data = store.read_bytes(key)
        rows = list(read_rows(data, key, max_bytes, sheet.format, limits))
        keys = {r.location: raw_row_keys(r, sheet) for r in rows}
        withdrawn = standing_blocks(store).sparing(published).withdrawn(keys)
        if withdrawn:
            remember(store, withdrawn, keys)
            data = b"".join(rewrite_raw(data, key, sheet.format, set(withdrawn)))  # read again below
            store.write_bytes(key, data)
            rows = list(read_rows(data, key, max_bytes, sheet.format, limits))
    return rows, withdrawn


def withdrawn_stats(withdrawn: dict[str, Withdrawal]) -> dict[str, int]:
    """``withdrawn`` and ``withdrawn_<reason>`` counts (never the rows themselves)."""
    counts = Counter(why.reason for why in withdrawn.values())
    return {"withdrawn": sum(counts.values()), **{f"withdrawn_{k}": v for k, v in sorted(counts.items())}}


def clear_withdrawn(store: Store, partition: tuple[str, str, str], withdrawn: dict[str, Withdrawal],
                    keys: dict[str, RowKeys], blocks: BlockList) -> None:
    """Withdrawn rows fingerprinted, then out of the partition's (source, file id, raw key) staging file, raw file
    (matched by content: it may have changed since the parse) and ingest quarantine. Under the apply lock, on
    fresh reads, so a purge running at the same time is neither undone nor lost; the raw file's new size makes
    the next ingest parse it again."""
    source, fid, raw_key = partition
    with store_lock(store):
        remember(store, withdrawn, keys)
        uris = pa.array(sorted(withdrawn), pa.string())
        staging = layout.staging(source, fid)
        uri_column = store.read_parquet(staging, ["source_uri"]).column("source_uri")
        keep = pc.invert(one_of(uri_column, uris)).to_numpy()
        store.write_parts(staging, filtered_parts(store.read_bytes(staging), keep))
        purge_files(store, blocks, source, [raw_key], [layout.quarantine(source, "ingest", fid)])
