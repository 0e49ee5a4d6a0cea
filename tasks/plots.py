"""Figures as PNG bytes, for reports in the store, MLflow artifacts and Prefect markdown (headless: Agg)."""

from __future__ import annotations

import io
from typing import Any


def figure_png(fig: Any) -> bytes:
    """Lay out, render at the reports' resolution, and close ``fig`` (pyplot keeps open figures alive)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
