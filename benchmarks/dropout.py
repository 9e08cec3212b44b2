"""`python -m benchmarks.dropout`: the sampled weight VJP (tensor dropout) against the exact one.

For each suite layer and each leg ("spatial": output positions, a transposed
convolution's input positions; "channel": input channels), times in one
interleaved run: the exact `tnconv.conv_weight_vjp` (`conv_transpose_weight_vjp`
for transposed layers; strategy "auto": torch's kernel where it has one), the
sampled VJP at keep = 1, 0.5, 0.25 and 0.1 (scheme "fixed", a fresh draw per
call), and the same estimate computed with a mask: the cotangent (or input)
multiplied by the draw's weights on full tensors, then the exact VJP; and, for
context, the exact VJP on the tensor-network route (`strategy="tn"`, the route
the sampled networks run on). Medians of the rounds, each call on new copies of
the arguments (`fresh_copies`); time ratios to the exact VJP, geometric means
over the layers where the leg has something to slice (a depthwise layer has one
input channel per group). The machine's load average is noted (other runs share it). Writes
`benchmarks/results/dropout.md`.

>>> layer = LAYERS["resnet_3x3"]
>>> sorted(routes(layer, "spatial", *arguments(layer)))[:3]
['exact', 'exact tn', 'masked 0.1']
"""

from __future__ import annotations

import argparse
import math
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import torch

import tnconv
from tnconv.ops.sampling import sampled_legs
from tnconv.sampling import Sample, draw
from tnconv.trials import TIMED

from .cli import git_commit
from .layers import LAYERS, Layer, select_layers
from .timing import time_cell

__all__ = ["KEEPS", "routes", "fresh_copies", "arguments", "run", "main"]

KEEPS = (1.0, 0.5, 0.25, 0.1)
LEGS = ("spatial", "channel")


def arguments(layer: Layer) -> tuple[torch.Tensor, torch.Tensor]:
    """A random input and cotangent of the layer (float32, seeded)."""
    spec = layer.spec()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*layer.input_shape, generator=generator)
    g = torch.randn(layer.batch, spec.out_channels, *spec.output_size, generator=generator)
    return x, g


def _vjp(layer: Layer, strategy: str = "auto") -> Callable[..., torch.Tensor]:
    """The layer's exact weight VJP function of (x, g, sample=…)."""
    size = layer.spec().weight_shape
    common = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                  groups=layer.groups, strategy=strategy)
    if layer.transposed:
        return lambda x, g, sample=None: tnconv.conv_transpose_weight_vjp(
            x, size, g, output_padding=layer.output_padding, sample=sample, **common)
    return lambda x, g, sample=None: tnconv.conv_weight_vjp(
        x, size, g, padding_mode=layer.padding_mode, sample=sample, **common)


