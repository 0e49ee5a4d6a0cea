"""Facts about a dataset version, read from the ledger: what every transparency document is filled from.

A dataset version's manifest names its records; their provenance comes from ``records/`` (tombstones excluded,
text never read), their verdicts from ``validation/<policy-hash>/`` (the policy the version was selected under),
the sources' datasheets from ``raw/``, and the deletions that shaped the version from its ``selection.json`` and
the ledger. The documents (``summary``, ``croissant``, ``spdx``) only format these numbers, so they agree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tasks import layout, passed
from tasks.datasheet import Datasheet, load_datasheet
from tasks.deletion.requests import list_requests
from tasks.errors import DatasheetError
from tasks.schema import record_schema
from tasks.selection import is_canary, load_manifest
from tasks.storage import Store

PROVENANCE = ("record_id", "source", "owner_id", "license", "consent", "consent_basis", "collected_at",
              "delivered_at", "n_chars", "tdm_reservation")
TDM_REASON = "tdm_reserved"  # the provenance gate's reason code for a reserved record (tasks/provenance.py)
RECORD = record_schema()
CHARS_PER_TOKEN = 4  # a common estimate for English text under BPE tokenizers; the summary says it is one


@dataclass
class DatasetFacts:
    """What the ledger says about one dataset version (counts over its records, never their text)."""

    ref: str
    selection: dict[str, Any]
    manifest_sha256: str
    manifest_uri: str
    records: pa.Table  # one row per data record of the manifest found in the ledger: PROVENANCE + split
    missing: int  # manifest records the ledger no longer holds (deleted since the version was made)
    canaries: int  # audit canaries in the train split (synthetic, the platform's own)
    sheets: dict[str, Datasheet | None]
    policy: dict[str, Any]
    rejected: dict[str, int]  # store-wide verdicts under the version's policy: records rejected, by reason
    pii_found: dict[str, int]  # records of this version in which the PII scan found each kind
    near_dup_dropped: int  # non-representative near-duplicate members in the store (never selected)
    deletions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.selection["name"]

    @property
    def version(self) -> str:
        return self.selection["version"]

    def split(self, name: str) -> pa.Table:
        return self.records.filter(pc.equal(self.records.column("split"), name))

    def by(self, column: str, split: str | None = "train") -> Counter:
        """Record counts by ``column`` (the train split by default; ``None`` for every split)."""
        table = self.split(split) if split else self.records
        return Counter(table.column(column).to_pylist())


def _columns(store: Store, key: str) -> list[str]:
    with store.open(key) as fh:
        return pq.read_schema(fh).names


def provenance(store: Store, ids: pa.Array) -> pa.Table:
    """Provenance columns of the live records among ``ids``, one partition at a time (memory bounded by one)."""
    tables = []
    for part in passed.partitions(store):
        names = _columns(store, layout.partition_key(part))
        table = passed.live_records(store, part, [c for c in PROVENANCE if c in names])
        table = table.filter(pc.is_in(table.column("record_id"), value_set=ids))
        for column in PROVENANCE:
            if column not in table.column_names:  # ingested before the column existed: nothing stated
                table = table.append_column(column, pa.nulls(table.num_rows, RECORD.field(column).type))
        tables.append(table.select(list(PROVENANCE)))
    return pa.concat_tables(tables) if tables else RECORD.empty_table().select(list(PROVENANCE))


def _verdict_counts(store: Store, policy_hash: str, ids: pa.Array) -> tuple[dict[str, int], dict[str, int]]:
    """Store-wide rejections by reason under ``policy_hash``, and the PII kinds found among ``ids``."""
    rejected: Counter[str] = Counter()
    pii: Counter[str] = Counter()
    for part in passed.partitions(store):
        key = layout.verdicts(policy_hash, part)
        if not store.exists(key):
            continue
        verdicts = store.read_parquet(key, ["record_id", "passed", "reasons", "pii_found"])
        gone = pc.invert(verdicts.column("passed"))
        rejected.update(r for reasons in verdicts.filter(gone).column("reasons").to_pylist() for r in reasons)
        rejected["records"] += int(pc.sum(gone).as_py() or 0)
        mine = verdicts.filter(pc.is_in(verdicts.column("record_id"), value_set=ids))
        pii.update(k for kinds in mine.column("pii_found").to_pylist() for k in kinds)
    return dict(rejected), dict(pii)


def _near_dup_dropped(store: Store) -> int:
    kept = store.read_parquets(layout.records_dir(), ["near_dup_kept"])
    return int(pc.sum(pc.invert(kept.column("near_dup_kept"))).as_py() or 0) if kept.num_rows else 0


def _policy(store: Store, policy_hash: str) -> dict[str, Any]:
    """The version's policy: its document when it is still the current one, else its hash alone."""
    current = store.read_json(layout.CURRENT_POLICY) if store.exists(layout.CURRENT_POLICY) else {}
    if current.get("policy_hash") == policy_hash:
        return {"hash": policy_hash, "name": current["policy"], "purpose": current["purpose"],
                "doc": current["policy_doc"]}
    return {"hash": policy_hash, "name": None, "purpose": None, "doc": None}


