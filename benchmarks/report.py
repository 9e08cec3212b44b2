"""The results as Markdown: how they were made, the bars, geometric means, every cell.

>>> from benchmarks.timing import RouteResult
>>> cells = [Cell("resnet_3x3", "forward", {"ref": RouteResult("ok", seconds=0.01),
...           "auto": RouteResult("ok", seconds=0.011, error=0.0),
...           "tn": RouteResult("wrong", seconds=0.02, error=0.5)})]
>>> text = cell_table(cells)
>>> "| resnet_3x3 | forward | 10 | 1.10 | ✗ 2.00 |" in text, "WRONG" in text
(True, True)
"""

from __future__ import annotations

from typing import Optional

from .layers import Layer
from .ops import OPS, TN_ROUTES
from .summary import Cell, bar_rows, geomean, memory_ratios, rewrite_ratios, time_ratios
from .timing import RouteResult

__all__ = ["markdown", "cell_table", "summary_table", "bars_table"]

_MIB = 1024 ** 2
_SHORT = {"n/a": "n/a", "skipped": "skip", "error": "error", "—": "—"}


def _num(value: Optional[float]) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def _route(cell: Cell, route: str) -> str:
    res = cell.results.get(route)
    if res is None:
        return "—"
    if res.status in _SHORT:
        return _SHORT[res.status]
    text = _num(cell.ratio(route))
    return f"✗ {text}" if res.status == "wrong" else text


def _check(cell: Cell) -> str:
    bad = [f"WRONG {r} ({res.error:.1e})" for r, res in cell.results.items()
           if res.status == "wrong"]
    bad += [f"error {r}" for r, res in cell.results.items() if res.status == "error"]
    if bad:
        return "✗ " + ", ".join(bad)
    return "ok" if any(res.timed for res in cell.results.values()) else "—"


def _mib(value: Optional[int]) -> str:
    return "—" if value is None else f"{value / _MIB:.1f}"


def _memory(cell: Cell) -> list[str]:
    if not OPS[cell.op].factor:
        return ["", "", "", ""]
    ref: Optional[RouteResult] = cell.results.get("ref")
    return [_mib(ref.memory if ref else None), _mib(ref.result_bytes if ref else None),
            _num(cell.memory_ratio("auto")), _num(cell.memory_ratio("tn"))]


def cell_table(cells: list[Cell]) -> str:
    head = ("| layer | operation | PyTorch ms | auto | tn | tn rewrite=False | rewrite gain "
            "| PyTorch extra MiB | result MiB | memory auto | memory tn | check |")
    lines = [head, "|" + "---|" * 12]
    for cell in cells:
        ref = cell.results.get("ref")
        ms = f"{ref.seconds * 1e3:.3g}" if ref is not None and ref.timed else "—"
        row = [cell.layer, cell.op, ms, *(_route(cell, r) for r in TN_ROUTES),
               _num(cell.rewrite_ratio()), *_memory(cell), _check(cell)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _gm(values: list[float], total: int) -> str:
    """Geometric mean, with the number of layers it covers when that is not all of them."""
    text = _num(geomean(values))
    return text if len(values) == total or not values else f"{text} ({len(values)}/{total})"


def summary_table(cells: list[Cell]) -> str:
    head = ("| operation | layers | auto | tn | tn rewrite=False | rewrite=True / False (tn) "
            "| worst auto | worst tn | memory auto | memory tn |")
    lines = [head, "|" + "---|" * 10]
    for op in OPS:
        total = sum(1 for c in cells if c.op == op and c.results["ref"].timed)
        if not total:
            continue
        auto, tn = time_ratios(cells, op, "auto"), time_ratios(cells, op, "tn")
        row = [op, str(total), _gm(auto, total), _gm(tn, total),
               _gm(time_ratios(cells, op, "tn_norewrite"), total),
               _gm(rewrite_ratios(cells, op), total),
               _num(max(auto, default=None)), _num(max(tn, default=None))]
        mem = ([_gm(memory_ratios(cells, op, r), total) for r in ("auto", "tn")]
               if OPS[op].factor else ["", ""])
        lines.append("| " + " | ".join(row + mem) + " |")
    return "\n".join(lines)


def bars_table(cells: list[Cell], overhead: Optional[dict], device: str) -> str:
    lines = ["| operation | route | metric | measured | target | result |", "|---" * 6 + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in bar_rows(cells, overhead, device)]
    return "\n".join(lines)


def _overhead(overhead: Optional[dict]) -> str:
    if not overhead:
        return "not measured"
    ref = overhead["ref"]
    parts = [f"F.conv2d {ref * 1e6:.1f} µs"]
    parts += [f"tnconv.conv {r} {overhead[r] * 1e6:.1f} µs ({overhead[r] / ref:.2f}×)"
              for r in ("auto", "tn")]
    return "; ".join(parts)


def _notes(cells: list[Cell]) -> list[str]:
    notes = []
    for cell in cells:
        for route, res in cell.results.items():
            if res.status in ("error", "wrong", "skipped") or (
                    res.status == "n/a" and route != "ref"):
                detail = res.note or f"relative error {res.error:.2e}"
                if not detail.startswith(res.status):
                    detail = f"{res.status}: {detail}"
                notes.append(f"- {cell.layer} / {cell.op} / {route}: {detail}")
    return sorted(set(notes), key=notes.index)


def markdown(cells: list[Cell], overhead: Optional[dict], meta: dict[str, str],
             layers: list[Layer]) -> str:
    """The whole report; `meta` holds command, date, versions and machine."""
    out = ["# tnconv benchmark results", ""]
    out += [f"- {key}: {value}" for key, value in meta.items()]
    out += ["", "Ratios are tnconv's median time (or extra peak memory) over PyTorch's in the "
            "same run, interleaved: below 1 is faster. `auto` is the default route, `tn` "
            "`strategy=\"tn\"`, `tn rewrite=False` the unrewritten network (timed after "
            "the interleaved rounds, on its own); rewrite gain = "
            "tn / tn rewrite=False. Memory (factors only) is the extra peak during the call, "
            "the result included (its size is shown); no memory ratio where PyTorch's is "
            "below 1 MiB. ✗ marks a result that does not match the reference.",
            "", "## Bars (issues 4 and 7)", "",
            bars_table(cells, overhead, meta.get("device kind", "cpu")),
            "", "## Geometric means per operation", "", summary_table(cells),
            "", "## Per-call overhead (1×4×8×8 input, 3×3 kernel)", "", _overhead(overhead),
            "", "## Every layer and operation", "", cell_table(cells), "", "## Layers", ""]
    out += [f"- `{layer.name}` ({layer.source}): {layer.describe()}" for layer in layers]
    notes = _notes(cells)
    if notes:
        out += ["", "## Errors, skips and missing routes", "", *notes]
    return "\n".join(out) + "\n"
