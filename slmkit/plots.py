"""Matplotlib, headless, in one place: figures for `slm zoo trends` and `slm report` as PNG bytes."""

from __future__ import annotations

import io
from typing import Sequence

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf"]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    return plt


def figure(width: float = 6.4, height: float = 4.0):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.grid(True, alpha=0.3)
    return fig, ax


def png(fig) -> bytes:
    """The figure as PNG bytes (and closed)."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    pyplot().close(fig)
    return buf.getvalue()


def stacked_shares(title: str, years: Sequence[int], shares: dict[str, Sequence[float]], ylabel: str = "share of models"):
    """A stacked bar per year; shares maps category -> one fraction per year."""
    fig, ax = figure()
    bottom = [0.0] * len(years)
    for i, (name, values) in enumerate(shares.items()):
        ax.bar([str(y) for y in years], values, bottom=bottom, label=name, color=COLORS[i % len(COLORS)])
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylim(0, 1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    return png(fig)


def pareto(points: Sequence[tuple[float, float]], lower_x_better: bool = True) -> list[int]:
    """Indices of the Pareto-optimal points (x, y): no other point has y at least as high and x at least as good,
    with one of them strictly better. Sorted by x."""
    idx = sorted(range(len(points)), key=lambda i: (points[i][0] if lower_x_better else -points[i][0],
                                                    -points[i][1]))
    front, best = [], float("-inf")
    for i in idx:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front
