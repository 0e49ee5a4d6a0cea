"""What a registered version says about itself: the model card and the learning-curve plot.

The card is a public summary of the training content in the spirit of the EU AI Act's template: counts by source,
licence and consent, read through ``tasks.passed`` like everything else, and never a record's text. Audit canaries
(``tasks.canaries``: synthetic, platform-owned) are not training content: they are left out of every figure and
named on a line of their own.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa

from tasks import passed
from tasks.plots import figure_png
from tasks.selection import canary_ids
from tasks.storage import Store
from tasks.tables import join_on_id
from tasks.training.data import Split, TrainConfig

CARD_COLUMNS = ("source", "license", "consent", "consent_basis")


def model_card(store: Store, cfg: TrainConfig, selection: dict[str, Any], splits: dict[str, Split],
               result: dict[str, float]) -> str:
    """A public summary of the training content, in the spirit of the EU AI Act's template."""
    canaries = canary_ids(store, selection["ref"])
    ids = pa.table({"record_id": [r for s in splits.values() for r in s.ids if r not in canaries]})
    rows = join_on_id(ids, passed.read_all(store, ["record_id", *CARD_COLUMNS]))
    n = {name: sum(r not in canaries for r in split.ids) for name, split in splits.items()}
    in_train = len(splits["train"].ids) - n["train"]
    by = {c: Counter(rows.column(c).to_pylist()) for c in CARD_COLUMNS}
    task = "causal language modelling" if cfg.is_lm else "sequence classification"
    lines = [f"# Model card: {cfg.default_name(selection['name'])}", "",
             f"Trained on dataset **{selection['ref']}** (strategy {selection['strategy']}, policy "
             f"`{selection['policy_hash']}`) for {task}, model `{cfg.model}`, LoRA rank "
             f"{cfg.lora_rank or 'none (full)'}, "
             f"{cfg.shards} shard(s), {cfg.epochs} epochs, seed {cfg.seed}.", "",
             "## Training content", "",
             f"Records: train {n['train']}, validation {n['validation']}, test {n['test']}.", ""]
    if in_train:
        lines += [f"Also trained on {in_train} audit canaries: synthetic records of random pseudo-words that the "
                  "platform plants as a memorisation control (`custody drill` deletes them to test unlearning); "
                  "they are no one's data and are left out of every figure here.", ""]
    for column, counts in by.items():
        lines += [f"**By {column.replace('_', ' ')}:** " + ", ".join(f"{k}: {v}" for k, v in counts.most_common()), ""]
    lines += ["## Excluded records", "",
              f"{selection['excluded']} of {selection['pool_records']} pool records were excluded by scorer flags: "
              + (", ".join(f"{e['scorer']}.{e['column']} {e['direction']} {e['threshold']} ({e['excluded']})"
                           for e in selection["exclusions"]) or "none") + ".",
              "Records rejected by the provenance policy, tombstoned by deletion requests, or non-representative "
              "members of near-duplicate clusters never enter a dataset.", "",
              "## Results", "", *(f"- {k}: {v:.4f}" for k, v in sorted(result.items()))]
    return "\n".join(lines)


def learning_curves_png(history: dict[str, list[float]]) -> bytes:
    """Per-epoch losses (left) and validation accuracy / F1 or perplexity (right), one line per series (and shard)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for key, values in sorted(history.items()):
        ax = axes[0] if key.endswith("loss") else axes[1]  # losses left; accuracy and F1 right
        ax.plot(range(1, len(values) + 1), values, marker="o", label=key)
    for ax, title in zip(axes, ("loss", "validation metrics (accuracy, F1 or perplexity)"), strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=7)
    return figure_png(fig)
