"""Scorers: each writes ``attributes/<scorer>/<run-id>/`` keyed by record_id, never touching records.

Every scorer module declares one ``SCORER`` (``tasks.scoring.contract.Scorer``: its config class, the record
columns it reads, the scorers it builds on, per partition or whole store); ``SCORERS`` maps names to them in
dependency order (embeddings before dynamics before influence; poisoning and mislabel after embeddings).
``custody score --scorer NAME`` runs one: ``get_scorer(NAME).run(store, cfg)``.
"""

from __future__ import annotations

from tasks.errors import unknown_name
from tasks.scoring import dynamics, embeddings, influence, mislabel, poisoning, quality
from tasks.scoring.contract import Scorer, dependency_order

SCORERS: dict[str, Scorer] = {s.name: s for s in dependency_order(
    m.SCORER for m in (embeddings, quality, dynamics, influence, poisoning, mislabel))}
ORDER = tuple(SCORERS)  # the order a flow runs them in
NEEDS = {name: s.needs for name, s in SCORERS.items() if s.needs}
DEVICE_SCORERS = tuple(name for name, s in SCORERS.items() if s.device)


def get_scorer(name: str) -> Scorer:
    """The declared scorer called ``name``.

    Raises:
        Fatal: no such scorer (the message lists the valid ones).
    """
    if name not in SCORERS:
        raise unknown_name("scorer", name, tuple(SCORERS))
    return SCORERS[name]
