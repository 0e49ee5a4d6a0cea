"""SCRUB (Kurmanji et al., 2023): a teacher–student method. The student starts as the source model (the teacher).

Max-steps move the student away from the teacher on the forget set until the forget loss reaches the target;
then as many min-steps keep it with the teacher (and the labels) on the retain set. As in the paper the max-steps
come first and the min-steps repair utility; the gate then judges the result.
"""

from __future__ import annotations

import copy
from typing import Any

from tasks.training import Split, TrainConfig
from tasks.unlearning.base import UnlearnConfig
from tasks.unlearning.steps import Approximate, ascend, kl, open_loop


class Scrub(Approximate):
    name = "scrub"

    def unlearn(self, model: Any, tokenizer: Any, forget: Split, retain: Split, cfg: TrainConfig,
                ucfg: UnlearnConfig, target: float, device: str) -> tuple[Any, int]:
        import torch
        import torch.nn.functional as F

        teacher = copy.deepcopy(model).eval()  # before the student's adapters are attached to the same modules
        loop = open_loop(model, tokenizer, cfg, ucfg, device)

        def max_step(f_batch: Any, f_y: Any) -> int:  # away from the teacher on the forget set
            with torch.no_grad():
                t_f = teacher(**f_batch).logits
            loop.step(-kl(loop.student(**f_batch).logits, t_f))
            return 2 * len(f_y)

        steps, seen = ascend(loop, tokenizer, forget, cfg, ucfg.max_steps, target, device, max_step, self.name)
        for _ in range(steps):  # min-steps: with the teacher and the labels on the retain set
            r_batch, r_y = loop.batch(retain)
            with torch.no_grad():
                t_r = teacher(**r_batch).logits
            s_r = loop.student(**r_batch).logits
            loop.step(kl(s_r, t_r) + F.cross_entropy(s_r, r_y))
            seen += 2 * len(r_y)
        return loop.student, seen
