"""What a person looks at after a scoring run: a histogram per score (PNG) and the top flagged records.

The report's markdown is published as a Prefect artifact, which lives in Prefect's database where no deletion
reaches, so it names the flagged records by id, source and score only. Their short redacted snippets
(``tasks.passed.snippet``) are written beside the plot in the store, keyed by ``record_id``, where a deletion's
purge removes them with the record (``reports/`` is a purged prefix).
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

FLAGGED_FILE = "top_flagged.parquet"
FLAGGED_SCHEMA = pa.schema([("record_id", pa.string()), ("source", pa.string()), ("score", pa.float64()),
                            ("snippet", pa.string())])
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

    Text comes through ``tasks.passed`` (the policy's redacted text, nothing deleted), cut by ``snippet``, so even
    the store's copy never shows what the policy redacts.
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


def write_flagged(store: Store, scorer: str, rid: str, flagged: list[dict[str, Any]]) -> str:
    """The flagged rows with their snippets, under ``reports/scoring/<run-id>/`` (purged with their records)."""
    column = FLAG[scorer][0]
    rows = [{"record_id": r["record_id"], "source": r["source"], "score": r[column], "snippet": r["text"]}
            for r in flagged]
    return store.write_parquet(layout.scoring_report(rid, FLAGGED_FILE), pa.Table.from_pylist(rows, FLAGGED_SCHEMA),
                               FLAGGED_SCHEMA)


def scoring_report(store: Store, scorer: str, rid: str) -> tuple[str, list[dict[str, Any]], str]:
    """Markdown without any text (histograms inline, flagged records by id), the top flagged rows with their
    snippets, and the PNG's key under reports/."""
    run = store.read_json(layout.attribute_run(scorer, rid))
    data = base.read_attribute(store, DUPS if scorer == EMBEDDINGS else scorer, rid)
    png = histograms_png(data, f"{scorer} ({rid})")
    key = store.write_bytes(layout.scoring_report(rid, "histograms.png"), png)
    flagged = top_flagged(store, scorer, data)
    lines = [f"# {scorer} — run `{rid}`", "", f"records: {data.num_rows}; model: {run['model']}", "",
             f"![histograms](data:image/png;base64,{base64.b64encode(png).decode()})", "", f"PNG: {key}", ""]
    if flagged:
        cols = [c for c in flagged[0] if c != "text"]
        snippets = write_flagged(store, scorer, rid, flagged)
        lines += ["## Top flagged records", "", f"Redacted snippets: {snippets} (in the store; a deletion purges "
                  "them).", "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
        lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in flagged]
    return "\n".join(lines), flagged, key
