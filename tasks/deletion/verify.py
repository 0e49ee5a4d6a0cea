"""``custody verify-deletion REQUEST_ID``: scan every byte the platform wrote for the texts a request deleted.

The scan knows the deleted texts only by their fingerprints (``tasks.deletion.fingerprints``: salted hashes of
each text's match form and of its character 5-grams), so it can run anywhere, any time, without a copy of what it
looks for. A string is a hit for a deleted text when its match form hashes to the text's hash (the same text up to
case, punctuation and spacing), or when at least ``threshold`` of the text's shingle hashes occur among the
string's (the text, lightly edited, inside a longer string: a report, a log chunk, a markdown artifact). An
inverted index from shingle hash to text makes one pass per string cost its own shingles, whatever the number of
deleted texts. Texts of fewer than ``MIN_CONTAINED_SHINGLES`` shingles (about 20 characters) are found only as
whole strings: inside longer text they would match common phrases.

A contained hit inside a string that is mostly other text (character-shingle Jaccard with the deleted text below
the copy threshold the resolver deletes by, ``tasks.dedup.copies.CopyConfig.threshold``) is a *quote*. A quote in
a log, a report or an artifact is a leftover like any other; a quote that is the whole text of a live record (the
same content hash as a record in ``records/`` that no tombstone covers) is another contributor's own text that
quotes a deleted phrase, which the resolution kept on purpose (following quotes would let one request delete
everybody's reviews that cite a common line). Those are reported apart, by record id, and do not make the
verification unclean; every other copy of them (raw line, staging) is reported with them.

Places (``tasks.deletion.scan_sources``): the store, CUSTODY_HOME/logs and Prefect's local result storage, the
Prefect database and the MLflow database (read directly, never through a server), MLflow's API when it is a
server, and MLflow's artifacts. The result goes to ``reports/deletions/<id>/verification.json`` and into the
certificate's ``verification`` field; it names places, fingerprint indexes and scores, never text.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.config import Settings
from tasks.dedup.copies import DEFAULT as COPIES
from tasks.deletion import requests
from tasks.deletion import scan_sources as sources
from tasks.deletion.fingerprints import read_fingerprints, store_salt
from tasks.deletion.scan_files import Skipped
from tasks.fingerprints import SHINGLE_CHARS, char_shingles, match_form
from tasks.ids import content_hash, normalize_text
from tasks.passed import live_records, partitions
from tasks.storage import Store

log = logging.getLogger(__name__)
THRESHOLD = 0.8  # share of a deleted text's shingles that must occur in a string (a one-word edit keeps ~0.85)
MIN_CONTAINED_SHINGLES = 16
CACHED, CACHED_CHARS = 200_000, 200  # answers kept for strings this short (at most ~50 MB)
MAX_LISTED_HITS = 1_000  # hits beyond these are counted, not listed
VERIFICATION_FILE = "verification.json"
CERT_FILE = "certificate.json"  # tasks.certificate.CERT_JSON (imported there, so not importable here)


class Matcher:
    """The deleted texts' fingerprints, indexed: ``match(text)`` gives ``(index, score, how)`` per deleted text the
    string holds (``how``: ``exact``, ``contained`` for a near copy, ``quoted`` inside mostly other text). Short
    strings repeat (states, names, keys), so their answers are kept (up to ``CACHED`` of them)."""

    def __init__(self, fingerprints: pa.Table, salt: bytes, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self._keyed = hashlib.blake2b(digest_size=8, key=salt)  # keyed once; copies skip the key block
        self._cache: dict[str, list[tuple[int, float, str]]] = {}
        hashes = fingerprints.column("text_hash").to_pylist()
        self.exact = {h: i for i, h in enumerate(hashes)}
        shingles = [np.asarray(s, dtype=np.uint64) for s in fingerprints.column("shingles").to_pylist()]
        self.sizes = np.array([s.size for s in shingles], dtype=np.int64)
        owners = np.repeat(np.arange(len(shingles)), self.sizes)
        every = np.concatenate(shingles) if shingles else np.empty(0, np.uint64)
        order = np.argsort(every, kind="stable")
        self.index_hashes, self.index_owners = every[order], owners[order]  # inverted index: hash -> text
        self.n = len(hashes)

    def hashes(self, items: list[str]) -> np.ndarray:
        """``tasks.fingerprints.salted_hashes`` of ``items``, about twice as fast (the scan's hot loop)."""
        digests = []
        for item in items:
            h = self._keyed.copy()
            h.update(item.encode("utf-8", "surrogatepass"))
            digests.append(h.digest())
        return np.frombuffer(b"".join(digests), dtype="<u8") if digests else np.empty(0, dtype=np.uint64)

    def match(self, text: str) -> list[tuple[int, float, str]]:
        form = match_form(text) if self.n else ""
        if not form:
            return []
        if form in self._cache:
            return self._cache[form]
        hits: dict[int, tuple[float, str]] = {}
        whole = self.exact.get(int(self.hashes([form])[0]))
        if whole is not None:
            hits[whole] = (1.0, "exact")
        if len(form) - SHINGLE_CHARS + 1 >= self.threshold * MIN_CONTAINED_SHINGLES:  # else too short to hold one
            for i, score, how in self._contained(np.unique(self.hashes(char_shingles(form)))):
                hits.setdefault(i, (score, how))
        found = [(i, round(s, 4), how) for i, (s, how) in sorted(hits.items())]
        if len(form) <= CACHED_CHARS and len(self._cache) < CACHED:
            self._cache[form] = found
        return found

    def _contained(self, blob: np.ndarray) -> Iterator[tuple[int, float, str]]:
        """Deleted texts whose shingles occur in ``blob`` (sorted distinct hashes) at ``threshold`` or more, and
        whether ``blob`` is a copy of the text or quotes it (Jaccard of the two shingle sets)."""
        left = np.searchsorted(self.index_hashes, blob, "left")
        counts = np.searchsorted(self.index_hashes, blob, "right") - left
        present = counts > 0
        if not present.any():
            return
        starts, counts = left[present], counts[present]
        positions = np.repeat(starts - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
        shared = np.bincount(self.index_owners[positions], minlength=self.n)
        score = shared / np.maximum(self.sizes, 1)
        for i in np.flatnonzero((score >= self.threshold) & (self.sizes >= MIN_CONTAINED_SHINGLES)):
            similarity = shared[i] / (self.sizes[i] + blob.size - shared[i])
            yield int(i), float(score[i]), "contained" if similarity >= COPIES.threshold else "quoted"


@dataclass
class Tally:
    """What one place held: locations (files, rows' values), strings, bytes, skipped files by reason, hits."""

    place: str
    locations: int = 0
    blobs: int = 0
    bytes: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_bytes: int = 0
    hits: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    note: str | None = None
    incomplete: bool = False

    def summary(self) -> dict[str, Any]:
        return {"place": self.place, "locations": self.locations, "strings": self.blobs, "bytes": self.bytes,
                "not_scanned": dict(self.skipped), "not_scanned_bytes": self.skipped_bytes,
                "hits": len(self.hits), "seconds": round(self.seconds, 3), "note": self.note}


class Absent(Exception):
    """A place that does not exist here (an embedded database never created): nothing was written to it."""


def absent(what: str) -> Iterator[sources.Found]:
    raise Absent(what)
    yield  # a generator, like the places it stands for


def scan_place(place: str, start: Callable[[], Iterator[sources.Found]], matcher: Matcher) -> Tally:
    """Match every string of one place; a place that cannot be read is noted, and the others still scanned."""
    tally, started, last = Tally(place), time.monotonic(), None
    try:
        for found in start():
            if found.location != last:
                tally.locations, last = tally.locations + 1, found.location
            if isinstance(found.item, Skipped):
                tally.skipped[found.item.reason] += 1
                tally.skipped_bytes += found.nbytes
                continue
            tally.blobs, tally.bytes = tally.blobs + 1, tally.bytes + found.nbytes
            for index, score, how in matcher.match(found.item.text):
                tally.hits.append({"place": place, "location": found.location, "detail": found.item.where,
                                   "fingerprint": index, "score": score, "match": how} | (
                    {"quoted_by": content_hash(normalize_text(found.item.text))} if how == "quoted" else {}))
    except Absent as exc:
        tally.note = f"absent: {exc}"
    except Exception as exc:  # an unreachable place is reported as such, not as clean
        tally.note, tally.incomplete = f"scan incomplete: {type(exc).__name__}: {exc}", True
        log.warning("verify-deletion: %s: %s", place, tally.note)
    tally.seconds = time.monotonic() - started
    return tally


def places(store: Store, settings: Settings, request_id: str) -> dict[str, Callable[[], Iterator[sources.Found]]]:
    """Every place to scan, by name, as a function that starts its stream (so a missing engine fails one place)."""
    own = [layout.deletion_report(request_id, VERIFICATION_FILE), layout.fingerprints(request_id),
           layout.FINGERPRINT_SALT]
    home = settings.home.resolve()
    results = Path(os.environ.get("PREFECT_RESULTS_LOCAL_STORAGE_PATH") or home / "prefect" / "storage")
    found: dict[str, Callable[[], Iterator[sources.Found]]] = {
        "store": lambda: sources.store_items(store, skip=own),
        "logs": lambda: sources.directory_items(home / "logs"),
        "prefect_files": lambda: sources.directory_items(results),  # results and failed runs' exceptions
    }
    prefect_db, uri = sources.prefect_database_url(home), settings.mlflow_tracking_uri
    found["prefect_db"] = lambda: _database(prefect_db, server=settings.prefect_api_url)
    if uri.startswith(("http://", "https://")):
        import mlflow

        found["mlflow_api"] = lambda: sources.mlflow_api_items(mlflow.MlflowClient(tracking_uri=uri))
    else:
        found["mlflow_db"] = lambda: _database(uri)
    found["mlflow_artifacts"] = lambda: (
        sources.artifact_items(uri, sources.experiment_locations(uri)) if _sqlite_file(uri) in (None, True)
        else absent("no MLflow tracking database"))
    return found


def _sqlite_file(url: str) -> bool | None:
    """Whether a SQLite database's file exists (opening a missing one would create it); None for a server."""
    return Path(url.partition(":///")[2]).is_file() if url.startswith("sqlite") else None


def _database(url: str, server: str | None = None) -> Iterator[sources.Found]:
    """A database's items; a missing SQLite file is absent, unless a ``server`` keeps its database elsewhere."""
    if _sqlite_file(url) is False:
        if server:
            raise FileNotFoundError(f"the database of the server at {server} is not reachable from here: set "
                                    "PREFECT_API_DATABASE_CONNECTION_URL to it (read-only access suffices)")
        return absent(url.partition(":///")[2])
    return sources.database_items(url)


def expected(hit: dict[str, Any], request_id: str) -> bool:
    """The request's own vault holds its texts on purpose until certification destroys it."""
    return hit["place"] == "store" and hit["location"] == layout.vault(request_id)


def live_quoters(store: Store, hashes: set[str]) -> dict[str, str]:
    """Of these content hashes, those of live records (in ``records/``, not tombstoned): hash -> record id."""
    if not hashes:
        return {}
    wanted, found = pa.array(sorted(hashes), pa.string()), {}
    for part in partitions(store):
        rows = live_records(store, part, ["record_id", "content_hash"])
        rows = rows.filter(pc.is_in(rows.column("content_hash"), value_set=wanted))
        found.update(zip(rows.column("content_hash").to_pylist(), rows.column("record_id").to_pylist(), strict=True))
    return found


def _split_quotes(store: Store, hits: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(leftovers, quotes)``: quotes are hits inside the text of a live record (named by ``record_id``)."""
    quoters = live_quoters(store, {h["quoted_by"] for h in hits if "quoted_by" in h})
    leftovers, quotes = [], []
    for hit in hits:
        record = quoters.get(hit.pop("quoted_by", None))
        (quotes if record else leftovers).append(hit | ({"record_id": record} if record else {}))
    return leftovers, quotes


def verify_deletion(store: Store, settings: Settings, request_id: str,
                    threshold: float = THRESHOLD) -> dict[str, Any]:
    """Scan every place for ``request_id``'s deleted texts; write and return the verification report.

    Raises:
        Fatal: no such request.
    """
    doc = requests.load(store, request_id)
    fingerprints = read_fingerprints(store, request_id)
    matcher = Matcher(fingerprints, store_salt(store), threshold)
    started = dt.datetime.now(dt.UTC)
    tallies = [scan_place(name, start, matcher) for name, start in places(store, settings, request_id).items()]
    hits = [h for t in tallies for h in t.hits]
    leftovers, quotes = _split_quotes(store, [h for h in hits if not expected(h, request_id)])
    deleted = len((doc.get("resolved") or {}).get("record_ids", []))  # nothing deleted: nothing can be left
    report = {"request_id": request_id, "status": doc["status"], "verified_at": started.isoformat(),
              "seconds": round(sum(t.seconds for t in tallies), 3), "fingerprints": matcher.n,
              "threshold": threshold, "clean": not leftovers and (matcher.n > 0 or not deleted),
              "complete": not any(t.incomplete for t in tallies), "hits": len(leftovers),
              "expected_hits": len(hits) - len(leftovers) - len(quotes), "quoted_by_live_records": {
                  "hits": len(quotes), "record_ids": sorted({h["record_id"] for h in quotes})[:MAX_LISTED_HITS]},
              "scanned": {"places": len(tallies), "locations": sum(t.locations for t in tallies),
                          "strings": sum(t.blobs for t in tallies), "bytes": sum(t.bytes for t in tallies)},
              "not_scanned": dict(sum((t.skipped for t in tallies), Counter())),
              "places": [t.summary() for t in tallies], "leftovers": leftovers[:MAX_LISTED_HITS],
              "quotes": quotes[:MAX_LISTED_HITS]}
    if deleted and not matcher.n:
        report["note"] = f"{deleted} records deleted but no fingerprints kept: nothing to look for, not clean"
    store.write_json(layout.deletion_report(request_id, VERIFICATION_FILE), report)
    record_in_certificate(store, request_id, report)
    return report


def certificate_field(report: dict[str, Any]) -> dict[str, Any]:
    """The certificate's ``verification`` entry: the verdict and its size, never the hits' places."""
    return {k: report[k] for k in ("clean", "complete", "hits", "scanned", "not_scanned", "fingerprints",
                                   "verified_at", "quoted_by_live_records") if k in report}


def latest_verification(store: Store, request_id: str) -> dict[str, Any] | None:
    """The certificate field of the request's last verification, if one ran (for a certificate written later)."""
    key = layout.deletion_report(request_id, VERIFICATION_FILE)
    return certificate_field(store.read_json(key)) if store.exists(key) else None


def record_in_certificate(store: Store, request_id: str, report: dict[str, Any]) -> bool:
    """Add the verification to an existing certificate (False when the request is not certified yet)."""
    return update_certificate(store, request_id, verification=certificate_field(report))


def update_certificate(store: Store, request_id: str, **fields: Any) -> bool:
    """Set fields of an existing certificate (a verification, or a purge that finished after certification);
    False when the request is not certified yet."""
    key = layout.deletion_report(request_id, CERT_FILE)
    if not store.exists(key):
        return False
    store.write_json(key, {**store.read_json(key), **fields})
    return True