def _mask(layer: Layer, leg: str, sample: Sample, x: torch.Tensor,
          g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x and g with a fresh draw's weights multiplied in (zero off the kept subset)."""
    spec = layer.spec()
    dims = sample.spatial_dims if leg == "spatial" else "all"
    legs = sampled_legs("weight_vjp", spec, layer.batch, leg, dims)
    counts, index, weights = draw(sample, [size for _, size in legs])
    factors, start = {}, 0
    for (name, size), count in zip(legs, counts):
        factors[name] = torch.zeros(size).index_add_(0, index[start:start + count],
                                                     weights[start:start + count].float())
        start += count
    if leg == "channel":
        return x * factors["c_in"].repeat(spec.groups).view(1, -1, *[1] * spec.ndim), g
    prefix = "i" if spec.transposed else "o"
    sizes = spec.input_size if spec.transposed else spec.output_size
    grid = torch.ones(())
    for d, size in enumerate(sizes):  # a leg of size 1 is never sliced
        grid = grid.unsqueeze(-1) * factors.get(f"{prefix}{d + 1}", torch.ones(size))
    return (x * grid, g) if spec.transposed else (x, g * grid)


def routes(layer: Layer, leg: str, x: torch.Tensor, g: torch.Tensor,
           fresh: Optional[list] = None) -> dict:
    """Route name -> call: the exact VJP first (the reference), then sampled and masked.
    The calls read the input and cotangent from `fresh` ([x, g] where None), a list the
    timing loop refills with new copies before each call (`fresh_copies`)."""
    args = [x, g] if fresh is None else fresh
    vjp, network = _vjp(layer), _vjp(layer, "tn")
    calls: dict = {"exact": lambda: vjp(*args), "exact tn": lambda: network(*args)}
    for keep in KEEPS:
        sample = Sample(leg, keep, generator=torch.Generator().manual_seed(1), scheme="fixed")
        calls[f"sampled {keep:g}"] = lambda s=sample: vjp(*args, sample=s)
    for keep in KEEPS[1:]:
        sample = Sample(leg, keep, generator=torch.Generator().manual_seed(2), scheme="fixed")
        calls[f"masked {keep:g}"] = lambda s=sample: vjp(*_mask(layer, leg, s, *args))
    return calls


def fresh_copies(x: torch.Tensor, g: torch.Tensor) -> tuple[list, Callable[[], None]]:
    """A list holding x and g, and a function that refills it with new copies of both.

    On these CPUs one kernel's time on the same data moves by up to 5x with where the
    data were allocated (torch's depthwise weight gradient on Xception's [8, 728, 19,
    19]: 1.4 or 6.3 ms by allocation, most of it oneDNN reordering the data to its
    blocked layout). Arguments made once per layer froze one such draw for the exact
    VJP, while each sampled call allocates its own slices; new copies before every call
    give every route the spread a training loop's new activations give it."""
    args = [x, g]

    def refill() -> None:
        args[:] = [x.clone(), g.clone()]

    return args, refill


#: Untimed rounds before the timed ones: with the first call, enough for a sampled route's
#: trials (each route once untimed, then `TIMED` times: `tnconv.trials`), a one-time cost
#: like compiling, so the table times the route each draw then keeps.
WARMUP = 2 * (TIMED + 1)


def run(layers: list[Layer], repeats: int, budget: float) -> dict:
    """{(layer name, leg): {route: seconds}} (a leg with nothing to slice is left out)."""
    table: dict = {}
    for layer in layers:
        x, g = arguments(layer)
        for leg in LEGS:
            if not sampled_legs("weight_vjp", layer.spec(), layer.batch, leg):
                continue
            args, refill = fresh_copies(x, g)
            results = time_cell(routes(layer, leg, x, g, args), repeats, warmup=WARMUP,
                                budget=budget, tol=math.inf, fresh=refill)
            table[(layer.name, leg)] = {r: res.seconds for r, res in results.items()}
            print(f"{layer.name:<20} {leg:<8} " + "  ".join(
                f"{r} {1e3 * s:.2f}" for r, s in table[(layer.name, leg)].items()
                if s is not None), flush=True)
    return table


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def markdown(table: dict, header: list[str]) -> str:
    """The report: per leg, ratios to the exact VJP per layer and their geometric means."""
    columns = ([f"sampled {k:g}" for k in KEEPS] + [f"masked {k:g}" for k in KEEPS[1:]]
               + ["exact tn"])
    lines = ["# Tensor dropout: the sampled weight VJP against the exact one", "", *header, ""]
    for leg in LEGS:
        rows = {name: times for (name, l), times in table.items() if l == leg}
        lines += [f"## leg = {leg!r}", "",
                  "| layer | exact ms | " + " | ".join(columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        ratios: dict[str, list[float]] = {c: [] for c in columns}
        for name, times in rows.items():
            cells = []
            for c in columns:
                ratio = times[c] / times["exact"]
                ratios[c].append(ratio)
                cells.append(f"{ratio:.2f}")
            lines.append(f"| {name} | {1e3 * times['exact']:.2f} | " + " | ".join(cells) + " |")
        means = {c: _geomean(v) for c, v in ratios.items()}
        lines.append("| **geometric mean** | | " + " | ".join(
            f"**{means[c]:.2f}**" for c in columns) + " |")
        lines += ["", *_bars(means), ""]
    return "\n".join(lines)


def _bars(means: dict[str, float]) -> list[str]:
    sampled = [means[f"sampled {k:g}"] for k in KEEPS]
    masked = [means[f"masked {k:g}"] for k in KEEPS[1:]]
    ok = lambda good: "pass" if good else "miss"  # noqa: E731
    network = sampled[2] / means["exact tn"]
    return [
        f"- keep 0.25 at most 0.5× the exact VJP: {sampled[2]:.2f}× — "
        f"{ok(sampled[2] <= 0.5)} (against the exact VJP on the same tensor-network route, "
        f"`strategy='tn'`: {network:.2f}×)",
        f"- time falls monotonically with keep ({', '.join(f'{s:.2f}' for s in sampled)}): "
        f"{ok(all(a >= b for a, b in zip(sampled, sampled[1:])))}",
        f"- the masked estimate does not get faster ({', '.join(f'{m:.2f}' for m in masked)}× "
        f"the exact VJP at keep 0.5, 0.25, 0.1): it computes the full VJP of masked tensors",
    ]


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dropout",
                                description=__doc__.split("\n")[0])
    p.add_argument("--layers", help=f"comma-separated subset of: {', '.join(LAYERS)}")
    p.add_argument("--repeats", type=int, default=7, help="timed rounds per cell")
    p.add_argument("--budget", type=float, default=2.0,
                   help="seconds of timed calls per route and cell")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/dropout.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    before = os.getloadavg()
    table = run(select_layers(args.layers, quick=False), args.repeats, args.budget)
    after = os.getloadavg()
    header = [
        f"- command: `python -m benchmarks.dropout{' --layers ' + args.layers if args.layers else ''}`",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch {torch.__version__}, "
        f"commit {git_commit()}",
        f"- {args.threads} torch threads, cpu, {WARMUP} untimed rounds (the sampled routes' "
        "trials of the masked and sliced routes among them), then "
        f"{args.repeats} interleaved rounds, medians; "
        "ratios to the exact VJP (scheme 'fixed', a fresh draw per call, new copies of the "
        "arguments before each call)",
        f"- load average (1, 5, 15 min) before: {before[0]:.2f}, {before[1]:.2f}, "
        f"{before[2]:.2f}; after: {after[0]:.2f}, {after[1]:.2f}, {after[2]:.2f} "
        "(the machine is shared with other runs)",
    ]
    text = markdown(table, header)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
