"""Run datatrove's MinHash near-duplicate pipeline on one JSONL file and report timings and clusters as JSON.

This script runs inside a separate virtualenv that has ``datatrove`` installed (it clashes with the project's
pins), so it imports only datatrove, numpy and the standard library — never the project's code. It is started by
``bench/near_dup.py``; by hand::

    /work/bench-venvs/datatrove/bin/python bench/datatrove_runner.py --input docs.jsonl --workdir /tmp/dt \\
        --out result.json --ngram 5 --buckets 12 --rows 10 --seed 1 --hash xxhash64

Input lines are ``{"id": ..., "text": ...}``; the line number is the document index. The stages are
datatrove's own steps run by its ``LocalPipelineExecutor`` with one worker: ``MinhashDedupSignature``
(tasks=1; shingling, hashing, signatures, sorting the bucket files), ``MinhashDedupBuckets`` (tasks=buckets, run
one after another: datatrove needs one task per bucket) and ``MinhashDedupCluster`` (tasks=1, union-find). The
documents are read from the JSONL into memory before the clock starts and handed to the first stage from there,
so no stage pays for JSON parsing. The output JSON has per-stage wall and CPU seconds and the clusters as lists of
document indices.
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupSignature,
)
from datatrove.utils.hashing import HashConfig

HASHES = {"xxhash64": HashConfig(precision=64, hash_fc="xxhash"), "sha1-32": HashConfig(precision=32, hash_fc="sha1"),
          "xxhash32": HashConfig(precision=32, hash_fc="xxhash"), "sha1-64": HashConfig(precision=64, hash_fc="sha1")}


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _timed(fn: Callable[[], Any]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), _cpu_seconds()
    fn()
    return {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu_seconds() - cpu}


def _peak_rss_mb() -> float:
    """This process's peak RSS (``ru_maxrss`` would carry the parent's peak across ``exec`` on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read_clusters(folder: Path) -> list[list[int]]:
    """Group the ``(doc_index, cluster_id)`` records of ``MinhashDedupCluster(save_cluster_id=True)``."""
    members: dict[int, list[int]] = defaultdict(list)
    for path in sorted(folder.glob("*.clusters")):
        data = path.read_bytes()
        for doc, cluster in struct.iter_unpack("<2I", data):
            members[cluster].append(doc)
    return [sorted(docs) for docs in members.values() if len(docs) > 1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", type=Path, required=True, help="JSONL with id and text per line")
    ap.add_argument("--workdir", type=Path, required=True, help="empty scratch folder")
    ap.add_argument("--out", type=Path, required=True, help="result JSON")
    ap.add_argument("--ngram", type=int, default=5)
    ap.add_argument("--buckets", type=int, default=12)
    ap.add_argument("--rows", type=int, default=10, help="hashes per bucket")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--hash", choices=sorted(HASHES), default="xxhash64")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    with args.input.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    load_s = time.perf_counter() - t0

    def documents(_data: Any = None, _rank: int = 0, _world_size: int = 1) -> Iterator[Document]:
        for row in rows:
            yield Document(text=row["text"], id=str(row["id"]))

    cfg = MinhashConfig(n_grams=args.ngram, num_buckets=args.buckets, hashes_per_bucket=args.rows, seed=args.seed,
                        hash_config=HASHES[args.hash])
    work = args.workdir
    sigs, buckets, clusters, logs = work / "signatures", work / "buckets", work / "clusters", work / "logs"
    stages: dict[str, dict[str, float]] = {}
    stages["signatures"] = _timed(LocalPipelineExecutor(
        pipeline=[documents, MinhashDedupSignature(output_folder=str(sigs), config=cfg)],
        tasks=1, workers=1, logging_dir=str(logs / "signatures")).run)
    stages["buckets"] = _timed(LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=str(sigs), output_folder=str(buckets), config=cfg)],
        tasks=args.buckets, workers=1, logging_dir=str(logs / "buckets")).run)
    stages["clusters"] = _timed(LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=str(buckets), output_folder=str(clusters), config=cfg,
                                      save_cluster_id=True)],
        tasks=1, workers=1, logging_dir=str(logs / "clusters")).run)

    result = {
        "datatrove_version": version("datatrove"),
        "python": sys.version.split()[0],
        "config": {"n_grams": cfg.n_grams, "num_buckets": cfg.num_buckets, "hashes_per_bucket": cfg.hashes_per_bucket,
                   "seed": cfg.seed, "hash": args.hash, "tokenizer": "datatrove default for English (spaCy blank)"},
        "docs": len(rows),
        "load_s": load_s,
        "stages": stages,
        "peak_rss_mb": _peak_rss_mb(),
        "clusters": _read_clusters(clusters),
    }
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
