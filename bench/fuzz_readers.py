"""A long fuzz run of the hostile-input properties: ``python bench/fuzz_readers.py [--minutes 10]``.

The suite (``tests/test_hostile_input.py``) runs each property over a few dozen generated files; this script runs
the same ones (``PROPERTIES``, imported, so the two cannot drift) round-robin, in batches of fresh random
examples, until the time is up: hostile JSONL through the reader and through ingestion into a throw-away store
(nothing written beside its root), CSV, Parquet with any text column, cut or padded gzip, and generated
datasheets. A failing batch is recorded (Hypothesis shrinks it to a minimal example first) and the run goes on.
Writes ``bench/results/fuzz_readers.json``: examples tried per property, failures found, minutes run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import hypothesis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ is not an installed package; the properties live there
from tests.test_hostile_input import PROPERTIES, property_test  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "fuzz_readers.json"
BATCH = {"jsonl_ingest": 25}  # examples per batch; ingestion writes a store per example, the rest: 200


def run(minutes: float) -> dict[str, Any]:
    """Batches of every property in turn until ``minutes`` have passed; examples and failures counted."""
    examples: Counter[str] = Counter()
    failures: list[dict[str, str]] = []
    start = time.monotonic()
    while time.monotonic() - start < minutes * 60:
        for name, (strategy, check) in PROPERTIES.items():
            def counted(case: Any, name: str = name, check: Any = check) -> None:
                examples[name] += 1
                check(case)

            try:
                property_test(strategy, counted, max_examples=BATCH.get(name, 200))()
            except Exception as exc:  # the property failed: keep its minimal example's error, fuzz on
                failures.append({"property": name, "error": f"{type(exc).__name__}: {exc}"[:2000]})
                print(f"FAILED {name}: {type(exc).__name__}", file=sys.stderr)
            if time.monotonic() - start >= minutes * 60:
                break
    return {"minutes_budget": minutes, "minutes_run": round((time.monotonic() - start) / 60, 2),
            "examples_tried": sum(examples.values()), "examples_by_property": dict(sorted(examples.items())),
            "failures_found": len(failures), "failures": failures,
            "hypothesis": hypothesis.__version__, "python": platform.python_version(),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to fuzz (default 10)")
    args = parser.parse_args()
    result = run(args.minutes)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "failures"}, indent=2))


if __name__ == "__main__":
    main()
