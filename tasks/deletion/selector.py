"""What a deletion request deletes by, and the event that announces it.

A request names its records in exactly one way: an owner, record ids, a source, or texts. Texts are turned into
content hashes here, before the request is written, so the ledger never holds the text it is asked to forget.
The event (``custody.deletion.requested``) is what the unlearning deployment in ``prefect.yaml`` is triggered by;
its resource id and payload are built here so the trigger and the sender agree on one shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.deletion.requests import SelectorKind, text_hashes
from tasks.errors import Fatal

DELETION_EVENT = "custody.deletion.requested"
EVENT_RESOURCE_PREFIX = "custody.deletion."  # prefect.yaml's trigger matches "custody.deletion.*"


class SelectorError(Fatal):
    """Not exactly one way of naming the records to delete was given."""


@dataclass(frozen=True)
class Selector:
    """``kind`` and the values a request selects by (content hashes for ``text``)."""

    kind: SelectorKind
    values: list[str]


def build_selector(owner: str | None = None, record_ids: list[str] | None = None, source: str | None = None,
                   texts: list[str] | None = None) -> Selector:
    """The one selector among the given ways; blank ones (no value, no non-empty text) count as not given.

    Raises:
        SelectorError: none or more than one was given.
    """
    given: list[tuple[SelectorKind, list[str]]] = [
        ("owner", [owner] if owner else []), ("record_id", list(record_ids or [])),
        ("source", [source] if source else []), ("text", text_hashes(texts) if texts else [])]
    chosen = [(kind, values) for kind, values in given if values]
    if len(chosen) != 1:
        raise SelectorError("give exactly one of --owner, --record-id, --source, --text-file")
    return Selector(*chosen[0])


def deletion_event(request_id: str, kind: SelectorKind) -> dict[str, Any]:
    """Keyword arguments for Prefect's ``emit_event``: the event name, the request as resource, the payload."""
    return {"event": DELETION_EVENT,
            "resource": {"prefect.resource.id": f"{EVENT_RESOURCE_PREFIX}{request_id}",
                         "prefect.resource.name": request_id},
            "payload": {"request_id": request_id, "selector": kind}}
