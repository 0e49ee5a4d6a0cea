"""Shared flow helpers: a rich progress bar over Prefect futures, and the retry rule for transient faults."""

from __future__ import annotations

import sys
from typing import Any

from prefect.futures import as_completed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tasks.errors import Retryable


def track_futures(futures: list[Any], label: str) -> list[Any]:
    """Wait for ``futures`` showing a progress bar on stderr; results come back in submission order."""
    results: dict[int, Any] = {}
    index = {id(f): i for i, f in enumerate(futures)}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    console = Console(stderr=True)  # stdout stays clean for --json
    with Progress(*columns, console=console, transient=not sys.stderr.isatty(), disable=not futures) as bar:
        job = bar.add_task(label, total=len(futures))
        for fut in as_completed(futures):
            results[index[id(fut)]] = fut.result()
            bar.advance(job)
    return [results[i] for i in range(len(futures))]


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only faults the task marked as ``Retryable``."""
    try:
        state.result()
    except Retryable:
        return True
    except Exception:
        return False
    return False
