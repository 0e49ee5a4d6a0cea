"""The gate's measured error rates, as ``bench/gate_calibration.py`` found them, for the certificate to quote.

The bench judges known candidates many times — the source itself (a no-op that must be rejected), an oracle
retrained with another seed (perfect forgetting that must be accepted), NegGrad+ and SCRUB — in two regimes, and
writes ``bench/results/gate_calibration.json``. The figures below are that file's, copied so an installed
package quotes them without the repository; ``tests/unlearning/test_evidence.py`` holds the two equal, so a
re-run bench that is not copied here fails the suite.
"""

from __future__ import annotations

from typing import Any

BENCH = "bench/results/gate_calibration.json"
# regime -> (trials, forget records a trial, no-op accept rate where the positive control fired, second-seed
# oracle reject rate where a decision was taken, positive control rate); rates as fractions
MEASURED: dict[str, dict[str, float]] = {}


def figures() -> dict[str, Any]:
    """The measured rates by regime, and one sentence for the certificate."""
    if not MEASURED:
        return {"bench": BENCH, "regimes": {}, "sentence": "not calibrated yet (run bench/gate_calibration.py)"}
    sentence = "; ".join(
        f"{name} ({r['trials']:.0f} trials of {r['n_forget']:.0f} records): a no-op accepted in "
        f"{r['noop_accept_rate']:.0%} of trials whose positive control fired, a second-seed oracle rejected in "
        f"{r['seed_oracle_reject_rate']:.0%} of decided trials, positive control fired in "
        f"{r['positive_control_rate']:.0%}" for name, r in MEASURED.items())
    return {"bench": BENCH, "regimes": MEASURED, "sentence": f"{sentence} ({BENCH})"}
