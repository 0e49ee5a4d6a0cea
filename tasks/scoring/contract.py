"""The scorer contract: what a scorer declares, and the one driver that runs any of them.

A scorer declares its name, its config class, the record columns it reads (``inputs``), the scorers whose
latest runs it reads (``needs``), and whether it works partition by partition or on the whole store
(``scope``). It supplies only its own work:

* ``scope="partition"``: ``partition_core(run)`` returns a function from one partition's records to its
  attribute table (fitting whatever it shares across partitions first, as the quality scorer's fluency model);
* ``scope="store"``: ``store_step(run)`` computes whole-store tables (``Scored``); a per-partition scorer may
  have one too, run after every partition succeeded (the embeddings' semantic near-duplicates).

``Scorer.run`` does the rest once for all: model identity and run id, the cached-run check, reading records
through ``tasks.passed``, skip-if-done per partition with failures collected, writing attribute tables and
done markers, then ``run.json`` and ``latest.json`` (or ``failures.json``). ``dependency_order`` turns the
declarations into the order a flow runs them in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from tasks import layout, passed
from tasks.errors import Fatal
from tasks.scoring import base
from tasks.storage import Store

Core = Callable[[pa.Table], pa.Table]  # one partition's records -> its attribute table


@dataclass(frozen=True)
class ScorerRun:
    """One run in progress: what a scorer's own work gets from the driver."""

    store: Store
    cfg: Any
    run_id: str
    inputs: tuple[str, ...]
    sources: list[str] | None = None

    def records(self, part: layout.Partition) -> pa.Table:
        """The declared input columns of a partition's usable records (all live ones before any validation)."""
        return passed.read_partition(self.store, part, list(self.inputs), allow_unvalidated=True)


@dataclass(frozen=True)
class Whole:
    """A whole-store attribute table: ``attributes/<scorer>/<run-id>/[source=<s>/]all.parquet``."""

    table: pa.Table
    source: str | None = None
    scorer: str | None = None  # another attribute folder under the same run id (embeddings' semantic_dups)


@dataclass(frozen=True)
class Scored:
    """What a whole-store step produced: the tables to write and the numbers for the run's summary."""

    summary: dict[str, Any]
    tables: tuple[Whole, ...] = ()


@dataclass(frozen=True)
class Scorer:
    """A scorer's declaration; ``run`` is the shared driver."""

    name: str
    config: type
    inputs: tuple[str, ...]  # record columns it reads (record_id always comes along)
    identity: Callable[[Store, Any], str]  # the model it scores with, part of the run id
    scope: Literal["partition", "store"]
    needs: tuple[str, ...] = ()  # scorers whose latest run it reads: they run first
    device: bool = False  # torch work: one at a time, on the GPU when there is one
    partition_core: Callable[[ScorerRun], Core] | None = None
    store_step: Callable[[ScorerRun], Scored] | None = None

    def __post_init__(self) -> None:
        if (self.scope == "partition") != (self.partition_core is not None):
            raise ValueError(f"scorer {self.name}: partition_core is required for, and only for, scope='partition'")
        if self.scope == "store" and self.store_step is None:
            raise ValueError(f"scorer {self.name}: scope='store' needs a store_step")

    def run(self, store: Store, cfg: Any, sources: list[str] | None = None) -> dict[str, Any]:
        """Score (skipping a run already done); ``sources`` limits a per-partition scorer to those sources.

        Returns:
            The run's summary: ``scorer``, ``run_id``, the scorer's numbers, and ``skipped`` or ``failed``.
        """
        identity = self.identity(store, cfg)
        rid = base.run_id(self.name, cfg, identity, store)
        if (done := base.cached_run(store, self.name, rid)) is not None:
            return done
        run = ScorerRun(store, cfg, rid, self.inputs, sources)
        summary, failures = self._partitions(run) if self.scope == "partition" else ({}, [])
        if self.store_step is not None and not failures:
            scored = self.store_step(run)
            for whole in scored.tables:
                base.write_whole(store, whole.scorer or self.name, rid, whole.table, whole.source)
            summary.update(scored.summary)
        return base.finish(store, self.name, rid, cfg, identity, summary, failures)

    def _partitions(self, run: ScorerRun) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Every partition not done yet through the scorer's core; the records scored by this call."""
        core = self.partition_core(run)  # type: ignore[misc]  # present: checked in __post_init__
        parts = passed.partitions(run.store, run.sources)

        def one(part: layout.Partition) -> int:
            if base.is_done(run.store, self.name, run.run_id, part):
                return 0
            table = core(run.records(part))
            stats = {"partition": layout.partition_key(part), "records": table.num_rows}
            base.write_attribute(run.store, self.name, run.run_id, part, table, stats)
            return table.num_rows

        counts, failures = base.each_partition(parts, one, self.name)
        return {"partitions": len(parts), "records": sum(counts)}, failures


def dependency_order(scorers: Iterable[Scorer]) -> list[Scorer]:
    """The scorers with every one after those it needs, otherwise in the order given.

    Raises:
        Fatal: a scorer needs one that is not declared, or the needs go round in a circle.
    """
    pending = {s.name: s for s in scorers}
    for s in pending.values():
        if missing := set(s.needs) - set(pending):
            raise Fatal(f"scorer {s.name} needs undeclared scorer(s) {sorted(missing)}")
    ordered: list[Scorer] = []
    while pending:
        ready = [s for s in pending.values() if not set(s.needs) & set(pending)]
        if not ready:
            raise Fatal(f"scorers need each other in a circle: {sorted(pending)}")
        ordered.append(ready[0])
        del pending[ready[0].name]
    return ordered
