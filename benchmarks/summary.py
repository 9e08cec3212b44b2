"""Ratios, geometric means and the bars of issues 4 and 7 with pass / miss per row.

A ratio is a route's median time (or extra peak memory) over the PyTorch
reference's in the same cell: below 1 means tnconv is faster (smaller). Only
routes whose result matched the reference count in geometric means; a wrong
result turns every bar of its operation and route into a miss.

>>> from benchmarks.timing import RouteResult
>>> cell = Cell("l", "unfold", {"ref": RouteResult("ok", seconds=2.0),
...                            "auto": RouteResult("ok", seconds=1.0)})
>>> cell.ratio("auto"), geomean([0.5, 2.0])
(0.5, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from math import exp, log
from statistics import median
from typing import Optional

from .timing import RouteResult

__all__ = ["Cell", "Bar", "BARS", "geomean", "time_ratios", "memory_ratios", "rewrite_ratios",
           "bar_rows", "MEMORY_FLOOR"]

#: Reference extra peak memory (bytes) below which no memory ratio is formed (noise).
MEMORY_FLOOR = 1024 ** 2


@dataclass
class Cell:
    """The routes' results for one (layer, operation)."""

    layer: str
    op: str
    results: dict[str, RouteResult]

    def _ok(self, route: str) -> Optional[RouteResult]:
        res = self.results.get(route)
        return res if res is not None and res.status in ("ok", "wrong") else None

    def ratio(self, route: str) -> Optional[float]:
        ref, res = self._ok("ref"), self._ok(route)
        if ref is None or res is None or not ref.timed or not res.timed or not ref.seconds:
            return None
        return res.seconds / ref.seconds  # type: ignore[operator]

    def memory_ratio(self, route: str) -> Optional[float]:
        ref, res = self._ok("ref"), self._ok(route)
        if ref is None or res is None or ref.memory is None or res.memory is None:
            return None
        return res.memory / ref.memory if ref.memory >= MEMORY_FLOOR else None

    def rewrite_ratio(self) -> Optional[float]:
        """Time of the tensor-network route with rewrites over the one without."""
        tn, norw = self.ratio("tn"), self.ratio("tn_norewrite")
        return tn / norw if tn is not None and norw else None


def geomean(values: list[float]) -> Optional[float]:
    values = [v for v in values if v > 0]
    return exp(sum(log(v) for v in values) / len(values)) if values else None


def _correct(cell: Cell, route: str) -> bool:
    res = cell.results.get(route)
    return res is not None and res.status == "ok"


def time_ratios(cells: list[Cell], op: str, route: str) -> list[float]:
    return [r for c in cells if c.op == op and _correct(c, route)
            for r in [c.ratio(route)] if r is not None]


def memory_ratios(cells: list[Cell], op: str, route: str) -> list[float]:
    return [r for c in cells if c.op == op and _correct(c, route)
            for r in [c.memory_ratio(route)] if r is not None]


def rewrite_ratios(cells: list[Cell], op: str) -> list[float]:
    return [r for c in cells if c.op == op and _correct(c, "tn") and _correct(c, "tn_norewrite")
            for r in [c.rewrite_ratio()] if r is not None]


@dataclass(frozen=True)
class Bar:
    """One target: `metric` of `route` on `op` must be at most (speedups: at least) `limit`."""

    op: str
    route: str
    metric: str  # "time geomean", "time max", "memory geomean", "speedup median", "overhead"
    limit: float
    device: str = "cpu"  # where the bar applies: "cpu", "cuda" or "any"


def _bars() -> tuple[Bar, ...]:
    bars = []
    for op in ("forward", "input_vjp", "weight_vjp", "conv_transpose"):
        bars += [Bar(op, "auto", "time geomean", 1.05), Bar(op, "tn", "time geomean", 2.0)]
    for route in ("auto", "tn"):
        bars += [Bar("unfold", route, "time geomean", 0.6), Bar("unfold", route, "time max", 1.0)]
    for route in ("auto", "tn"):
        bars += [Bar("kfc", route, "time geomean", 0.8), Bar("kfc", route, "memory geomean", 0.5)]
    for route in ("auto", "tn"):
        bars += [Bar("kfac_reduce", route, "time geomean", 0.06),
                 Bar("kfac_reduce", route, "time max", 1.0),
                 Bar("kfac_reduce", route, "memory geomean", 0.1)]
    bars += [Bar("kfac_reduce", "auto", "speedup median", 4.5, "cuda"),
             Bar("forward", "auto", "time geomean", 1.05, "cuda"),
             Bar("overhead", "auto", "overhead", 3.0, "any")]
    return tuple(bars)


BARS = _bars()


def _measure(bar: Bar, cells: list[Cell], overhead: Optional[dict]) -> tuple[Optional[float], int]:
    if bar.metric == "overhead":
        if not overhead:
            return None, 0
        return overhead[bar.route] / overhead["ref"], 1
    values = (memory_ratios if bar.metric.startswith("memory") else time_ratios)(
        cells, bar.op, bar.route)
    if not values:
        return None, 0
    if bar.metric == "time max":
        return max(values), len(values)
    if bar.metric == "speedup median":
        return 1 / median(values), len(values)
    return geomean(values), len(values)


def bar_rows(cells: list[Cell], overhead: Optional[dict], device: str) -> list[tuple[str, ...]]:
    """(operation, route, metric, measured, target, verdict) per bar that applies on `device`."""
    rows = []
    for bar in BARS:
        if bar.device not in ("any", device):
            continue
        value, count = _measure(bar, cells, overhead)
        wrong = any(c.op == bar.op and c.results.get(bar.route) is not None
                    and c.results[bar.route].status == "wrong" for c in cells)
        at_least = bar.metric == "speedup median"
        target = f"{'≥' if at_least else '≤'} {bar.limit:g}"
        if value is None:
            verdict, shown = "n/a", "—"
        else:
            ok = value >= bar.limit if at_least else value <= bar.limit
            verdict = "miss (wrong results)" if wrong else ("pass" if ok else "miss")
            shown = f"{value:.3g}" + (f" ({count} layers)" if bar.metric != "overhead" else "")
        rows.append((bar.op, bar.route, bar.metric, shown, target, verdict))
    return rows
