"""Measuring one command for ``bench/scale.py``: wall seconds and peak RSS of its whole process tree, Prefect's
task times, machine facts, and the growth exponents between sizes.

Peak RSS is polled with psutil every ``POLL_S`` seconds over the command and all its descendants (the Dask nanny
and worker processes, the temporary Prefect server): ``peak_rss_mb`` is the largest sum seen, ``peak_process_mb``
the largest single process. ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` would give only the largest single process
ever waited for (a maximum, not a sum of concurrent workers), and only once each is reaped, so it is not used.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

POLL_S, MB = 0.2, 2**20
KILL_GRACE_S = 30


def tree_rss(proc: psutil.Process, seen: set[int]) -> tuple[int, int]:
    """(sum, largest) RSS in bytes of ``proc`` and its descendants; remembers their pids in ``seen``."""
    total = largest = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for p in procs:
        try:
            rss = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        seen.add(p.pid)
        total, largest = total + rss, max(largest, rss)
    return total, largest


def stop_tree(proc: psutil.Popen, seen: set[int]) -> None:
    """End a timed-out command: its process group (it leads one), then any descendant seen that outlived it."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        for pid in seen:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).send_signal(sig)
        try:
            proc.wait(wait)
            return
        except psutil.TimeoutExpired:
            continue


def load() -> float:
    return round(os.getloadavg()[0], 2)


def measure(argv: list[str], env: dict[str, str], logs: Path, timeout: float) -> dict[str, Any]:
    """Run ``argv`` (a ``--json`` command) to its end or ``timeout``; stdout and stderr go to ``logs``.stdout/err.

    Returns:
        ``ok``, ``s``, ``peak_rss_mb``, ``peak_process_mb``, ``load_before``/``load_after`` (1-min load average),
        ``rc``, ``output`` (the command's JSON, or None), and ``timed_out`` / ``error`` (stderr's tail) when so.
    """
    logs.parent.mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {"load_before": load()}
    peak = peak_one = 0
    seen: set[int] = set()
    with open(f"{logs}.stdout", "wb") as out, open(f"{logs}.stderr", "wb") as err:
        start = time.perf_counter()
        proc = psutil.Popen(argv, env=env, stdout=out, stderr=err, start_new_session=True)
        while True:
            try:
                rc = proc.wait(POLL_S)
                break
            except psutil.TimeoutExpired:
                total, largest = tree_rss(proc, seen)
                peak, peak_one = max(peak, total), max(peak_one, largest)
            if time.perf_counter() - start > timeout:
                stop_tree(proc, seen)
                rc, entry["timed_out"] = None, True
                break
        wall = time.perf_counter() - start
    entry.update(s=round(wall, 3), peak_rss_mb=round(peak / MB, 1), peak_process_mb=round(peak_one / MB, 1),
                 load_after=load(), rc=rc, output=_json_output(Path(f"{logs}.stdout")))
    entry["ok"] = rc == 0 and bool(entry["output"]) and entry["output"].get("ok", True)
    if not entry["ok"]:
        entry["error"] = Path(f"{logs}.stderr").read_text(errors="replace")[-1500:]
    return entry


def _json_output(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (ValueError, OSError):
        return None


def _seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def prefect_task_times(db: Path, flow: str) -> dict[str, Any]:
    """The last run of ``flow`` as the embedded Prefect server recorded it (its SQLite database): ``flow_s``, and
    per task name (without Prefect's run suffix) count, sum and max seconds and the span from first start to last
    end."""
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        last = con.execute("SELECT fr.id, fr.start_time, fr.end_time FROM flow_run fr JOIN flow f ON fr.flow_id = f.id"
                           " WHERE f.name = ? ORDER BY fr.start_time DESC LIMIT 1", (flow,)).fetchone()
        rows = con.execute("SELECT name, start_time, end_time FROM task_run WHERE flow_run_id = ?",
                           (last[0],)).fetchall() if last else []
    tasks: dict[str, dict[str, Any]] = {}
    for name, start, end in rows:
        seconds = _seconds(start, end)
        if seconds is None:
            continue
        t = tasks.setdefault(name.rsplit("-", 1)[0], {"count": 0, "sum_s": 0.0, "max_s": 0.0, "first": start,
                                                        "last": end})
        t.update(count=t["count"] + 1, sum_s=t["sum_s"] + seconds, max_s=max(t["max_s"], seconds),
                 first=min(t["first"], start), last=max(t["last"], end))
    return {"flow_s": round(_seconds(last[1], last[2]) or 0.0, 3) if last else None,
            "tasks": {name: {"count": t["count"], "sum_s": round(t["sum_s"], 3), "max_s": round(t["max_s"], 3),
                             "span_s": round(_seconds(t["first"], t["last"]) or 0.0, 3)} for name, t in tasks.items()}}


def machine() -> dict[str, Any]:
    """Facts of the run's machine and code."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()

    return {"cpu_count": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "platform": platform.platform(), "git_commit": git("rev-parse", "HEAD"),
            "git_dirty_files": len(git("status", "--porcelain").splitlines()), "load_at_start": os.getloadavg()}


def exponent(n1: int, t1: float, n2: int, t2: float) -> float | None:
    """Growth exponent e of t ~ n^e between two sizes."""
    if not (t1 and t2 and t1 > 0 and t2 > 0) or n1 == n2:
        return None
    return round(math.log(t2 / t1) / math.log(n2 / n1), 3)


def exponents(sizes: dict[str, dict[str, dict[str, Any]]], steps: tuple[str, ...]) -> tuple[dict, dict]:
    """(between the two largest sizes each step ran at, per adjacent pair of sizes) for every step."""
    largest: dict[str, float | None] = {}
    adjacent: dict[str, dict[str, float | None]] = {}
    for step in steps:
        runs = sorted((int(n), s[step]["s"]) for n, s in sizes.items() if s.get(step, {}).get("ok"))
        if len(runs) >= 2:
            largest[step] = exponent(*runs[-2], *runs[-1])
        for (n1, t1), (n2, t2) in itertools.pairwise(runs):
            adjacent.setdefault(f"{n1}-{n2}", {})[step] = exponent(n1, t1, n2, t2)
    return largest, adjacent


@contextlib.contextmanager
def prefect_server(home: Path, logs: Path, timeout: float = 180.0) -> Iterator[str]:
    """A Prefect server (``prefect server start``, its database under ``home``) for the block's commands: yields
    its API URL once it answers, and stops it after."""
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_UI_ENABLED="false")
    logs.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{logs}.log", "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                                 "127.0.0.1", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        url, deadline = f"http://127.0.0.1:{port}/api", time.monotonic() + timeout
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the Prefect server did not start; see {logs}.log") from None
                    time.sleep(0.5)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
