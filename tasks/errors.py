"""Error classes shared by every stage.

``Fatal`` aborts a run, ``ShardError`` fails one shard (file, partition) while the batch continues, and
``Retryable`` marks transient faults (network, object-store throttling) that flows retry.
"""

from __future__ import annotations

import traceback
from pathlib import Path


class CustodyError(Exception):
    """Base class of every error Custody raises on purpose. ``code`` is its machine-readable kind, which the CLI
    reports beside the message (README, "Exit codes and error codes")."""

    code = "failed"


class Fatal(CustodyError):
    """Configuration or environment is wrong: stop the run and tell the user what to fix."""

    code = "invalid_input"


class NotFound(Fatal):
    """A named thing (deletion request, dataset version, model) does not exist."""

    code = "not_found"


class NotValidated(Fatal):
    """A step reads validated records and there are none yet: run ``custody validate`` first."""

    code = "not_validated"


class Locked(CustodyError):
    """Another process holds a lock of the store (applying or unlearning a deletion)."""

    code = "locked"


class ShardError(CustodyError):
    """One shard cannot be processed; the rest of the batch goes on."""

    code = "shard_failed"


class Retryable(CustodyError):
    """A transient fault; the orchestrator may retry the task."""

    code = "unavailable"


class DatasheetError(ShardError):
    """A source datasheet is missing or invalid; that source is skipped, others continue."""

    code = "invalid_input"


def error_code(exc: BaseException) -> str:
    """The code the CLI reports for ``exc``: a ``CustodyError``'s own; ``io_error`` for a file or store that could
    not be read or written; ``unavailable`` for a service that did not answer; ``internal`` for anything else,
    which is a bug."""
    if isinstance(exc, CustodyError):
        return exc.code
    if isinstance(exc, TimeoutError | ConnectionError):
        return "unavailable"
    if isinstance(exc, OSError):
        return "io_error"
    return "internal"


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
