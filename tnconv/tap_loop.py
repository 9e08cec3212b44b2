"""Tap loops: contract a sliding-window view one kernel tap at a time.

A window view (`tnconv.views.Window`) of a data tensor contracted with the
weight over its tap legs would be materialised whole by `torch.einsum`:
K-times the data (∏K in N dimensions). Summing over the taps in a loop instead
contracts one shifted slice of the data per tap and accumulates, the way a
direct convolution runs: the same FLOPs, no ∏K-fold copy. Used for depthwise
convolutions, where each tap is an elementwise multiply-accumulate.

>>> import torch
>>> x, w = torch.rand(2, 9, dtype=torch.float64), torch.rand(3, dtype=torch.float64)
>>> windows = x.unfold(1, 3, 1)                      # [n, o, k]
>>> step = tap_loop_step(0, ("n", "o", "k"), 1, ("k",), ("n", "o"), {"k": 3}, (0, 1, 2))
>>> torch.allclose(step([windows, w]), torch.einsum("nok,k->no", windows, w))
True
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass
from math import prod
from typing import Any, Optional, Sequence

import torch

__all__ = ["TapLoopStep", "tap_loop_step", "MAX_TAPS", "MAX_WINDOW_ELEMENTS"]

#: Loops longer than this are left to one einsum (Python overhead per tap).
MAX_TAPS = 64
#: A window view with more elements than this (256 MiB in fp32) is never materialised.
MAX_WINDOW_ELEMENTS = 2 ** 26


@dataclass(frozen=True)
class TapLoopStep:
    """Σ over the tap legs of einsum(windowed[taps], other[taps]), accumulated."""

    windowed: int
    other: int
    equation: str
    selections: tuple[tuple[tuple, tuple], ...]

    @property
    def inputs(self) -> tuple[int, ...]:
        return (self.windowed, self.other)

    def __call__(self, registers: Sequence[Any]) -> torch.Tensor:
        v, w = registers[self.windowed], registers[self.other]
        total = None
        for pick_v, pick_w in self.selections:
            part = torch.einsum(self.equation, v[pick_v], w[pick_w])
            total = part if total is None else total.add_(part)
        return total


def _pick(legs: tuple[str, ...], taps: tuple[str, ...], values: tuple[int, ...]) -> tuple:
    where = dict(zip(taps, values))
    return tuple(where.get(leg, slice(None)) for leg in legs)


def tap_loop_step(windowed: int, legs: tuple[str, ...], other: int, other_legs: tuple[str, ...],
                  out: tuple[str, ...], sizes: dict[str, int],
                  tap_dims: tuple[int, ...]) -> Optional[TapLoopStep]:
    """A `TapLoopStep` when some window taps (`tap_dims` of `legs`) are summed against `other`.

    Only where each tap is an elementwise multiply-accumulate (every other leg
    of the weight is on the windowed data too: depthwise convolutions), or
    where the window view would exceed `MAX_WINDOW_ELEMENTS`; elsewhere a per-tap
    matrix product measured slower than one einsum over the window. Returns
    None otherwise, or when the loop would be longer than `MAX_TAPS`.
    """
    taps = tuple(legs[d] for d in tap_dims
                 if legs[d] in other_legs and legs[d] not in out)
    if not taps or prod(sizes[t] for t in taps) > MAX_TAPS:
        return None
    elementwise = set(other_legs) - set(taps) <= set(legs)
    if not elementwise and prod(sizes[leg] for leg in legs) <= MAX_WINDOW_ELEMENTS:
        return None  # per tap a matrix product: one einsum over the window is faster
    keep_v = tuple(leg for leg in legs if leg not in taps)
    keep_w = tuple(leg for leg in other_legs if leg not in taps)
    names = sorted(set(keep_v) | set(keep_w))
    letter = dict(zip(names, string.ascii_letters))
    spell = lambda seq: "".join(letter[i] for i in seq)  # noqa: E731
    selections = tuple(
        (_pick(legs, taps, values), _pick(other_legs, taps, values))
        for values in itertools.product(*(range(sizes[t]) for t in taps)))
    return TapLoopStep(windowed, other, f"{spell(keep_v)},{spell(keep_w)}->{spell(out)}",
                       selections)
