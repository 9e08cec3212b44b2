"""The plot: time ratio to PyTorch per layer, one panel per operation, log scale.

Needs matplotlib (the ``bench`` extra); without it no plot is written.

>>> import tempfile, pathlib
>>> from benchmarks.timing import RouteResult
>>> cells = [Cell("resnet_3x3", "forward", {"ref": RouteResult("ok", seconds=1.0),
...           "auto": RouteResult("ok", seconds=0.5), "tn": RouteResult("ok", seconds=2.0)})]
>>> path = pathlib.Path(tempfile.mkdtemp()) / "r.png"
>>> plot(cells, path, "test") in (True, False)
True
"""

from __future__ import annotations

from pathlib import Path

from .ops import OPS, TN_ROUTES
from .summary import Cell

__all__ = ["plot"]

_COLORS = {"auto": "tab:blue", "tn": "tab:orange", "tn_norewrite": "tab:gray"}


def _panel(ax, cells: list[Cell], op: str) -> None:
    """Bars from 1 (as fast as PyTorch) up (slower) or down (faster), log scale."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    width = 0.8 / len(TN_ROUTES)
    for n, route in enumerate(TN_ROUTES):
        values = [c.ratio(route) or float("nan") for c in cells]
        positions = [i + (n - 1) * width for i in range(len(cells))]
        ax.bar(positions, [v - 1 for v in values], width, bottom=1.0, label=route,
               color=_COLORS[route])
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_title(op)
    ax.set_xticks(range(len(cells)))
    ax.set_xticklabels([c.layer for c in cells], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("time / PyTorch (log)")


def plot(cells: list[Cell], path: Path, title: str) -> bool:
    """Write the PNG to `path`; False (nothing written) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ops = [op for op in OPS if any(c.op == op and c.ratio(r) for c in cells for r in TN_ROUTES)]
    if not ops:
        return False
    cols = min(4, len(ops))
    rows = -(-len(ops) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, op in zip(axes.flat, ops):
        _panel(ax, [c for c in cells if c.op == op and any(c.ratio(r) for r in TN_ROUTES)], op)
    for ax in list(axes.flat)[len(ops):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
