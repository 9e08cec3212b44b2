"""`python -m benchmarks.floor`: KFAC-reduce next to a floor that only reads x and writes the result.

KFAC-reduce must read the input once and write its [G, D, D] result once. The
*floor* of a layer is a torch program that does only that: `x.sum()` and a
`torch.empty` of the factor's shape filled with it, three ops. It is timed in
the slot where the suite times the default route, right after the im2col
reference: rounds of (ref, floor), as the suite's rounds of (ref, auto, tn).
Both are reported as ratios to the reference's median in their own rounds. The
floor is an estimate, not a proof: a route may beat it on a layer (fewer ops, a
luckier allocation), but not by much on all of them.

Right after the reference has streamed up to 236 MB through the caches, every
torch call and Python frame pays tens of microseconds to fetch its code and
data again, and allocations of large results may page-fault. The floor pays
that for its three ops too, so `auto / floor` says how much slower than the floor
a route is: at most what doing fewer calls could still save.

Writes `floor.md` into `--out` and prints it.

>>> args = parse_args(["--layers", "resnet_3x3", "--repeats", "3"])
>>> args.layers, args.repeats, args.threads
('resnet_3x3', 3, 2)
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import torch

from .case import Case, make_case
from .cli import git_commit
from .layers import Layer, select_layers
from .ops import OPS, route_calls
from .runner import device_sync
from .summary import geomean
from .timing import time_cell

__all__ = ["floor_call", "measure_layer", "floor_table", "parse_args", "main"]

ROUTES = ("auto", "tn", "floor")


def floor_call(case: Case, shape: torch.Size) -> Callable[[], torch.Tensor]:
    """Read the case's input once and write a tensor of `shape` (the factor's)."""
    x = case.x

    def floor() -> torch.Tensor:
        return torch.empty(shape, dtype=x.dtype, device=x.device).fill_(x.sum())

    return floor


def measure_layer(layer: Layer, device: torch.device, repeats: int, warmup: int = 1,
                  budget: float = 1.0) -> dict[str, Optional[float]]:
    """Time ratios to the reference of the default and TN routes and of the floor."""
    case = make_case(layer, device)
    calls = route_calls(OPS["kfac_reduce"], case, ("ref", "auto", "tn"))
    sync = device_sync(device)
    routes = time_cell(calls, repeats, warmup, budget, sync)
    reference = calls["ref"]
    if isinstance(reference, str):
        return {route: None for route in ROUTES}
    floor = floor_call(case, reference().shape)
    # the floor computes no factor: no check against the reference (any error passes)
    floors = time_cell({"ref": reference, "floor": floor}, repeats, warmup, budget, sync,
                       tol=float("inf"))
    ratios: dict[str, Optional[float]] = {}
    for route, res, ref in [("auto", routes["auto"], routes["ref"]),
                            ("tn", routes["tn"], routes["ref"]),
                            ("floor", floors["floor"], floors["ref"])]:
        ok = res.status == "ok" and res.timed and ref.timed
        ratios[route] = res.seconds / ref.seconds if ok else None  # type: ignore[operator]
    return ratios


def _num(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.3g}"


def _over(value: Optional[float], floor: Optional[float]) -> Optional[float]:
    return value / floor if value is not None and floor else None


def floor_table(rows: dict[str, dict[str, Optional[float]]]) -> str:
    """Markdown: per layer the three ratios and each route over the floor; geometric means.

    >>> print(floor_table({"a": {"auto": 0.2, "tn": 0.3, "floor": 0.1}}).splitlines()[2])
    | a | 0.2 | 0.3 | 0.1 | 2 | 3 |
    """
    lines = ["| layer | auto | tn | floor | auto / floor | tn / floor |",
             "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {_num(r['auto'])} | {_num(r['tn'])} | {_num(r['floor'])} | "
                     f"{_num(_over(r['auto'], r['floor']))} | "
                     f"{_num(_over(r['tn'], r['floor']))} |")
    means = {route: geomean([r[route] for r in rows.values() if r[route] is not None])
             for route in ROUTES}
    lines.append(f"| **geometric mean** | {_num(means['auto'])} | {_num(means['tn'])} | "
                 f"{_num(means['floor'])} | {_num(_over(means['auto'], means['floor']))} | "
                 f"{_num(_over(means['tn'], means['floor']))} |")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.floor",
                                description=__doc__.split("\n")[0])
    p.add_argument("--layers", help="comma-separated subset of the suite's layers")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per layer (default 7)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="folder for floor.md")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    rows = {}
    for layer in select_layers(args.layers, quick=False):
        rows[layer.name] = measure_layer(layer, device, args.repeats)
        print(f"{layer.name}: " + ", ".join(f"{k} {_num(v)}" for k, v in rows[layer.name].items()),
              file=sys.stderr)
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = (f"# KFAC-reduce against its floor\n\n- command: `python -m benchmarks.floor "
            f"{' '.join(argv)}`\n- date: {date}, torch {torch.__version__}, commit "
            f"{git_commit()}\n- {args.threads} torch threads, {device.type}, "
            f"{args.repeats} rounds, medians; ratios to the im2col reference\n\n"
            + floor_table(rows) + "\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "floor.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