def _sheet(store: Store, source: str) -> Datasheet | None:
    try:
        return load_datasheet(store, source)[0]
    except DatasheetError:  # the source's raw folder went with a deletion by source: no datasheet to read
        return None


def _deletions(store: Store, selection: dict[str, Any]) -> list[dict[str, Any]]:
    """Deletion requests that removed records from this version's lineage, with their status in the ledger."""
    status = {d["request_id"]: d["status"] for d in list_requests(store)}
    return [{"request_id": d["request_id"], "removed": d["removed"], "from": d["from"],
             "status": status.get(d["request_id"], "unknown")} for d in selection.get("derived", [])]


def dataset_facts(store: Store, ref: str) -> DatasetFacts:
    """Everything the transparency documents say about dataset version ``ref`` (``NAME@VERSION``).

    Raises:
        NotFound: no such dataset version.
    """
    manifest, selection = load_manifest(store, ref)
    canary = is_canary(manifest)
    data = manifest.filter(pa.array(~canary))
    ids = data.column("record_id")
    found = provenance(store, ids)
    split = data.select(["record_id", "split"])
    idx = pc.index_in(found.column("record_id"), value_set=split.column("record_id"))
    found = found.append_column("split", split.column("split").take(idx))
    key = layout.manifest(*ref.split("@", 1))
    rejected, pii = _verdict_counts(store, selection["policy_hash"], ids)
    sources = sorted(set(found.column("source").to_pylist()) | set(data.column("source").to_pylist()))
    return DatasetFacts(
        ref=ref, selection=selection, manifest_sha256=hashlib.sha256(store.read_bytes(key)).hexdigest(),
        manifest_uri=store.uri(key), records=found, missing=data.num_rows - found.num_rows,
        canaries=int(canary.sum()), sheets={s: _sheet(store, s) for s in sources if s},
        policy=_policy(store, selection["policy_hash"]), rejected=rejected, pii_found=pii,
        near_dup_dropped=_near_dup_dropped(store), deletions=_deletions(store, selection))


def timeframe(table: pa.Table) -> tuple[str | None, str | None]:
    """Earliest and latest collection dates of ``table``'s records (delivery dates where none was stated)."""
    if not table.num_rows:
        return None, None
    stamps = pc.coalesce(table.column("collected_at"), table.column("delivered_at"))
    low, high = pc.min(stamps).as_py(), pc.max(stamps).as_py()
    return (low.date().isoformat() if isinstance(low, dt.datetime) else None,
            high.date().isoformat() if isinstance(high, dt.datetime) else None)


def characters(table: pa.Table) -> int:
    return int(pc.sum(table.column("n_chars")).as_py() or 0) if table.num_rows else 0


def reserved(table: pa.Table) -> int:
    """Records of ``table`` that carry a text-and-data-mining reservation."""
    return int(pc.sum(pc.fill_null(table.column("tdm_reservation"), False)).as_py() or 0) if table.num_rows else 0
