"""NegGrad+ (Kurmanji et al., 2023): gradient ascent on the forget set combined with descent on the retain set.

Each step descends on a retain batch and ascends on a forget batch in one combined loss, weighted by ``alpha``;
the shared loop (``steps.ascend``) stops it when the forget loss reaches the target. Gated against the oracle. On a
causal language model this is what the LLM-unlearning literature (TOFU, MUSE) calls GradDiff: the same combined
loss over token NLL.
"""

from __future__ import annotations

from typing import Any

from tasks.training import Split, TrainConfig
from tasks.unlearning.base import UnlearnConfig
from tasks.unlearning.steps import Approximate, ascend, open_loop


class NegGradPlus(Approximate):
    name = "neggrad-plus"

    def unlearn(self, model: Any, tokenizer: Any, forget: Split, retain: Split, cfg: TrainConfig,
                ucfg: UnlearnConfig, target: float, device: str) -> tuple[Any, int]:
        loop = open_loop(model, tokenizer, cfg, ucfg, device)

        def max_step(f_batch: Any, f_y: Any) -> int:
            r_batch, r_y = loop.batch(retain)
            loop.step((1 - ucfg.alpha) * loop.loss(loop.student, r_batch, r_y)
                      - ucfg.alpha * loop.loss(loop.student, f_batch, f_y))
            return len(f_batch["input_ids"]) + len(r_batch["input_ids"])

        _, seen = ascend(loop, tokenizer, forget, cfg, ucfg.max_steps, target, device, max_step, self.name)
        return loop.student, seen
