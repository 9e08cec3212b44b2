"""Shift-GEMM steps: a grouped convolution as one batched matrix product per kernel tap.

A window view of the (padded) input contracted with the weight is laid out
whole by `torch.einsum` (∏K times the input) before a batched product whose
matrices are as thin as the channels of one group. Here the input is read in
place instead. Flattened over its spatial dimensions, the pixels that tap t
reads for all output positions lie in one contiguous run: the output rows at
the padded width, whose last K−1 columns are computed and dropped. So each tap
is one batched product W_t[g] @ X[n, g, :, run_t], accumulated with
`baddbmm_`, and the result is a strided view of the accumulator.

Chosen for grouped convolutions only (a leg shared by the data, the weight and
the result, and channels per group to contract): there it measured 1.2-5x
faster than the einsum over the window view; for dense convolutions, whose one
einsum is a large well-shaped product, it was as often slower. Stride-1
windows only (a strided window's run would hold stride-times more columns).

>>> import torch
>>> x, w = torch.rand(2, 3, 4, 9, dtype=torch.float64), torch.rand(3, 5, 4, 3, dtype=torch.float64)
>>> windows = x.unfold(3, 3, 1)                       # [n, g, c, o, k]
>>> step = shift_gemm_step(0, ("n", "g", "c", "o", "k"), (4,), 1, ("g", "p", "c", "k"),
...                        ("n", "g", "p", "o"), {"n": 2, "g": 3, "c": 4, "o": 7, "k": 3, "p": 5})
>>> torch.allclose(step([windows, w]), torch.einsum("ngcok,gpck->ngpo", windows, w))
True
"""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass
from math import prod
from typing import Any, Optional, Sequence

import torch

__all__ = ["ShiftGemmStep", "shift_gemm_step"]

_ORDER = ("batch", "shared", "contracted")


@dataclass(frozen=True)
class ShiftGemmStep:
    """out[batch, shared, free, o…] = Σ_taps Σ_contracted windows · weight, tap by tap.

    The windowed operand's legs are (batch…, shared…, contracted…) then an
    (o, k) pair per spatial dimension, in that order; `weight_permutation`
    lays the weight out as [shared…, free…, contracted…, k…]; `permutation`
    orders the accumulated [batch…, shared…, free…, o…] as the step's output.
    `equation` is the plain einsum, for windows whose strides do not allow a run.
    """

    windowed: int
    other: int
    lead: tuple[int, int, int]  # number of batch, shared and contracted legs
    weight_permutation: tuple[int, ...]
    sizes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    permutation: tuple[int, ...]
    equation: str

    @property
    def inputs(self) -> tuple[int, ...]:
        return (self.windowed, self.other)

    def __call__(self, registers: Sequence[Any]) -> torch.Tensor:
        v, w = registers[self.windowed], registers[self.other]
        nb, ns, nc = self.lead
        batch, shared, free, contracted = self.sizes
        spatial = v.dim() - nb - ns - nc
        strides = v.stride()
        o_strides = strides[nb + ns + nc::2]
        k_strides = strides[nb + ns + nc + 1::2]
        if spatial == 0 or min(o_strides) != 1:
            return torch.einsum(self.equation, v, w)
        outputs = v.shape[nb + ns + nc::2]
        taps = v.shape[nb + ns + nc + 1::2]
        run = sum((o - 1) * s for o, s in zip(outputs, o_strides)) + 1
        rows, inner = prod(batch) * prod(shared), prod(contracted)
        width = prod(free)
        lead_shape = batch + shared + contracted
        lead_strides = strides[:nb + ns + nc]
        weight = w.permute(self.weight_permutation).reshape(prod(shared), width, inner, -1)
        # [taps, batch·shared, free, contracted]: the weight of every tap for every batch row
        weight = weight.permute(3, 0, 1, 2).unsqueeze(1).expand(
            -1, prod(batch), -1, -1, -1).reshape(-1, rows, width, inner)
        out = v.new_empty(rows, width, run)
        for t, tap in enumerate(itertools.product(*(range(k) for k in taps))):
            offset = v.storage_offset() + sum(k * s for k, s in zip(tap, k_strides))
            data = v.as_strided(lead_shape + (run,), lead_strides + (1,), offset)
            data = data.reshape(rows, inner, run)
            if t == 0:
                torch.bmm(weight[0], data, out=out)
            else:
                out.baddbmm_(weight[t], data)
        kept = out.as_strided(batch + shared + free + tuple(outputs),
                              _contiguous_strides(batch + shared + free, run) + o_strides)
        return kept.permute(self.permutation)


def _contiguous_strides(shape: tuple[int, ...], inner: int) -> tuple[int, ...]:
    strides, step = [], inner
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def shift_gemm_step(windowed: int, legs: tuple[str, ...], tap_dims: tuple[int, ...],
                    other: int, other_legs: tuple[str, ...], out: tuple[str, ...],
                    sizes: dict[str, int]) -> Optional[ShiftGemmStep]:
    """A `ShiftGemmStep` where a grouped stride-1 window view meets the weight, else None.

    `tap_dims` are the tap legs' positions in `legs` (each right after its
    window-start leg); every tap must be summed against `other`.
    """
    if not tap_dims or list(tap_dims) != list(range(len(legs) - 2 * len(tap_dims) + 1,
                                                    len(legs), 2)):
        return None
    lead = legs[:len(legs) - 2 * len(tap_dims)]
    starts = tuple(legs[d - 1] for d in tap_dims)
    taps = tuple(legs[d] for d in tap_dims)
    if any(t not in other_legs or t in out for t in taps) or any(
            o not in out or o in other_legs for o in starts):
        return None
    kind = ["batch" if leg in out and leg not in other_legs else
            "shared" if leg in out else "contracted" if leg in other_legs else "summed"
            for leg in lead]
    if "summed" in kind or kind != sorted(kind, key=_ORDER.index):
        return None
    batch = tuple(leg for leg, k in zip(lead, kind) if k == "batch")
    shared = tuple(leg for leg, k in zip(lead, kind) if k == "shared")
    contracted = tuple(leg for leg, k in zip(lead, kind) if k == "contracted")
    free = tuple(leg for leg in other_legs if leg not in lead and leg not in taps)
    if not shared or not free or any(leg not in out for leg in free) \
            or prod(sizes[leg] for leg in free + contracted) < 2:
        return None
    accumulated = batch + shared + free + starts
    if sorted(accumulated) != sorted(out):
        return None
    size_of = lambda seq: tuple(sizes[leg] for leg in seq)  # noqa: E731
    letters = dict(zip(dict.fromkeys(legs + other_legs), string.ascii_letters))
    spell = lambda seq: "".join(letters[leg] for leg in seq)  # noqa: E731
    return ShiftGemmStep(
        windowed=windowed, other=other,
        lead=(len(batch), len(shared), len(contracted)),
        weight_permutation=tuple(other_legs.index(leg) for leg in shared + free + contracted + taps),
        sizes=(size_of(batch), size_of(shared), size_of(free), size_of(contracted)),
        permutation=tuple(accumulated.index(leg) for leg in out),
        equation=f"{spell(legs)},{spell(other_legs)}->{spell(out)}",
    )
