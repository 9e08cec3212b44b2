"""Runtime of the reduce family: sums (one dim at a time where that is faster), masked
sums (one product with a vector of counts) and sums of elementwise products.

>>> import torch
>>> from tnconv.lower.schedule.reduce import Reduce
>>> x = torch.rand(2, 3, 4)
>>> torch.equal(bind(Reduce((0,), 1, (2,), (1, 0)), [])([x, None]), x.sum(2).T)
True
"""

from __future__ import annotations

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


def _hadamard(step: HadamardSum) -> Run:
    (first, second), summed = step.inputs, step.summed
    order, permutation = step.other_order, step.permutation

    def run(r: Sequence[Any]) -> torch.Tensor:
        a, b = r[first], r[second]
        t = a * (b.permute(order) if order else b)
        if summed:
            t = t.sum(summed)
        return t.permute(permutation) if permutation else t

    return run
