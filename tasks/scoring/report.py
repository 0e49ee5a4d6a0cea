"""What a person looks at after a scoring run: a histogram per score (PNG) and the top flagged records.

The flagged records are shown by id with a short redacted snippet of their text (``tasks.passed.snippet``).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks import layout, passed
from tasks.plots import figure_png
from tasks.scoring import base
from tasks.scoring.embeddings import DUPS
from tasks.scoring.embeddings import NAME as EMBEDDINGS
from tasks.storage import Store
from tasks.tables import join_on_id

# per scorer: the column that flags a record, and whether high values are the suspicious ones
FLAG = {"quality": ("model_score", False), "dynamics": ("aum", False), "influence": ("self_influence", True),
        "poisoning": ("knn_disagreement", True), EMBEDDINGS: ("cosine", True),  # the cosine of its semantic_dups
        "mislabel": ("label_suspicion", True)}


def numeric_columns(table: pa.Table) -> list[str]:
    return [f.name for f in table.schema if pa.types.is_floating(f.type) or pa.types.is_integer(f.type)]


def histograms_png(table: pa.Table, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = numeric_columns(table)
    n = max(1, len(cols))
    fig, axes = plt.subplots((n + 2) // 3, min(3, n), figsize=(4 * min(3, n), 2.8 * ((n + 2) // 3)), squeeze=False)
    for ax, col in zip(axes.ravel(), cols, strict=False):
        values = table.column(col).to_numpy(zero_copy_only=False).astype(float)
        ax.hist(values[np.isfinite(values)], bins=40, color="#4c72b0")
        ax.set_title(col, fontsize=9)
    for ax in axes.ravel()[len(cols):]:
        ax.axis("off")
    fig.suptitle(title)
    return figure_png(fig)


def top_flagged(store: Store, scorer: str, table: pa.Table, k: int = 10) -> list[dict[str, Any]]:
    """The ``k`` most suspicious records by the scorer's flag column: id, source, score and a redacted snippet.

    Text comes through ``tasks.passed`` (the policy's redacted text, nothing deleted), cut by ``snippet``: a
    report is published as a Prefect artifact, so it must never show what the policy redacts.
    """
    column, high = FLAG.get(scorer, (None, True))
    if column is None or column not in table.column_names or table.num_rows == 0:
        return []
    order = pc.sort_indices(table, [(column, "descending" if high else "ascending")])
    top = table.take(order[:k]).select(["record_id", column])
    texts = passed.lookup(store, top.column("record_id").to_pylist(), ["text", "source"])
    rows = join_on_id(top, texts).to_pylist()
    return [{"record_id": r["record_id"], "source": r["source"], column: round(float(r[column]), 4),
             "text": passed.snippet(r["text"])} for r in rows]


def scoring_report(store: Store, scorer: str, rid: str) -> tuple[str, list[dict[str, Any]], str]:
    """Markdown (with the histogram inline), the top flagged rows, and the PNG's key under reports/."""
    run = store.read_json(layout.attribute_run(scorer, rid))
    data = base.read_attribute(store, DUPS if scorer == EMBEDDINGS else scorer, rid)
    png = histograms_png(data, f"{scorer} ({rid})")
    key = store.write_bytes(layout.scoring_report(rid, "histograms.png"), png)
    flagged = top_flagged(store, scorer, data)
    lines = [f"# {scorer} — run `{rid}`", "", f"records: {data.num_rows}; model: {run['model']}", "",
             f"![histograms](data:image/png;base64,{base64.b64encode(png).decode()})", "", f"PNG: {key}", ""]
    if flagged:
        cols = list(flagged[0])
        lines += ["## Top flagged records", "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
        lines += ["| " + " | ".join(str(r[c]).replace("|", "/").replace("\n", " ") for c in cols) + " |"
                  for r in flagged]
    return "\n".join(lines), flagged, key
