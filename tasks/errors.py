"""Error classes shared by every stage.

``Fatal`` aborts a run, ``ShardError`` fails one shard (file, partition) while the batch continues, and
``Retryable`` marks transient faults (network, object-store throttling) that flows retry.
"""

from __future__ import annotations


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
