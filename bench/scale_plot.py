"""The figure of ``bench/scale.py``'s results, written beside its JSON (``scale.json`` -> ``scale.png``): per corpus,
seconds and peak RSS of every step against store size (log-log, each step's growth exponent in its label, the
4 GB target drawn), and at the largest size one record's deletion against 1,000 requests' with the 3x target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.plots import figure_png

DELETES = ("delete_one_record", "delete_1000_requests")


def _series(sizes: dict[str, dict[str, Any]], step: str, key: str) -> tuple[list[int], list[float]]:
    """The sizes at which ``step`` ran and recorded ``key``, with those values, smallest size first."""
    points = sorted((int(n), steps[step][key]) for n, steps in sizes.items()
                    if steps.get(step, {}).get("ok") and steps[step].get(key) is not None)
    return [n for n, _ in points], [v for _, v in points]


def _growth(ax: Any, result: dict[str, Any], key: str, ylabel: str) -> None:
    """One line a step: ``key`` against store size, labelled with the step's growth exponent (a step keeps its
    colour in every panel)."""
    import matplotlib

    exponents, colours = result.get("exponents", {}), matplotlib.colormaps["tab20"]
    for i, step in enumerate(sorted({s for steps in result["sizes"].values() for s in steps})):
        xs, ys = _series(result["sizes"], step, key)
        if len(xs) > 1:
            label = f"{step} ({exponents[step]:.2f})" if exponents.get(step) is not None else step
            ax.plot(xs, ys, marker="o", label=label, color=colours(i % 20))
    ax.set(xscale="log", yscale="log", xlabel="records in the store", ylabel=ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _deletes(ax: Any, result: dict[str, Any]) -> None:
    """At the largest size: one record's deletion, 1,000 requests' in one pass, and three times the first."""
    largest = max(result["sizes"], key=int)
    steps = result["sizes"][largest]
    seconds = [steps.get(s, {}).get("s") or 0.0 for s in DELETES]
    ax.bar(["one record", "1,000 requests"], seconds, color=["tab:blue", "tab:orange"])
    if seconds[0]:
        ax.axhline(3 * seconds[0], color="tab:red", linestyle="--", label="target: 3x one record")
        ax.legend(fontsize=7)
    ax.set(ylabel="seconds", title=f"deletions at {int(largest):,} records")


def plot(doc: dict[str, Any], png: Path) -> None:
    """Write the figure of every corpus with at least two sizes to ``png`` (nothing when there is none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = {name: result for name, result in doc["corpora"].items() if len(result.get("sizes", {})) > 1}
    if not corpora:
        return
    fig, axes = plt.subplots(len(corpora), 3, figsize=(17, 5.5 * len(corpora)), squeeze=False)
    for row, (name, result) in zip(axes, corpora.items(), strict=True):
        _growth(row[0], result, "s", f"{name}: seconds (growth exponent)")
        row[0].legend(fontsize=6)
        _growth(row[1], result, "peak_rss_mb", f"{name}: peak RSS, MB")
        row[1].axhline(4096, color="tab:red", linestyle="--", label="target: 4 GB")
        row[1].legend(fontsize=6)
        _deletes(row[2], result)
    png.write_bytes(figure_png(fig))
