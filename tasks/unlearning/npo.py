"""NPO (Zhang et al., 2024, "Negative Preference Optimization"): forget by preferring the forget set *less* than the
model did before, bounded where gradient ascent is not.

The loss on a forget example is −(2/β)·log σ(−β·log(π_θ(x)/π_ref(x))), with π_ref the source model frozen: it pushes
the example's log-probability below the reference's, but its gradient fades as it gets there, so unlike gradient
ascent (NegGrad+/GradDiff) it does not collapse the model. As in the paper's NPO+RT a retain-set NLL term, weighted
``1 − alpha``, keeps utility. ``log π`` is a text's summed token log-probability for a language model and the label's
log-probability for a classifier (``steps.Loop.logprob``), so NPO serves both. The shared loop stops it when the
forget loss reaches the target; the gate judges the result against the oracle.
"""

from __future__ import annotations

import copy
from typing import Any

from tasks.training import Split, TrainConfig
from tasks.unlearning.base import UnlearnConfig
from tasks.unlearning.steps import Approximate, ascend, open_loop


class Npo(Approximate):
    name = "npo"

    def unlearn(self, model: Any, tokenizer: Any, forget: Split, retain: Split, cfg: TrainConfig,
                ucfg: UnlearnConfig, target: float, device: str) -> tuple[Any, int]:
        import torch
        import torch.nn.functional as F

        reference = copy.deepcopy(model).eval()  # the source as it was: π_ref
        loop = open_loop(model, tokenizer, cfg, ucfg, device)

        def max_step(f_batch: Any, f_y: Any) -> int:
            with torch.no_grad():
                before = loop.logprob(reference, f_batch, f_y)
            ratio = loop.logprob(loop.student, f_batch, f_y) - before
            npo = -(2 / ucfg.beta) * F.logsigmoid(-ucfg.beta * ratio).mean()
            r_batch, r_y = loop.batch(retain)
            loop.step(ucfg.alpha * npo + (1 - ucfg.alpha) * loop.loss(loop.student, r_batch, r_y))
            return 2 * len(f_batch["input_ids"]) + len(r_batch["input_ids"])

        _, seen = ascend(loop, tokenizer, forget, cfg, ucfg.max_steps, target, device, max_step, self.name)
        return loop.student, seen
