"""Shared flow helpers: a rich progress bar over Prefect futures, the retry rule for transient faults, and the
guard that keeps record text out of what Prefect stores about a failed task."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.futures import as_completed
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tasks.errors import CustodyError, Retryable, text_free

F = TypeVar("F", bound=Callable[..., Any])


class WithheldError(RuntimeError):
    """A third-party error inside a task, named by type and place only: its message may quote record text."""


def text_safe(fn: F) -> F:
    """``fn`` for ``prefect.task``: an exception that leaves it carries no record text.

    Prefect stores ``str(exception)`` as the failed state's message, logs the traceback to its API and the log
    file, and pickles a failed flow's exception into result storage; no deletion reaches any of them. Custody's own
    errors and ``OSError``s pass unchanged (``Retryable`` still retries); any other exception becomes a
    ``WithheldError`` saying only what ``text_free`` says. It is raised outside the handler, so the original is not
    even its ``__context__``: a logged traceback prints the context, and Prefect pickles exceptions with tblib,
    which keeps it.
    """

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (CustodyError, OSError):
            raise
        except Exception as exc:
            withheld = WithheldError(text_free(exc))
        raise withheld

    return guarded  # type: ignore[return-value]


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
