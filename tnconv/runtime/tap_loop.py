"""Tap loops: contract a sliding-window view one kernel tap at a time.

A window view (`tnconv.ir.views.Window`) of a data tensor contracted with the
weight over its tap legs would be materialised whole by `torch.einsum`:
K-times the data (∏K in N dimensions). Summing over the taps in a loop instead
contracts one shifted slice of the data per tap and accumulates, the way a
direct convolution runs: the same FLOPs, no ∏K-fold copy. Used for depthwise
convolutions, where each tap is an elementwise multiply-accumulate; their
weight VJP, whose taps stay in the result, runs one product and sum per tap.

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
from typing import Any, Optional, Sequence, Union

import torch

__all__ = ["TapLoopStep", "TapOutputStep", "tap_loop_step", "MAX_TAPS", "MAX_WINDOW_ELEMENTS"]

#: Loops longer than this are left to one einsum (Python overhead per tap).
MAX_TAPS = 64
#: A window view with more elements than this (256 MiB in fp32) is never materialised.
MAX_WINDOW_ELEMENTS = 2 ** 26


@dataclass(frozen=True)
class TapLoopStep:
    """Σ over the tap legs of einsum(windowed[taps], other[taps]), accumulated.

    With `broadcast` set (depthwise: every leg of the weight's slice is on the
    data's slice, and the result keeps all of the data's legs), a tap is one
    fused `addcmul_` of the data slice and the weight slice viewed as
    `broadcast`, and `permutation` orders the result's legs.
    """

    windowed: int
    other: int
    equation: str
    selections: tuple[tuple[tuple, tuple], ...]
    broadcast: Optional[tuple[tuple[int, ...], tuple[int, ...]]] = None
    permutation: tuple[int, ...] = ()

    @property
    def inputs(self) -> tuple[int, ...]:
        return (self.windowed, self.other)

    def __call__(self, registers: Sequence[Any]) -> torch.Tensor:
        v, w = registers[self.windowed], registers[self.other]
        if self.broadcast is not None:
            order, shape = self.broadcast
            (first_v, first_w), *rest = self.selections
            total = v[first_v] * w[first_w].permute(order).reshape(shape)
            for pick_v, pick_w in rest:
                total.addcmul_(v[pick_v], w[pick_w].permute(order).reshape(shape))
            return total.permute(self.permutation)
        total = None
        for pick_v, pick_w in self.selections:
            part = torch.einsum(self.equation, v[pick_v], w[pick_w])
            total = part if total is None else total.add_(part)
        return total


@dataclass(frozen=True)
class TapOutputStep:
    """Taps that stay in the result (a depthwise weight VJP): one product and sum per tap.

    out[…, taps] = Σ over `summed` of windowed[taps] · other, the other
    operand viewed as `broadcast` against the data's slice; `permutation` orders
    each tap's legs as the result's non-tap legs, `picks` place them.
    """

    windowed: int
    other: int
    broadcast: tuple[tuple[int, ...], tuple[int, ...]]
    summed: tuple[int, ...]
    permutation: tuple[int, ...]
    out_shape: tuple[int, ...]
    selections: tuple[tuple[tuple, tuple], ...]  # (pick in the data, place in the result)

    @property
    def inputs(self) -> tuple[int, ...]:
        return (self.windowed, self.other)

    def __call__(self, registers: Sequence[Any]) -> torch.Tensor:
        v, w = registers[self.windowed], registers[self.other]
        order, shape = self.broadcast
        w = w.permute(order).reshape(shape)
        out = v.new_empty(self.out_shape)
        for pick_v, place in self.selections:
            out[place] = (v[pick_v] * w).sum(self.summed).permute(self.permutation)
        return out


def _pick(legs: tuple[str, ...], taps: tuple[str, ...], values: tuple[int, ...]) -> tuple:
    where = dict(zip(taps, values))
    return tuple(where.get(leg, slice(None)) for leg in legs)


def _broadcast(keep_v: tuple[str, ...], keep_w: tuple[str, ...],
               sizes: dict[str, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Permutation and shape that lay `keep_w`'s legs out against `keep_v`'s (size 1 elsewhere)."""
    order = tuple(keep_w.index(leg) for leg in keep_v if leg in keep_w)
    return order, tuple(sizes[leg] if leg in keep_w else 1 for leg in keep_v)


