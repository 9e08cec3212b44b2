"""`python -m benchmarks.compile_time`: how long the first call of an operation takes.

Compile time is the rewrite search, lowering (path planning) and scheduling; the first
call adds binding (constants materialised) and one run. Measured with every cache
cleared, per suite layer and operation on the tensor-network route, and for an N-d
convolution (kernel 2 in two dimensions, 1 in the others) for N = 1..17, whose network
has N + 2 operands (exhaustive path search is exponential in that count). Writes
`benchmarks/results/compile_time.md`.

>>> row = measure(tnconv.ConvSpec(2, 3, 3, input_size=(6,)), "forward", 2)
>>> row["compile ms"] > 0 and row["first call ms"] >= row["compile ms"]
True
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

import tnconv
from tnconv.ops import get_operation

from .cli import git_commit
from .layers import LAYERS

__all__ = ["measure", "nd_spec", "main", "OPERATIONS"]

OPERATIONS = ("forward", "input_vjp", "weight_vjp", "unfold", "kfc", "kfac_reduce")


def measure(spec: tnconv.ConvSpec, op: str, batch: int) -> dict[str, float]:
    """Milliseconds to compile `op` on `spec` (rewrite, lowering, schedule), to the end of
    its first call, and of a later call (the median of three), every cache cleared before;
    the first call's overhead is the first call less a later one."""
    tnconv.clear_caches()
    operation = get_operation(op)
    options = dict(operation.defaults)
    args = [torch.rand(shape) for shape in operation.argument_shapes(spec, batch, **options)]
    start = time.perf_counter()
    compiled = tnconv.compile(op, spec, strategy="tn")
    compiled.schedule(batch)
    compiled_at = time.perf_counter()
    compiled(*args)
    done = time.perf_counter()
    later = []
    for _ in range(3):
        again = time.perf_counter()
        compiled(*args)
        later.append(time.perf_counter() - again)
    steady = sorted(later)[1]
    return {"compile ms": 1e3 * (compiled_at - start), "first call ms": 1e3 * (done - start),
            "overhead ms": 1e3 * (done - start - steady)}


def nd_spec(ndim: int) -> tnconv.ConvSpec:
    """An N-d convolution: kernel 2 in the first two dimensions, 1 in the others."""
    kernel = ((2, 2) + (1,) * ndim)[:ndim]
    size = ((4, 4) + (2,) * ndim)[:ndim]
    return tnconv.ConvSpec(2, 3, kernel, input_size=size)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compile_time")
    p.add_argument("--max-ndim", type=int, default=17)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/compile_time.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    measure(nd_spec(2), "forward", 2)  # imports and first-use set-up, not timed
    layer_rows, worst = [], 0.0
    for layer in LAYERS.values():
        for op in OPERATIONS:
            row = measure(layer.spec(), op, layer.batch)
            worst = max(worst, row["overhead ms"])
            layer_rows.append([layer.name, op, f"{row['compile ms']:.0f}",
                               f"{row['first call ms']:.0f}", f"{row['overhead ms']:.0f}"])
    nd_rows = []
    for ndim in range(1, args.max_ndim + 1):
        row = measure(nd_spec(ndim), "forward", 2)
        nd_rows.append([str(ndim), f"{row['compile ms']:.0f}", f"{row['first call ms']:.0f}",
                        f"{row['overhead ms']:.0f}"])
    lines = ["# Compile time", "",
             f"- command: `python -m benchmarks.compile_time`",
             f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
             f"commit {git_commit()}, 2 torch threads, every cache cleared before each row",
             f"- suite layers: largest first-call overhead (first call less a later one) "
             f"{worst:.0f} ms (bar: ≤ 150 ms)",
             "", "## Suite layers (strategy='tn')", "",
             *_table(["layer", "operation", "compile ms", "first call ms", "overhead ms"],
                     layer_rows),
             "", "## N-d convolution (kernel 2 in two dimensions, 1 elsewhere)", "",
             *_table(["N", "compile ms", "first call ms", "overhead ms"], nd_rows), ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
