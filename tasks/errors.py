"""Error classes shared by every stage.

``Fatal`` aborts a run, ``ShardError`` fails one shard (file, partition) while the batch continues, and
``Retryable`` marks transient faults (network, object-store throttling) that flows retry.
"""

from __future__ import annotations

import traceback
from pathlib import Path


class CustodyError(Exception):
    """Base class of every error Custody raises on purpose."""


class Fatal(CustodyError):
    """Configuration or environment is wrong: stop the run and tell the user what to fix."""


class ShardError(CustodyError):
    """One shard cannot be processed; the rest of the batch goes on."""


class Retryable(CustodyError):
    """A transient fault; the orchestrator may retry the task."""


class DatasheetError(ShardError):
    """A source datasheet is missing or invalid; that source is skipped, others continue."""


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> Fatal:
    """Build the error for an unknown registry name, listing the valid options."""
    return Fatal(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")


def text_free(exc: BaseException) -> str:
    """What may be said of ``exc`` where no deletion reaches (logs, Prefect, MLflow, artifacts).

    Custody's own errors name ids, keys and reasons, and an ``OSError`` a path and an errno: they are said in
    full. Any other exception may quote a value it choked on (a ``KeyError`` of a text, pyarrow's "could not
    convert '...'"), so it is named by type and innermost place only.
    """
    if isinstance(exc, CustodyError | OSError):
        return f"{type(exc).__name__}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return f"{type(exc).__name__} (message withheld)"
    last = frames[-1]
    return (f"{type(exc).__name__} at {'/'.join(Path(last.filename).parts[-2:])}:{last.lineno} in {last.name} "
            "(message withheld)")
