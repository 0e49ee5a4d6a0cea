"""A withdrawal is a standing rule: the rows every later ingest refuses, derived from the ledger.

A request counts from the moment it is received, not once it is applied: a row delivered (or staged by an ingest
running) while a request is open must not become a record either. The block list holds, over every request,
the owners and sources deleted by selector, the record ids and content hashes deleted by selector or resolution
(tombstones included), and the salted fingerprints of the deleted texts (``tasks.deletion.fingerprints``,
matched by ``tasks.dedup.withdrawn``), so a near copy delivered later is refused too. It keeps no text.
Ingest's parse step and its publish step consult it (``tasks.ingest``); a request's own block list (no
fingerprints) tells the purge which raw and quarantine rows to remove.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

from tasks import layout
from tasks.dedup.withdrawn import WithdrawnIndex
from tasks.deletion.fingerprints import read_fingerprints, store_salt, write_fingerprints
from tasks.deletion.requests import list_requests
from tasks.deletion.tombstones import read_tombstones
from tasks.rows import RowKeys
from tasks.storage import Store

NEAR_COPY = "near_copy"
Blocked = Mapping[str, str]  # a blocked value -> the request that blocks it


class Withdrawal(NamedTuple):
    """Why a row is withdrawn (``source``, ``owner``, ``record_id``, ``content_hash``, ``near_copy``) and by which
    request (the texts a withdrawal removes are fingerprinted under it)."""

    reason: str
    request_id: str


@dataclass(frozen=True)
class BlockList:
    """What is withdrawn, each value with the request that withdrew it."""

    sources: Blocked = field(default_factory=dict)
    owners: Blocked = field(default_factory=dict)
    record_ids: Blocked = field(default_factory=dict)
    content_hashes: Blocked = field(default_factory=dict)
    copies: WithdrawnIndex | None = None  # the deleted texts' fingerprints, for near copies ...
    copies_from: tuple[str, ...] = ()  # ... as ``<request id>:<texts>``: a request's list grows at ingest
    spared: frozenset[str] = frozenset()  # record ids already published: the deletion's to resolve, not ingest's

    def __bool__(self) -> bool:
        return any((self.sources, self.owners, self.record_ids, self.content_hashes, self.copies))

    def match(self, keys: RowKeys) -> Withdrawal | None:
        """Why the row is withdrawn by its keys alone, or None."""
        for reason, value, blocked in (("source", keys.source, self.sources), ("owner", keys.owner, self.owners),
                                       ("record_id", keys.record_id, self.record_ids),
                                       ("content_hash", keys.content_hash, self.content_hashes)):
            if value is not None and value in blocked:
                return Withdrawal(reason, blocked[value])
        return None

    def near_copies(self, texts: list[str]) -> list[str | None]:
        """For each text, the request whose deleted text it is a near copy of (by the fingerprints; case,
        punctuation and light edits included), or None."""
        return self.copies.match(texts) if self.copies is not None else [None] * len(texts)

    def withdrawn(self, rows: Mapping[str, RowKeys]) -> dict[str, Withdrawal]:
        """The withdrawn rows among ``rows`` (keyed by location), by location; spared records never are."""
        rows = {loc: keys for loc, keys in rows.items() if keys.record_id not in self.spared}
        out = {loc: why for loc, keys in rows.items() if (why := self.match(keys))}
        rest = [(loc, keys.text) for loc, keys in rows.items() if loc not in out and keys.text]
        hits = self.near_copies([text for _, text in rest])
        out.update({loc: Withdrawal(NEAR_COPY, rid) for (loc, _), rid in zip(rest, hits, strict=True) if rid})
        return out

    def union(self, other: BlockList) -> BlockList:
        return BlockList({**other.sources, **self.sources}, {**other.owners, **self.owners},
                         {**other.record_ids, **self.record_ids}, {**other.content_hashes, **self.content_hashes},
                         self.copies or other.copies, self.copies_from or other.copies_from)

    def sparing(self, published: frozenset[str]) -> BlockList:
        """The same rules, but rows already published as records are left to the deletion: its resolution
        tombstones them and follows them into datasets and models, which an ingest dropping them could not."""
        return replace(self, spared=published)

    def unless_copies_checked(self, checked_from: list[str] | None) -> BlockList:
        """Without the near-copy check when rows were already checked against the same requests' fingerprints
        (the check costs far more than the key look-ups, and publish re-checks rows that parse checked)."""
        return replace(self, copies=None, copies_from=()) if list(self.copies_from) == checked_from else self


def request_blocks(doc: dict[str, Any]) -> BlockList:
    """One request's block list by its selector and resolution (no fingerprints: the purge matches by keys)."""
    kind, values, rid = doc["selector"]["kind"], doc["selector"]["values"], doc["request_id"]
    resolved = doc.get("resolved", {})
    mine = dict.fromkeys(values, rid)
    return BlockList(sources=mine if kind == "source" else {}, owners=mine if kind == "owner" else {},
                     record_ids={**dict.fromkeys(resolved.get("record_ids", ()), rid),
                                 **(mine if kind == "record_id" else {})},
                     content_hashes={**dict.fromkeys(resolved.get("content_hashes", ()), rid),
                                     **(mine if kind == "text" else {})})


