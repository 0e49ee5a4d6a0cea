"""What rewriting files costs on this machine, and why a benchmark must delete from a real copy of a store.

A purge rewrites each file it touches whole (written beside it, fsynced, renamed over it), so its cost is mostly
the bytes it writes. Here writing into the page cache is cheap when the kernel has just freed pages to reuse and
~3x dearer when it must take memory it has handed back to the host (this virtual machine reports free pages to
its hypervisor within seconds; a page so returned is faulted in afresh on its next use). A rewrite frees the old
file's pages when the rename drops its last link. Deleting from a copy made with hard links (``cp -al``) keeps
every old file alive through its other name, so every byte a purge writes lands in fresh memory: the purge is
measured slower than it runs on a store of its own.

Two rounds per mode, alternated in one run: ``N`` files of ``M`` MB are written, then (``linked``) linked from a
second directory or (``own``) not, the page cache is left to settle, and each file is read and rewritten in turn.
Writes ``bench/results/rewrite_cost.json`` (seconds and GB/s per round, the linked/own ratio)::

    .venv/bin/python bench/rewrite_cost.py                 # 30 files of 70 MB, ~1 min
    .venv/bin/python bench/rewrite_cost.py --files 10 --mb 20 --out /tmp/rewrite_cost.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "rewrite_cost.json"
MODES = ("own", "linked")


def rewrite_all(directory: Path, names: list[str]) -> float:
    """Seconds to rewrite every file the way ``Store.write_parts`` does: beside it, fsynced, renamed over it."""
    start = time.perf_counter()
    for name in names:
        data = (directory / name).read_bytes()
        tmp = directory / f"{name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / name)
    return time.perf_counter() - start


def one_round(work: Path, mode: str, files: int, mb: int, settle_s: float) -> float:
    store, other = work / "store", work / "other"
    shutil.rmtree(work, ignore_errors=True)
    store.mkdir(parents=True)
    blob = os.urandom(mb << 20)
    names = [f"part-{i:03d}" for i in range(files)]
    for name in names:
        (store / name).write_bytes(blob)
    if mode == "linked":
        other.mkdir()
        for name in names:
            os.link(store / name, other / name)
    os.sync()
    time.sleep(settle_s)  # long enough for freed memory to go back to the host, as between a build and a purge
    seconds = rewrite_all(store, names)
    shutil.rmtree(work)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--mb", type=int, default=70, help="MB per file (a 10M store's partition writes ~73 MB)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per mode, alternated")
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    seconds: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="rewrite_cost_") as tmp:
        for r in range(args.rounds):
            for mode in MODES if r % 2 == 0 else MODES[::-1]:
                seconds[mode].append(round(one_round(Path(tmp) / "w", mode, args.files, args.mb, args.settle_s), 3))
                print(f"round {r + 1} {mode}: {seconds[mode][-1]} s", flush=True)
    gb = args.files * args.mb / 1024
    result = {
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": platform.node(),
        "cpus": os.cpu_count(), "files": args.files, "mb_per_file": args.mb, "gb_rewritten": round(gb, 2),
        "seconds": seconds,
        "gb_per_s": {m: [round(gb / s, 2) for s in v] for m, v in seconds.items()},
        "linked_over_own": round(statistics.median(seconds["linked"]) / statistics.median(seconds["own"]), 2),
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
