"""`python -m benchmarks.curvature`: tnconv.curvature against the unfold-based way and vmap(grad).

On the suite's real layers (`benchmarks.layers`), 2 CPU threads by default: each
quantity of `benchmarks.curvature_routes` is checked against the unfold-based
reference and timed in interleaved rounds (medians, `benchmarks.timing.time_cell`);
the extra peak memory of one call of each route is measured in a fresh subprocess
per layer (`benchmarks.memory`). Ratios are to the unfold-based way in the same run.
Writes `benchmarks/results/curvature.md` with the command, the date, the machine's
load average, the bars of issue 21 (passed or missed) and every cell.

>>> args = parse_args(["--layers", "resnet_1x1_down", "--quantities", "batch_l2"])
>>> args.threads, args.classes, args.quantities
(2, 10, 'batch_l2')
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

import tnconv

from .case import make_case
from .cli import git_commit
from .curvature_report import markdown
from .curvature_routes import QUANTITIES, make_extras, route_calls
from .layers import LAYERS, select_layers
from .memory import MALLOC_ENV, peaks_of
from .timing import RouteResult, time_cell

__all__ = ["main", "parse_args", "Row", "run"]

_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Row:
    """One (layer, quantity): each route's result and the contraction form tnconv chose."""

    layer: str
    quantity: str
    results: dict[str, RouteResult]
    form: str = ""
    memory: dict[str, Optional[int]] = field(default_factory=dict)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.curvature",
                                description=__doc__.split("\n")[0])
    p.add_argument("--layers", help=f"comma-separated subset of: {', '.join(LAYERS)}")
    p.add_argument("--quantities", help=f"comma-separated subset of: {', '.join(QUANTITIES)}")
    p.add_argument("--classes", type=int, default=10,
                   help="columns C of the sqrt factor of the GGN quantities (default 10)")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per cell (default 7)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds after the check call")
    p.add_argument("--budget", type=float, default=2.0,
                   help="seconds of timed calls per route and cell before it sits out")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/curvature.md"))
    return p.parse_args(argv)


def _quantities(names: Optional[str]) -> list[str]:
    chosen = list(QUANTITIES) if names is None else [n.strip() for n in names.split(",")]
    unknown = [n for n in chosen if n not in QUANTITIES]
    if unknown:
        raise SystemExit(f"unknown quantities {unknown}; known: {', '.join(QUANTITIES)}")
    return chosen


def _form(quantity: str, case, classes: int) -> str:
    """The contraction form `explain()` names for this layer and batch."""
    options = {"classes": classes} if quantity.startswith("ggn") else {}
    text = tnconv.compile(quantity, case.spec, batch_size=case.x.shape[0],
                          **options).explain()
    line = next((l for l in text.splitlines() if l.startswith("plan ")), "")
    return line.split()[1].rstrip(":") if line else ""


def _measure_memory(layer: str, quantities: list[str], classes: int, threads: int) -> dict:
    """In a subprocess: {quantity: {route: extra peak bytes}}."""
    torch.set_num_threads(threads)
    case = make_case(LAYERS[layer], torch.device("cpu"))
    extras = make_extras(case, classes)
    return {quantity: peaks_of(route_calls(quantity, case, extras)) for quantity in quantities}


def _memory_of(layer: str, quantities: list[str], classes: int, threads: int) -> dict:
    env = dict(os.environ, **MALLOC_ENV, PYTHONPATH=str(_ROOT))
    request = json.dumps([layer, quantities, classes, threads])
    try:
        done = subprocess.run([sys.executable, "-m", "benchmarks.curvature", "--memory-of",
                               request], cwd=_ROOT, env=env, capture_output=True, text=True,
                              timeout=1800)
    except subprocess.TimeoutExpired:
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else {}


def run(args: argparse.Namespace) -> list[Row]:
    torch.set_num_threads(args.threads)
    rows = []
    quantities = _quantities(args.quantities)
    for layer in select_layers(args.layers, quick=False):
        case = make_case(layer, torch.device("cpu"))
        extras = make_extras(case, args.classes)
        for quantity in quantities:
            results = time_cell(route_calls(quantity, case, extras), args.repeats, args.warmup,
                                args.budget)
            rows.append(Row(layer.name, quantity, results, _form(quantity, case, args.classes)))
            print(f"{layer.name:22s} {quantity:24s} " + "  ".join(
                f"{r} {res.seconds * 1e3:8.1f} ms" if res.seconds else f"{r} {res.status}"
                for r, res in results.items()), flush=True)
        del case, extras
        if not args.no_memory:
            memory = _memory_of(layer.name, quantities, args.classes, args.threads)
            for row in rows:
                if row.layer == layer.name:
                    row.memory = memory.get(row.quantity, {})
    return rows


def _load() -> str:
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--memory-of"]:
        print(json.dumps(_measure_memory(*json.loads(argv[1]))))
        return 0
    args = parse_args(argv)
    load_before = _load()
    rows = run(args)
    header = {
        "command": "python -m benchmarks.curvature " + shlex.join(argv),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "setup": f"torch {torch.__version__}, commit {git_commit()}, cpu, "
                 f"{args.threads} torch threads, C = {args.classes} sqrt-factor columns, "
                 f"{args.repeats} interleaved rounds (medians)",
        "load": f"load average (1/5/15 min) {load_before} before, {_load()} after",
    }
    text = markdown(rows, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    wrong = [r for r in rows if r.results["tnconv"].status in ("wrong", "error")]
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