def requests_blocks(docs: Iterable[dict[str, Any]]) -> BlockList:
    """The union of requests' own block lists (``request_blocks``)."""
    blocks = BlockList()
    for doc in docs:
        blocks = blocks.union(request_blocks(doc))
    return blocks


_LEDGER_PARTS = (layout.REQUESTS, layout.TOMBSTONES, layout.FINGERPRINTS)
_standing: dict[str, tuple[str, BlockList]] = {}  # per process: a store's ledger version -> its block list


def ledger_version(store: Store) -> str:
    """What changes whenever a request, a tombstone or a fingerprint file is written (a digest of three
    listings: ``Store.versions``)."""
    listed = [sorted(store.versions(prefix).items()) for prefix in _LEDGER_PARTS]
    return hashlib.sha256(json.dumps(listed).encode()).hexdigest()


def standing_blocks(store: Store, version: str | None = None) -> BlockList:
    """Every request's block list (received ones included), the tombstones and every request's fingerprints.

    Kept per process while the ledger's files are unchanged (``ledger_version``): an ingest's parse and publish
    tasks each consult it, and reading it (every request's JSON, the fingerprints indexed) cost 0.3-0.4 s a
    task after 1,000 requests, paid again by every partition of the store on each delivery. A request filed or
    applied since, even by another process, changes the listing, so no task ever sees a stale list. ``version``:
    a ``ledger_version`` the caller listed just before (the list read is then at least as new as it).
    """
    version = version or ledger_version(store)
    cached = _standing.get(store.url)
    if cached is None or cached[0] != version:
        cached = _standing[store.url] = (version, _read_standing_blocks(store))
    return cached[1]


def _read_standing_blocks(store: Store) -> BlockList:
    blocks = requests_blocks(list_requests(store))
    if not blocks:
        return blocks
    stones = read_tombstones(store).to_pylist()
    prints = read_fingerprints(store)
    per_request = Counter(prints.column("request_id").to_pylist())
    return blocks.union(BlockList(
        record_ids={t["record_id"]: t["request_id"] for t in stones},
        content_hashes={t["content_hash"]: t["request_id"] for t in stones if t["content_hash"]},
        copies=WithdrawnIndex.build(prints, store_salt(store)) if prints.num_rows else None,
        copies_from=tuple(sorted(f"{rid}:{n}" for rid, n in per_request.items()))))


def remember(store: Store, withdrawn: Mapping[str, Withdrawal], keys: Mapping[str, RowKeys]) -> None:
    """Fingerprint the texts of rows an ingest withdrew under the requests that withdrew them: a request applied
    before they were delivered (or one not yet applied, whose purge will no longer find them) must still know
    their near copies. The caller holds the apply lock (fingerprint files are merged, read then written)."""
    texts: dict[str, list[str]] = {}
    for loc, why in withdrawn.items():
        if keys[loc].text:
            texts.setdefault(why.request_id, []).append(keys[loc].text)
    for request_id, batch in texts.items():
        write_fingerprints(store, request_id, batch)
