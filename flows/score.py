"""Scoring flow: several scorers over the validated records, writing attributes beside them.

Torch work (embeddings) runs one scorer at a time — on the GPU when there is one — while CPU scorers
(quality heuristics) run alongside on Dask; scorers that build on embeddings wait for them. Each run
publishes a markdown artifact with histograms and the top flagged records (by id; their snippets stay in the
store). ``custody score --scorer NAME``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from flows.progress import text_safe
from tasks.scoring import DEVICE_SCORERS, NEEDS, ORDER, get_scorer
from tasks.scoring.report import scoring_report
from tasks.storage import Store

report_task = task(text_safe(scoring_report), name="scoring-report", cache_policy=NONE)  # it reads record text


@task(name="score", cache_policy=NONE, tags=["custody-score"])
@text_safe
def run_scorer(store: Store, name: str, options: dict[str, Any], sources: list[str] | None) -> dict[str, Any]:
    scorer = get_scorer(name)
    return scorer.run(store, scorer.config(**options), sources)  # a whole-store scorer ignores ``sources``


@flow(name="score")
def score_flow(scorers: list[str], sources: list[str] | None = None,
               options: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run ``scorers`` (dependencies first) and publish one report artifact per run."""
    store = Store.from_settings()
    options = options or {}
    futures: dict[str, Any] = {}
    for name in sorted(scorers, key=ORDER.index):
        waits = [futures[d] for d in NEEDS.get(name, []) if d in futures]  # scorers that build on others wait
        waits += [futures[d] for d in DEVICE_SCORERS if d in futures and name in DEVICE_SCORERS]
        futures[name] = run_scorer.submit(store, name, options.get(name, {}), sources, wait_for=waits)
    results = [futures[name].result() for name in futures]
    for result in results:
        if result.get("failed"):  # partial run: say which partitions failed; the rest is kept for the retry
            create_table_artifact(key=f"score-{result['scorer']}-failures", table=result["failed"],
                                  description=f"{result['scorer']}: partitions that failed (re-run retries them)")
            continue
        markdown, _, _ = report_task(store, result["scorer"], result["run_id"])
        create_markdown_artifact(key=f"score-{result['scorer']}", markdown=markdown,
                                 description=f"{result['scorer']} run {result['run_id']}")
    return results
