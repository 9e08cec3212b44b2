"""Redraw the plot from a committed ``results.md``: ``python -m benchmarks.replot``.

`python -m benchmarks` writes ``results.md`` and ``results.png`` from one run.
This script reads the table "Every layer and operation" of a committed
``results.md`` back into cells (the PyTorch time and each route's ratio to it)
and draws the same plot (`benchmarks.plot`), so the documentation's figure is
always the committed numbers: the docs build calls `plot_results`.

    python -m benchmarks.replot benchmarks/results/results.md -o results.png

>>> text = '''## Every layer and operation
...
... | layer | operation | PyTorch ms | auto | tn | tn rewrite=False | rewrite gain |
... |---|---|---|---|---|---|---|
... | stem | forward | 2 | 1.06 | 1.96 | skip | — |
... | stem | fold | — | — | — | — | — |
... '''
>>> [(c.layer, c.op, round(c.ratio("tn"), 2), c.ratio("tn_norewrite")) for c in read_cells(text)]
[('stem', 'forward', 1.96, None)]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional

from .plot import plot
from .summary import Cell
from .timing import RouteResult

__all__ = ["read_cells", "read_title", "plot_results", "main"]

_SECTION = "## Every layer and operation"
#: Table column -> route of the cells (the ratios are to the "ref" route, PyTorch).
_COLUMNS = {"auto": "auto", "tn": "tn", "tn rewrite=False": "tn_norewrite"}


def _number(text: str) -> Optional[float]:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None  # "—", "skip", "✗ …": not timed or not a correct result


def _rows(lines: list[str]) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the first Markdown table in `lines`."""
    table = [line for line in lines if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in table]
    if len(split) < 2:
        return [], []
    return split[0], [row for row in split[2:] if len(row) == len(split[0])]


def read_cells(text: str) -> list[Cell]:
    """The cells of the table "Every layer and operation" of a ``results.md``."""
    if _SECTION not in text:
        return []
    section = text.split(_SECTION, 1)[1].split("\n## ", 1)[0]
    header, rows = _rows(section.splitlines())
    column = {name: position for position, name in enumerate(header)}
    cells = []
    for row in rows:
        reference = _number(row[column["PyTorch ms"]])
        if reference is None:
            continue
        results = {"ref": RouteResult("ok", seconds=reference / 1000)}
        for name, route in _COLUMNS.items():
            ratio = _number(row[column[name]]) if name in column else None
            if ratio is not None:
                results[route] = RouteResult("ok", seconds=ratio * reference / 1000)
        cells.append(Cell(row[column["layer"]], row[column["operation"]], results))
    return cells


def read_title(text: str) -> str:
    """The plot's title: the run's device, threads and date, read from its header lines."""
    fields = dict(re.findall(r"^- ([a-z ]+): (.*)$", text, flags=re.MULTILINE))
    threads = re.search(r"(\d+) torch threads", fields.get("machine", ""))
    parts = [fields.get("device kind", "?")]
    if threads:
        parts.append(f"{threads.group(1)} threads")
    if "date" in fields:
        parts.append(fields["date"])
    return f"tnconv / PyTorch time ratio ({', '.join(parts)})"


def plot_results(results: Path, out: Path) -> bool:
    """Draw the plot of the committed `results` (a ``results.md``) to `out` (a PNG)."""
    text = Path(results).read_text(encoding="utf-8")
    return plot(read_cells(text), Path(out), read_title(text))


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replot", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("results", nargs="?", type=Path,
                        default=Path(__file__).parent / "results" / "results.md")
    parser.add_argument("-o", "--out", type=Path, default=Path("results.png"))
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not plot_results(args.results, args.out):
        print("no plot written (matplotlib missing or no timed cell)", file=sys.stderr)
        return 1
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
