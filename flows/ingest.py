"""Ingestion flow: raw/ to records/ in parallel on Dask, with dedup clusters and a summary artifact.

Run it with ``custody ingest [--source NAME]``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from flows.progress import retry_transient, text_safe, track_futures
from tasks import ingest
from tasks.batching import dealt
from tasks.datasheet import load_datasheet
from tasks.errors import DatasheetError
from tasks.sources import readable_sources
from tasks.storage import Store

parse_file = task(text_safe(ingest.parse_file), name="parse-file", cache_policy=NONE, retries=2,
                  retry_condition_fn=retry_transient)
cluster_store = task(text_safe(ingest.cluster_store), name="cluster-near-duplicates", cache_policy=NONE)
publish_partitions = task(text_safe(ingest.publish_partitions), name="publish-partitions", cache_policy=NONE)
PUBLISH_TASKS = 16  # the publishes a run would change, in this many shares


def summarize(parsed: list[dict], published: list[dict], clusters: dict, errors: dict[str, str]) -> list[dict]:
    """One row per source for the artifact and the CLI: files, rows, records, duplicates, quarantine, and rows a
    deletion withdrew (at parse or at publish), by reason."""
    rows: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for stat in parsed:
        row = rows[stat["source"]]
        row["files"] += 1
        row["rows_in"] += stat["rows_in"]
        for key, value in stat.items():
            if key.startswith(("quarantined", "withdrawn")):
                row[key] += value
    for stat in published:
        row = rows[stat["source"]]
        row["records"] += stat["records"]
        row["exact_duplicates"] += stat["exact_duplicates"]
        row["quarantined"] += stat["duplicate_id"]
        if stat["duplicate_id"]:
            row["quarantined_duplicate_id"] += stat["duplicate_id"]
        row["near_dup_members"] += stat["near_dup_members"]
        for key, value in stat.items():
            if key.startswith("withdrawn"):
                row[key] += value
    out = [{"source": s, **dict(r), "near_dup_clusters_store": clusters.get("near_dup_clusters", 0)}
           for s, r in sorted(rows.items())]
    out += [{"source": s, "error": e} for s, e in sorted(errors.items())]
    return out


@flow(name="ingest", log_prints=False)
def ingest_flow(sources: list[str] | None = None, cfg: ingest.IngestConfig | None = None) -> dict[str, Any]:
    """Ingest every source under raw/ (or only ``sources``) into records/; returns the summary."""
    store = Store.from_settings()
    cfg = cfg or ingest.IngestConfig()
    readable, errors = readable_sources(store, sources or None)  # bad folder names and links: refused, with why
    futures, parsed = [], []
    for source in readable:
        try:
            sheet, sheet_hash = load_datasheet(store, source)
        except DatasheetError as exc:  # this source stops; the others go on
            errors[source] = str(exc)
            continue
        todo, done = ingest.files_to_parse(store, source, sheet_hash, cfg)  # tasks only where a parse would change
        parsed += done
        futures += [parse_file.submit(store, source, key, sheet, sheet_hash, cfg) for key in todo]
    parsed += track_futures(futures, "parse raw files")
    clusters = cluster_store.submit(store, cfg).result()
    partitions = ingest.staged_partitions(store)
    unchanged = ingest.unchanged_publishes(store, partitions)  # and for each partition a publish would change
    changed = [part for part in partitions if part not in unchanged]
    shares = [publish_partitions.submit(store, share) for share in dealt(changed, PUBLISH_TASKS)]
    published = [*unchanged.values(), *(stats for share in track_futures(shares, "publish records")
                                        for stats in share)]
    table = summarize(parsed, published, clusters, errors)
    create_table_artifact(key="ingest-summary", table=table, description="Ingestion per source")
    return {"sources": table, "clusters": clusters, "errors": errors}
