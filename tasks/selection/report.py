"""How a selected dataset compares with its pool: label balance, source mix and score distributions."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout
from tasks.plots import figure_png
from tasks.selection.pool import attribute_column, load_pool, split_mask
from tasks.storage import Store


def _shares(column: pa.ChunkedArray) -> dict[str, float]:
    """Each value's share of a column (Arrow counts: a pool has millions of rows)."""
    counts = pc.value_counts(column)
    values, numbers = counts.field("values").to_pylist(), counts.field("counts").to_pylist()
    total = max(1, sum(numbers))
    return {k: round(v / total, 4) for k, v in sorted(zip(map(str, values), numbers, strict=True))}


def comparison(store: Store, manifest: pa.Table, summary: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Markdown with an inline PNG, and a table of label/source shares, selected train vs. train pool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = summary["config"]
    scored = store.exists(layout.latest_attribute_run("quality"))
    pool = load_pool(store, tuple(cfg["sources"]) if cfg["sources"] else None,
                     tuple(cfg["labels"]) if cfg["labels"] else None, tuple(cfg["fractions"]), cfg["shards"],
                     tuple(cfg["owners"]) if cfg.get("owners") else None,
                     scores=[("quality", "model_score")] if scored else ())
    pool_train = pool.filter(pa.array(split_mask(pool, "train")))
    del pool
    chosen = manifest.filter(pa.array(split_mask(manifest, "train")  # canaries: not data
                                      & ~np.array(manifest.column("canary").to_pylist(), dtype=bool)))
    rows = []
    for column in ("label", "source"):
        p, c = _shares(pool_train.column(column)), _shares(chosen.column(column))
        rows += [{"what": f"{column}={k}", "pool": p.get(k, 0.0), "selected": c.get(k, 0.0)}
                 for k in sorted(set(p) | set(c))]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    labels = [r["what"] for r in rows]
    pos = np.arange(len(rows))
    axes[0].barh(pos - 0.2, [r["pool"] for r in rows], height=0.4, label="pool")
    axes[0].barh(pos + 0.2, [r["selected"] for r in rows], height=0.4, label="selected")
    axes[0].set_yticks(pos, labels, fontsize=8)
    axes[0].legend()
    axes[0].set_title("shares (train split)")
    try:
        scores, _ = attribute_column(store, pool_train, "quality", "model_score")
        mask = pc.is_in(pool_train.column("record_id"), value_set=chosen.column("record_id").combine_chunks())
        mask = mask.to_numpy(zero_copy_only=False)
        axes[1].hist(scores[~np.isnan(scores)], bins=30, alpha=0.6, density=True, label="pool")
        axes[1].hist(scores[mask & ~np.isnan(scores)], bins=30, alpha=0.6, density=True, label="selected")
        axes[1].set_title("quality model_score")
        axes[1].legend()
    except Exception:  # no quality run yet: the share plot still tells the story
        axes[1].axis("off")
    fig.suptitle(f"{summary['ref']} ({summary['strategy']})")
    png = figure_png(fig)
    key = store.write_bytes(layout.selection_report(summary["name"], summary["version"], "comparison.png"), png)
    md = [f"# Dataset {summary['ref']}", "", f"strategy **{summary['strategy']}**, budget {cfg['budget']}, seed "
          f"{cfg['seed']}; counts {summary['counts']} (+ {summary.get('canaries', 0)} audit canaries); excluded "
          f"{summary['excluded']} of {summary['pool_records']}",
          "", f"![comparison](data:image/png;base64,{base64.b64encode(png).decode()})", "",
          f"PNG: {key}", "", "| what | pool | selected |", "|---|---|---|"]
    md += [f"| {r['what']} | {r['pool']} | {r['selected']} |" for r in rows]
    return "\n".join(md), rows
