"""Runtime of the reduce family: sums (one dim at a time where that is faster), masked
sums (one product with a vector of counts) and sums of elementwise products.

>>> import torch
>>> from tnconv.lower.schedule.reduce import Reduce
>>> x = torch.rand(2, 3, 4)
>>> torch.equal(bind(Reduce((0,), 1, (2,), (1, 0)), [])([x, None]), x.sum(2).T)
True
"""

from __future__ import annotations

import itertools
from math import prod
from typing import Any, Callable, Sequence

import torch

from tnconv.lower.schedule.reduce import HadamardSum, MaskedReduce, Reduce

__all__ = ["bind"]

Run = Callable[[Sequence[Any]], torch.Tensor]


def bind(step: Any, registers: Sequence[Any], device: Any = None) -> Run:
    """The call of a `Reduce`, `MaskedReduce` or `HadamardSum` step."""
    if isinstance(step, MaskedReduce):
        return _masked(step)
    if isinstance(step, HadamardSum):
        return _hadamard(step)
    return _reduce(step)


def _reduce(step: Reduce) -> Run:
    (source,), summed, scale = step.inputs, step.summed, step.scale
    kept_shape, permutation = step.kept_shape, step.permutation

    def run(r: Sequence[Any]) -> torch.Tensor:
        t = r[source]
        if step.one_at_a_time:
            for done, dim in enumerate(summed):  # outermost first
                t = t.sum(dim - done)
        elif summed:
            t = t.sum(summed)
        if scale != 1:  # in place on a fresh sum; never on an operand it may alias
            t = t.mul_(scale) if summed else t * scale
        if kept_shape:
            t = t.reshape(kept_shape)
        return t.permute(permutation) if permutation else t

    return run


def _masked(step: MaskedReduce) -> Run:
    (source, counts), kept_shape, permutation = step.inputs, step.kept_shape, step.permutation

    def run(r: Sequence[Any]) -> torch.Tensor:
        t = torch.bmm(r[source], r[counts]).reshape(kept_shape)
        return t.permute(permutation) if permutation else t

    return run


#: Elementwise products are formed in chunks of about this many bytes (cache-sized
#: temporaries; a whole [C, N, *weight] product is tens of MiB of fresh pages).
CHUNK_BYTES = 2 ** 21
#: Up to this many rows, sums over the outermost dims are one multiply-add per row.
MAX_ROWS = 4096


def _sum(t: torch.Tensor, summed: tuple[int, ...]) -> torch.Tensor:
    """Σ over `summed`, kept as size-1 dims, one dim at a time, outermost in memory first."""
    for dim in sorted(summed, key=t.stride, reverse=True):
        t = t.sum(dim, keepdim=True)
    return t


def _blocks(t: torch.Tensor) -> list[tuple[tuple[int, int, int], ...]]:
    """Cache-sized blocks of `t` in memory order: per block, (dim, start, length) for the
    dims it narrows (the outermost ones in memory), the rest whole."""
    order = sorted((d for d in range(t.dim()) if t.shape[d] > 1), key=t.stride, reverse=True)
    lead, size = [], t.numel() * t.element_size()
    for dim in order:
        if size <= CHUNK_BYTES:
            break
        lead.append(dim)
        size //= t.shape[dim]
    if not lead:
        return [()]
    *whole, last = lead
    step = max(1, CHUNK_BYTES // max(size, 1))
    return [tuple((d, i, 1) for d, i in zip(whole, index))
            + ((last, start, min(step, t.shape[last] - start)),)
            for index in itertools.product(*(range(t.shape[d]) for d in whole))
            for start in range(0, t.shape[last], step)]


def _hadamard(step: HadamardSum) -> Run:
    """Σ of a·b over the summed dims, a cache-sized block at a time (a whole
    [C, N, *weight] product would be tens of MiB of fresh pages)."""
    (first, second), summed = step.inputs, step.summed
    order, permutation = step.other_order, step.permutation

    def run(r: Sequence[Any]) -> torch.Tensor:
        a, b = r[first], r[second]
        b = b.permute(order) if order else b
        total = a.new_zeros([1 if d in summed else n for d, n in enumerate(a.shape)])
        outer = sorted(range(a.dim()), key=a.stride, reverse=True)[:len(summed)]
        if summed and sorted(outer) == sorted(summed) and total.numel() > 1 and prod(
                a.shape[d] for d in summed) <= MAX_ROWS:
            # the summed dims lie outermost: one multiply-add of each row into the total
            for index in itertools.product(*(range(a.shape[d]) for d in summed)):
                where = [slice(None)] * a.dim()
                for dim, i in zip(summed, index):
                    where[dim] = slice(i, i + 1)
                total.addcmul_(a[tuple(where)], b[tuple(where)])
            return _finish(total, summed, permutation)
        for block in _blocks(a):
            part_a, part_b, target = a, b, total
            for dim, start, length in block:
                part_a, part_b = part_a.narrow(dim, start, length), part_b.narrow(dim, start,
                                                                                 length)
                if dim not in summed:
                    target = target.narrow(dim, start, length)
            target += _sum(part_a * part_b, summed)
        return _finish(total, summed, permutation)

    return run


def _finish(total: torch.Tensor, summed: tuple[int, ...],
            permutation: tuple[int, ...]) -> torch.Tensor:
    t = total.squeeze(summed) if summed else total
    return t.permute(permutation) if permutation else t
