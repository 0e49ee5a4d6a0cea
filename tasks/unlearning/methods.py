"""The unlearning methods by name, and the order in which they are tried for a request."""

from __future__ import annotations

from tasks.errors import Fatal
from tasks.unlearning.base import AUTO, Method
from tasks.unlearning.neggrad_plus import NegGradPlus
from tasks.unlearning.npo import Npo
from tasks.unlearning.retrain import Retrain, SeedOracle
from tasks.unlearning.scrub import Scrub
from tasks.unlearning.sisa import Sisa

BY_NAME: dict[str, Method] = {m.name: m for m in (Sisa(), Retrain(), NegGradPlus(), Npo(), Scrub())}
CLASSIFIER_ONLY = (Scrub.name,)  # SCRUB's teacher-student KL is over class distributions
ORACLE = Retrain.name  # the exact method every candidate is judged against
SECOND_ORACLE = SeedOracle()  # the oracle's next seed: the measured noise floor (never a candidate)


def resolve_method(method: str, sharded: bool, lm: bool = False) -> str:
    """The method ``auto`` stands for (SISA for sharded models, else NegGrad+ for a classifier and NPO for a
    language model), or ``method`` if it applies.

    Raises:
        Fatal: a sharded-only method (SISA) for an unsharded model, or a classifier-only one for a language model.
    """
    if method == AUTO:
        return Sisa.name if sharded else (Npo.name if lm else NegGradPlus.name)
    if BY_NAME[method].sharded_only and not sharded:
        raise Fatal("sisa needs a sharded model (train with --shards S); use retrain, neggrad-plus, npo or scrub")
    if lm and method in CLASSIFIER_ONLY:
        raise Fatal(f"{method} unlearns classifiers; for a language model use npo, neggrad-plus, sisa or retrain")
    return method


def attempts(method: str, sharded: bool) -> list[str]:
    """The requested method, then the exact fallbacks in order of cost (SISA only for sharded models), up to the
    retrain, which always passes."""
    fallbacks = (Sisa.name, ORACLE) if sharded else (ORACLE,)
    order = [method] + [m for m in fallbacks if m != method]
    return order[: order.index(ORACLE) + 1]
