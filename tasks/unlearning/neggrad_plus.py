"""NegGrad+ (Kurmanji et al., 2023): gradient ascent on the forget set combined with descent on the retain set.

Each step descends on a retain batch and ascends on a forget batch in one combined loss, weighted by ``alpha``;
the shared loop (``steps.ascend``) stops it when the forget loss reaches the target. Gated against the oracle.
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
        import torch.nn.functional as F

        loop = open_loop(model, tokenizer, cfg, ucfg, device)

        def max_step(f_batch: Any, f_y: Any) -> int:
            r_batch, r_y = loop.batch(retain)
            loop.step((1 - ucfg.alpha) * F.cross_entropy(loop.student(**r_batch).logits, r_y)
                      - ucfg.alpha * F.cross_entropy(loop.student(**f_batch).logits, f_y))
            return len(f_y) + len(r_y)

        _, seen = ascend(loop, tokenizer, forget, cfg, ucfg.max_steps, target, device, max_step, self.name)
        return loop.student, seen
