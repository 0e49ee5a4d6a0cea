"""Scorers: each writes ``attributes/<scorer>/<run-id>/`` keyed by record_id, never touching records.

``SCORERS`` maps a name to ``(config class, run function)``; ``custody score --scorer NAME`` runs one.
Order matters for the ones that build on others: embeddings → dynamics → influence; poisoning and
mislabel need embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tasks.errors import unknown_name
from tasks.scoring import dynamics, embeddings, influence, mislabel, poisoning, quality

SCORERS: dict[str, tuple[type, Callable[..., dict[str, Any]]]] = {
    embeddings.NAME: (embeddings.EmbeddingConfig, embeddings.run),
    quality.NAME: (quality.QualityConfig, quality.run),
    dynamics.NAME: (dynamics.DynamicsConfig, dynamics.run),
    influence.NAME: (influence.InfluenceConfig, influence.run),
    poisoning.NAME: (poisoning.PoisoningConfig, poisoning.run),
    mislabel.NAME: (mislabel.CrossFitConfig, mislabel.run),
}
DEVICE_SCORERS = (embeddings.NAME,)  # torch work: run one at a time, on the GPU when there is one


def get_scorer(name: str) -> tuple[type, Callable[..., dict[str, Any]]]:
    if name not in SCORERS:
        raise unknown_name("scorer", name, tuple(SCORERS))
    return SCORERS[name]
