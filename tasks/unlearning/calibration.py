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
# regime -> trials, forget records a trial, the rate the positive control fired, the rate of inconclusive decisions,
# the no-op's acceptance rate among trials whose positive control fired, and the second-seed oracle's rejection rate
# among decided trials (None: no trial was decided); rates as fractions, at the default EvidenceConfig
MEASURED: dict[str, dict[str, float | None]] = {
    "memorisation": {"trials": 20, "n_forget": 30, "positive_control_rate": 0.7, "inconclusive_rate": 1.0,
                     "noop_accept_rate": 0.0, "seed_oracle_reject_rate": None},
    "memorisation_n70": {"trials": 20, "n_forget": 70, "positive_control_rate": 0.85, "inconclusive_rate": 0.15,
                         "noop_accept_rate": 0.0, "seed_oracle_reject_rate": 0.0},
    "demo": {"trials": 20, "n_forget": 30, "positive_control_rate": 0.25, "inconclusive_rate": 1.0,
             "noop_accept_rate": 0.0, "seed_oracle_reject_rate": None},
}


def _seed_oracle(value: float | None) -> str:
    return ("no trial was decided, so no second-seed oracle was judged" if value is None else
            f"a second-seed oracle rejected in {value:.0%} of decided trials")


def figures() -> dict[str, Any]:
    """The measured rates by regime, and one sentence for the certificate."""
    sentence = "; ".join(
        f"{name} ({r['trials']:.0f} trials of {r['n_forget']:.0f} records): a no-op accepted in "
        f"{r['noop_accept_rate']:.0%} of trials whose positive control fired, "
        f"{_seed_oracle(r['seed_oracle_reject_rate'])}, positive control fired in {r['positive_control_rate']:.0%}, "
        f"inconclusive in {r['inconclusive_rate']:.0%}"
        for name, r in MEASURED.items())
    return {"bench": BENCH, "regimes": MEASURED, "sentence": f"{sentence} ({BENCH})"}
