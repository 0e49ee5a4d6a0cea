"""Every step of the chain at several store sizes, through the real ``custody`` CLI: ``python bench/scale.py``.

Per corpus and size, a fresh ``CUSTODY_HOME`` under ``--work-dir`` gets N raw records (``bench/scale_corpus.py``,
not timed), then each step runs as a subprocess of the installed console script, in order: ingest, validate
(commercial policy), score (quality only), select (quality strategy, size-capped budget), lineage of one record,
delete one record (with the temporary Prefect server, and again with a served one) and one owner (each soft,
``--defer-purge``, then hard, ``custody purge``), and 1,000 record-id
requests filed through the Python API, then applied and purged in one ``custody deletions --apply``. ``dedup`` is
the clustering task inside ingest, timed from Prefect's own task run record. Wall seconds and the peak RSS of the
whole process tree (the CLI, its Dask workers and the temporary Prefect server; psutil, polled every 0.2 s) go to
``bench/results/scale.json`` after every step, with growth exponents and issue #16's targets. See bench/README.md,
"Scale".

    .venv/bin/python bench/scale.py --quick --corpus synthetic,tweets   # 20k and 60k records
    .venv/bin/python bench/scale.py                                      # 1M, 3M, 10M (hours)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
from scale_corpus import (  # bench/ modules, imported as cli_readonly.py does
    RECORDS_PER_OWNER,
    owner_name,
    source_id,
    write_corpus,
    write_delivery,
)
from scale_measure import exponents, machine, measure, prefect_server, prefect_task_times
from scale_plot import plot

from tasks import layout
from tasks.deletion import requests
from tasks.ids import record_id
from tasks.selection import list_datasets
from tasks.storage import Store

STEPS = ("ingest", "validate", "dedup", "score_quality", "select", "lineage_query", "delete_one_record",
         "delete_one_record_served", "delete_one_owner", "delete_1000_requests", "ingest_one_file")
DELIVERY = 1_000  # records of the later delivery ``ingest_one_file`` ingests
DEFAULT_SIZES, QUICK_SIZES = (1_000_000, 3_000_000, 10_000_000), (20_000, 60_000)
DATASET = "scale"
CUSTODY = Path(sys.executable).with_name("custody")
RESULTS = Path(__file__).resolve().parent / "results"
SELECT_SHARE, SELECT_CAP = 0.1, 100_000  # the dataset: 10% of the store, at most 100k records (a size-capped budget)
TARGET_SIZE, EXPONENT_MAX, RSS_MAX_MB = 10_000_000, 1.1, 4096
ONE_RECORD_MAX_S, BATCH_RATIO_MAX, INGEST_MB_S_CORE, VALIDATE_RECORDS_S = 10.0, 3.0, 1.5, 25_000


class Size:
    """One corpus at one size: its home, the records and owner the query and deletion steps use."""

    def __init__(self, args: argparse.Namespace, corpus: str, n: int) -> None:
        self.corpus, self.n, self.source = corpus, n, corpus
        self.dir = Path(args.work_dir) / corpus / str(n)
        self.home = self.dir / "custody"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODY_", "PREFECT_", "MLFLOW_"))}
        self.env["CUSTODY_HOME"] = str(self.home)
        self.store = Store((self.home / "store").resolve().as_uri())
        rng = np.random.default_rng(n + args.round)
        picks = rng.choice(n, 1 + args.requests, replace=False).tolist()
        self.fallback_record, self.batch = self.rid(picks[0]), [self.rid(i) for i in picks[1:]]
        self.owner = owner_name(corpus, args.round)
        self.round = args.round
        self.timeout, self.facts = args.step_timeout, {}

    def rid(self, i: int) -> str:
        return record_id(self.source, source_id(self.corpus, i))

    def prepare(self, resume: bool) -> dict[str, Any]:
        """A home with the raw corpus: reused with ``resume`` when its raw files are there, else made afresh."""
        if resume and (self.home / "store" / "raw" / self.source).exists():
            return {"reused_home": True, "raw_bytes": sum(p.stat().st_size for p in self.raw_files())}
        shutil.rmtree(self.dir, ignore_errors=True)
        start = time.perf_counter()
        written = write_corpus(self.store, self.corpus, self.source, self.n)
        return {"reused_home": False, "raw_bytes": written["bytes"], "raw_files": written["files"],
                "owners": written["owners"], "generate_s": round(time.perf_counter() - start, 1)}

    def queried(self, other: int = 0) -> str:
        """The record the lineage query asks about and the one-record deletion deletes: the first of the selected
        dataset's train split (so both have a dataset to name; ``other`` picks a later one), else a random record
        of the corpus."""
        versions = [d["version"] for d in list_datasets(self.store) if d["name"] == DATASET]
        if not versions:
            return self.fallback_record
        table = self.store.read_parquet(layout.manifest(DATASET, versions[0]), ["record_id", "split"])
        return table.filter(pc.equal(table["split"], "train"))["record_id"][2 * self.round + other].as_py()

    def raw_files(self) -> list[Path]:
        return sorted((self.home / "store" / "raw" / self.source).glob("*.jsonl"))

    def cli(self, step: str, *argv: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        return measure([str(CUSTODY), *argv, "--json"], env or self.env, self.dir / "logs" / step, self.timeout)


# one function per step: what it runs, and the extras it reads from the command's JSON


def ingest(size: Size) -> dict[str, Any]:
    entry = size.cli("ingest", "ingest")
    out = entry.pop("output", {}) or {}
    rows = (out.get("sources") or [{}])[0]
    mb = size.facts["raw_bytes"] / 1e6
    entry.update(records=rows.get("records"), rows_in=rows.get("rows_in"), raw_mb=round(mb, 1),
                 exact_duplicates=rows.get("exact_duplicates"), near_dup_members=rows.get("near_dup_members"),
                 mb_per_s_per_core=round(mb / entry["s"] / os.cpu_count(), 3),
                 prefect=prefect_task_times(size.home / "prefect" / "prefect.db", "ingest"))
    size.facts["clusters"] = out.get("clusters", {})
    return entry


def dedup(size: Size) -> dict[str, Any]:
    """Not a command: the ``cluster-near-duplicates`` task of the last ingest, as Prefect recorded it (its RSS is
    within ingest's; signatures are made by the parse tasks and counted in ingest only)."""
    task = prefect_task_times(size.home / "prefect" / "prefect.db", "ingest").get("tasks", {}).get(
        "cluster-near-duplicates")
    if not task:
        return {"ok": False, "error": "no cluster-near-duplicates task run in Prefect's database (run ingest)"}
    return {"ok": True, "s": task["sum_s"], "peak_rss_mb": None, "inside": "ingest",
            **{k: v for k, v in size.facts.get("clusters", {}).items() if k != "config"}}


def validate(size: Size) -> dict[str, Any]:
    entry = size.cli("validate", "validate", "--policy", "commercial")
    out = entry.pop("output", {}) or {}
    checked = sum(row.get("checked", 0) for row in out.get("sources", []))
    entry.update(records=checked, passed=sum(row.get("passed", 0) for row in out.get("sources", [])),
                 records_per_s=round(checked / entry["s"]))
    return entry


def score_quality(size: Size) -> dict[str, Any]:
    entry = size.cli("score_quality", "score", "--scorer", "quality")
    runs = (entry.pop("output", {}) or {}).get("runs") or [{}]
    entry.update({k: v for k, v in runs[0].items() if isinstance(v, int | float | str)})
    return entry


def select(size: Size) -> dict[str, Any]:
    budget = min(SELECT_CAP, max(1, int(size.n * SELECT_SHARE)))
    entry = size.cli("select", "select", "--name", DATASET, "--strategy", "quality", "--budget", str(budget))
    out = entry.pop("output", {}) or {}
    entry.update(budget=budget, version=out.get("version"), counts=out.get("counts"))
    return entry


def lineage_query(size: Size) -> dict[str, Any]:
    entry = size.cli("lineage_query", "lineage", "--record-id", size.queried())
    out = entry.pop("output", {}) or {}
    entry.update(record_id=size.queried(), datasets=len(out.get("datasets", [])), models=len(out.get("models", [])))
    return entry


# Deletions are soft, then hard: ``custody delete --defer-purge`` makes the records unreadable at once (tombstones,
# ``soft_s``) and ``custody purge`` removes their bytes in one batched pass over the partitions they touch
# (``purge_s``); ``s`` is the sum. ``custody deletions --apply`` does both for every open request.
REASON = "bench/scale.py"


def unreadable_after(size: Size, request_id: str | None) -> dict[str, Any]:
    """Seconds from the request's acknowledgement to ``applied`` (tombstoned: unreadable by every stage), from its
    own history, and the soft step's own seconds (``applied.soft_seconds``): the CLI's wall time also holds the
    interpreter and the temporary Prefect server starting, which a served installation does not pay."""
    if not request_id:
        return {}
    doc = requests.load(size.store, request_id)
    at = {h["status"]: dt.datetime.fromisoformat(h["at"]) for h in doc["history"]}
    return {"request_id": request_id, "unreadable_after_s": round((at["applied"] - at["received"]).total_seconds(), 3),
            "soft_step_s": doc["applied"].get("soft_seconds")}


def soft_then_purge(size: Size, step: str, *selector: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    served = ("--apply",) if env else ()  # with a server configured, `custody delete` applies here only when asked
    soft = size.cli(f"{step}.soft", "delete", *selector, "--reason", REASON, "--defer-purge", *served, env=env)
    hard = size.cli(f"{step}.purge", "purge", env=env)
    out, purged = soft.pop("output", None) or {}, hard.pop("output", None) or {}
    return {**unreadable_after(size, out.get("request_id")), "ok": soft["ok"] and hard["ok"],
            "s": round(soft["s"] + hard["s"], 3), "soft_s": soft["s"],
            "purge_s": hard["s"], "peak_rss_mb": max(soft["peak_rss_mb"], hard["peak_rss_mb"]),
            "peak_process_mb": max(soft["peak_process_mb"], hard["peak_process_mb"]),
            "load_before": soft["load_before"], "load_after": hard["load_after"], "status": out.get("status"),
            "resolved": out.get("resolved"), "purge": {k: v for k, v in purged.items() if k != "ok"},
            **{f"{k}_error": e["error"] for k, e in (("soft", soft), ("purge", hard)) if "error" in e}}


def delete_one_record(size: Size) -> dict[str, Any]:
    rid = size.queried()
    return {**soft_then_purge(size, "delete_one_record", "--record-id", rid), "record_id": rid}


def delete_one_record_served(size: Size) -> dict[str, Any]:
    """``delete_one_record`` (another record) on an installation that serves Prefect (``custody server``, the
    production profile, the UI users watch): the server is up before the request, as it is there, so the
    request's time to unreadable holds no server start."""
    rid = size.queried(other=1)
    with prefect_server(size.home / "prefect", size.dir / "logs" / "prefect_server") as url:
        entry = soft_then_purge(size, "delete_one_record_served", "--record-id", rid,
                                env={**size.env, "PREFECT_API_URL": url})
    return {**entry, "record_id": rid, "prefect": "a running Prefect server (PREFECT_API_URL)"}


def delete_one_owner(size: Size) -> dict[str, Any]:
    return {**soft_then_purge(size, "delete_one_owner", "--owner", size.owner), "owner": size.owner}


def delete_1000_requests(size: Size) -> dict[str, Any]:
    """``custody delete`` files one request per call (``--no-apply`` files without applying), but 1,000 CLI
    starts would time the interpreter: the requests are filed in-process with ``tasks.deletion.requests.submit``
    (timed apart, ``submit_s``), then one ``custody deletions --apply`` applies them all and purges their bytes in
    one pass (its purge sub-flow's seconds, from Prefect's record, are ``purge_s``)."""
    start = time.perf_counter()
    for rid in size.batch:
        requests.submit(size.store, "record_id", [rid], f"{REASON} batch")
    submit_s = round(time.perf_counter() - start, 3)
    entry = size.cli("delete_1000_requests", "deletions", "--apply")
    entry.pop("output", None)
    batch = set(size.batch)
    docs = [d for d in requests.list_requests(size.store) if d["selector"]["values"][0] in batch]
    purge = prefect_task_times(size.home / "prefect" / "prefect.db", "purge-deleted-bytes")
    entry.update(requests=len(size.batch), submit_s=submit_s, purge_s=purge.get("flow_s"),
                 applied=sum(d["status"] == requests.APPLIED for d in docs),
                 purged=sum(d.get("applied", {}).get("purge", {}).get("state") == "done" for d in docs))
    return entry


def ingest_one_file(size: Size) -> dict[str, Any]:
    """A later delivery: one new raw file of ``DELIVERY`` records into the full store, then ``custody ingest``
    (the other files are skipped by their parse markers; clustering and publishing see the whole store)."""
    owners = max(1, size.n // RECORDS_PER_OWNER)
    first = size.n + size.round * DELIVERY  # a new file each round
    mb = write_delivery(size.store, size.corpus, size.source, first, DELIVERY, owners) / 1e6
    entry = size.cli("ingest_one_file", "ingest")
    rows = ((entry.pop("output", {}) or {}).get("sources") or [{}])[0]
    entry.update(delivered_records=DELIVERY, delivered_mb=round(mb, 3), records=rows.get("records"),
                 prefect=prefect_task_times(size.home / "prefect" / "prefect.db", "ingest"))
    return entry


STEP_FNS = {"ingest": ingest, "validate": validate, "dedup": dedup, "score_quality": score_quality,
            "select": select, "lineage_query": lineage_query, "delete_one_record": delete_one_record,
            "delete_one_record_served": delete_one_record_served,
            "delete_one_owner": delete_one_owner, "delete_1000_requests": delete_1000_requests,
            "ingest_one_file": ingest_one_file}


def targets(sizes: dict[str, dict[str, dict[str, Any]]], exps: dict[str, float | None]) -> dict[str, Any]:
    """Issue #16's targets, judged at the largest size run (``at_target_size`` says whether that is 10M)."""
    if not sizes:
        return {}
    n = max(map(int, sizes))
    at = sizes[str(n)]

    def value(step: str, key: str = "s") -> float | None:
        return at[step].get(key) if at.get(step, {}).get("ok") else None

    def judged(v: float | None, ok: bool) -> dict[str, Any]:
        return {"value": v, "met": ok if v is not None else None}

    # unreadable: from the request's acknowledgement to tombstoned (its own history), the temporary Prefect server's
    # start included; the CLI's whole wall time also holds the interpreter starting and the report
    soft, served = value("delete_one_record", "unreadable_after_s"), value("delete_one_record_served",
                                                                            "unreadable_after_s")
    one, batch = value("delete_one_record"), value("delete_1000_requests")
    rss = {s: judged(value(s, "peak_rss_mb"), (value(s, "peak_rss_mb") or 0) < RSS_MAX_MB) for s in STEPS
           if s != "dedup"}
    return {"size": n, "at_target_size": n == TARGET_SIZE,
            "exponent_le_1.1": {s: judged(e, e is not None and e <= EXPONENT_MAX) for s, e in exps.items()},
            "peak_rss_below_4gb": rss,
            "delete_one_record_unreadable_below_10s": judged(soft, (soft or 0) < ONE_RECORD_MAX_S),
            "delete_one_record_served_unreadable_below_10s": judged(served, (served or 0) < ONE_RECORD_MAX_S),
            "delete_one_record_purge_partitions": (at.get("delete_one_record", {}).get("purge") or {}).get(
                "targets_rewritten"),
            "delete_1000_below_3x_one": judged(round(batch / one, 2) if one and batch else None,
                                               bool(one and batch and batch / one < BATCH_RATIO_MAX)),
            "ingest_mb_per_s_per_core_ge_1.5": judged(value("ingest", "mb_per_s_per_core"),
                                                      (value("ingest", "mb_per_s_per_core") or 0) >= INGEST_MB_S_CORE),
            "validate_records_per_s_ge_25k": judged(value("validate", "records_per_s"),
                                                    (value("validate", "records_per_s") or 0) >= VALIDATE_RECORDS_S)}


def summarise(doc: dict[str, Any]) -> None:
    """Exponents and targets of every corpus, from its sizes (called after every step)."""
    for result in doc["corpora"].values():
        result["exponents"], result["exponents_adjacent"] = exponents(result["sizes"], STEPS)
        result["targets"] = targets(result["sizes"], result["exponents"])


def write(doc: dict[str, Any], out: Path) -> None:
    """The results as JSON, and their figure beside it (``scale_plot``: ``scale.json`` -> ``scale.png``)."""
    summarise(doc)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    plot(doc, out.with_suffix(".png"))


def run_size(args: argparse.Namespace, doc: dict[str, Any], corpus: str, n: int) -> None:
    """Prepare one size's home, then run the chosen steps in order, writing the results after each."""
    size = Size(args, corpus, n)
    result = doc["corpora"].setdefault(corpus, {"sizes": {}, "notes": {}})
    if not args.resume:
        result["sizes"][str(n)] = {}
    steps = result["sizes"].setdefault(str(n), {})
    size.facts = size.prepare(args.resume)
    result["notes"][str(n)] = {**size.facts, "home": str(size.home), "owner_deleted": size.owner,
                               "dedup": "inside ingest: the cluster-near-duplicates task's run time as Prefect "
                                        "recorded it; MinHash signatures are made in ingest's parse tasks"}
    write(doc, args.out)
    for step in args.steps:
        print(f"{corpus} {n:,}: {step} ...", file=sys.stderr, flush=True)
        steps[step] = STEP_FNS[step](size)
        print(f"  {json.dumps({k: steps[step].get(k) for k in ('ok', 's', 'peak_rss_mb')})}", file=sys.stderr)
        write(doc, args.out)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="comma-separated record counts")
    parser.add_argument("--quick", action="store_true", help=f"sizes {QUICK_SIZES}, results to scale_quick.json")
    parser.add_argument("--corpus", default="synthetic", help="synthetic, tweets, or both comma-separated")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of the steps, in order")
    parser.add_argument("--resume", action="store_true", help="reuse each size's home (and its results so far)")
    parser.add_argument("--work-dir", default="/tmp/custody-bench-scale", help="homes live under here")
    parser.add_argument("--requests", type=int, default=1000, help="requests of delete_1000_requests")
    parser.add_argument("--round", type=int, default=0,
                        help="with --resume, deletion steps again on other records: record and owner number ROUND")
    parser.add_argument("--step-timeout", type=float, default=6 * 3600, help="seconds before a step is stopped")
    parser.add_argument("--out", type=Path, help="results JSON (default results/scale.json or scale_quick.json)")
    args = parser.parse_args()
    args.sizes = QUICK_SIZES if args.quick else tuple(int(s) for s in args.sizes.split(","))
    args.steps = [s for s in STEPS if s in args.steps.split(",")]
    args.corpora = args.corpus.split(",")
    unknown = set(args.corpora) - {"synthetic", "tweets"}
    if unknown:
        parser.error(f"unknown corpus {sorted(unknown)}; use synthetic or tweets")
    args.out = args.out or RESULTS / ("scale_quick.json" if args.quick else "scale.json")
    return args


def main() -> None:
    args = parse_args()
    doc = json.loads(args.out.read_text()) if args.out.exists() else {"corpora": {}}
    doc["machine"], doc["started_at"] = machine(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
    doc["config"] = {"sizes": list(args.sizes), "steps": args.steps, "requests": args.requests,
                     "select_budget": f"min({SELECT_CAP}, {SELECT_SHARE:.0%} of N) records, strategy quality",
                     "rss": "psutil, sum over the command's process tree, polled every 0.2 s"}
    for corpus in args.corpora:
        for n in args.sizes:
            run_size(args, doc, corpus, n)
    doc["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    write(doc, args.out)


if __name__ == "__main__":
    main()