def _tap_values(taps: tuple[str, ...], sizes: dict[str, int]):
    return itertools.product(*(range(sizes[t]) for t in taps))


def tap_loop_step(windowed: int, legs: tuple[str, ...], other: int, other_legs: tuple[str, ...],
                  out: tuple[str, ...], sizes: dict[str, int],
                  tap_dims: tuple[int, ...]) -> Optional[Union[TapLoopStep, TapOutputStep]]:
    """A tap loop when some window taps (`tap_dims` of `legs`) meet `other`.

    Taps summed against `other`: only where each tap is an elementwise
    multiply-accumulate (every other leg of the weight is on the windowed data
    too: depthwise convolutions), or where the window view would exceed
    `MAX_WINDOW_ELEMENTS`; elsewhere a per-tap matrix product measured slower
    than one einsum over the window. Taps kept in the result (a depthwise
    weight VJP): where `other` has no tap legs and all its legs are on the data.
    Returns None otherwise, or when the loop would be longer than `MAX_TAPS`.
    """
    window_taps = tuple(legs[d] for d in tap_dims)
    taps = tuple(t for t in window_taps if t in other_legs and t not in out)
    if not taps:
        return _tap_output_step(windowed, legs, other, other_legs, out, sizes, window_taps)
    if prod(sizes[t] for t in taps) > MAX_TAPS:
        return None
    elementwise = set(other_legs) - set(taps) <= set(legs)
    if not elementwise and prod(sizes[leg] for leg in legs) <= MAX_WINDOW_ELEMENTS:
        return None  # per tap a matrix product: one einsum over the window is faster
    keep_v = tuple(leg for leg in legs if leg not in taps)
    keep_w = tuple(leg for leg in other_legs if leg not in taps)
    names = sorted(set(keep_v) | set(keep_w))
    letter = dict(zip(names, string.ascii_letters))
    spell = lambda seq: "".join(letter[i] for i in seq)  # noqa: E731
    selections = tuple((_pick(legs, taps, values), _pick(other_legs, taps, values))
                       for values in _tap_values(taps, sizes))
    equation = f"{spell(keep_v)},{spell(keep_w)}->{spell(out)}"
    if elementwise and sorted(keep_v) == sorted(out):
        return TapLoopStep(windowed, other, equation, selections,
                           _broadcast(keep_v, keep_w, sizes),
                           tuple(keep_v.index(leg) for leg in out))
    return TapLoopStep(windowed, other, equation, selections)


def _tap_output_step(windowed: int, legs: tuple[str, ...], other: int,
                     other_legs: tuple[str, ...], out: tuple[str, ...], sizes: dict[str, int],
                     window_taps: tuple[str, ...]) -> Optional[TapOutputStep]:
    taps = tuple(t for t in window_taps if t in out and t not in other_legs)
    if not taps or prod(sizes[t] for t in taps) > MAX_TAPS or not set(other_legs) <= set(legs):
        return None
    keep_v = tuple(leg for leg in legs if leg not in taps)
    kept = tuple(leg for leg in keep_v if leg in out)
    rest = tuple(leg for leg in out if leg not in taps)
    if sorted(kept) != sorted(rest):
        return None
    selections = tuple((_pick(legs, taps, values), _pick(out, taps, values))
                       for values in _tap_values(taps, sizes))
    return TapOutputStep(
        windowed, other, _broadcast(keep_v, other_legs, sizes),
        tuple(d for d, leg in enumerate(keep_v) if leg not in out),
        tuple(kept.index(leg) for leg in rest), tuple(sizes[leg] for leg in out), selections)
