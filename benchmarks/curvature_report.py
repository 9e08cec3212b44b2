"""The Markdown report of `python -m benchmarks.curvature`: bars, geometric means, cells.

Time ratios are tnconv (or vmap) over the unfold-based way in the same run; memory
ratios only where the unfold-based way's extra peak is at least 1 MiB (below that
the resident-set measurement is noise, see `benchmarks.memory`).

>>> from benchmarks.timing import RouteResult
>>> rows = [_Row("l", "batch_l2", {"unfold": RouteResult("ok", seconds=2.0),
...          "tnconv": RouteResult("ok", seconds=0.5), "vmap": RouteResult("n/a")},
...          "gram", {"unfold": 8 << 20, "tnconv": 2 << 20})]
>>> "| l | 2000.0 | 500.0 | 0.25 |" in markdown(rows, {"command": "x"})
True
"""

from __future__ import annotations

from collections import namedtuple
from math import exp, log
from typing import Optional

__all__ = ["markdown", "BARS", "MEMORY_BAR"]

#: Time bars of issue 21: (geometric mean, worst layer) of tnconv / unfold; None: no bar.
BARS = {"batch_l2": (0.5, 1.0), "sum_grad_squared": (0.5, 1.0), "ggn_diagonal": (0.7, None)}
#: Extra peak memory of tnconv / unfold, geometric mean over layers.
MEMORY_BAR = 0.5
_MIB = 2 ** 20
_Row = namedtuple("_Row", "layer quantity results form memory")


def _geomean(values: list[float]) -> Optional[float]:
    return exp(sum(log(v) for v in values) / len(values)) if values else None


def _ratio(row, route: str) -> Optional[float]:
    ref, got = row.results["unfold"], row.results.get(route)
    if got is None or not (ref.seconds and got.seconds) or got.status != "ok":
        return None
    return got.seconds / ref.seconds


def _memory_ratio(row, route: str) -> Optional[float]:
    ref, got = row.memory.get("unfold"), row.memory.get(route)
    if ref is None or got is None or ref < _MIB:
        return None
    return got / ref


def _fmt(value: Optional[float], digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _verdict(value: Optional[float], bar: Optional[float]) -> str:
    if bar is None or value is None:
        return ""
    return f" (bar ≤ {bar}: {'passed' if value <= bar else 'missed'})"


def _summary(rows: list, quantities: list[str]) -> list[str]:
    lines = ["| quantity | tnconv / unfold time, geo. mean | worst layer | vmap / unfold time, "
             "geo. mean | tnconv / unfold extra peak memory, geo. mean | worst layer |",
             "|---|---|---|---|---|---|"]
    for quantity in quantities:
        mine = [r for r in rows if r.quantity == quantity]
        times = [x for x in (_ratio(r, "tnconv") for r in mine) if x is not None]
        vmaps = [x for x in (_ratio(r, "vmap") for r in mine) if x is not None]
        memory = [x for x in (_memory_ratio(r, "tnconv") for r in mine) if x is not None]
        mean_bar, worst_bar = BARS.get(quantity, (None, None))
        worst = max(times, default=None)
        lines.append(
            f"| {quantity} | {_fmt(_geomean(times))}{_verdict(_geomean(times), mean_bar)} | "
            f"{_fmt(worst)}{_verdict(worst, worst_bar)} | {_fmt(_geomean(vmaps))} | "
            f"{_fmt(_geomean(memory))}{_verdict(_geomean(memory), MEMORY_BAR)} | "
            f"{_fmt(max(memory, default=None))} |")
    return lines


def _mib(value: Optional[int]) -> str:
    return "—" if value is None else f"{value / _MIB:.1f}"


def _ms(result) -> str:
    if result is None:
        return "—"
    if result.seconds is None:
        return result.status
    flag = "" if result.status == "ok" else f" ({result.status})"
    return f"{result.seconds * 1e3:.1f}{flag}"


def _cells(rows: list, quantity: str) -> list[str]:
    lines = [f"### {quantity}", "",
             "| layer | unfold ms | tnconv ms | ratio | vmap ms | vmap ratio | tnconv form | "
             "unfold MiB | tnconv MiB | memory ratio | vmap MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in (r for r in rows if r.quantity == quantity):
        res = row.results
        lines.append(
            f"| {row.layer} | {_ms(res['unfold'])} | {_ms(res.get('tnconv'))} | "
            f"{_fmt(_ratio(row, 'tnconv'))} | {_ms(res.get('vmap'))} | "
            f"{_fmt(_ratio(row, 'vmap'))} | {row.form or '—'} | {_mib(row.memory.get('unfold'))}"
            f" | {_mib(row.memory.get('tnconv'))} | {_fmt(_memory_ratio(row, 'tnconv'))} | "
            f"{_mib(row.memory.get('vmap'))} |")
    return lines + [""]


def markdown(rows: list, header: dict) -> str:
    """The report: how it was run, the summary with the bars, then every cell."""
    quantities = list(dict.fromkeys(r.quantity for r in rows))
    lines = ["# Curvature quantities: tnconv.curvature against the unfold-based way", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += ["- ratios: tnconv (or vmap) over the unfold-based way in the same run; memory is "
              "the extra peak of one call (the result included), ratios where the unfold-based "
              "way's is at least 1 MiB", "", "## Summary", ""]
    lines += _summary(rows, quantities) + ["", "## Cells", ""]
    for quantity in quantities:
        lines += _cells(rows, quantity)
    return "\n".join(lines)
