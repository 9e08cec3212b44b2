"""Runtime of the einsum family: one `torch.einsum` call, or one per slice.

>>> import torch
>>> from tnconv.lower.schedule.einsum import Einsum
>>> run = bind(Einsum((0, 1), 2, "ab,bc->ac"), [])
>>> a, b = torch.rand(2, 3), torch.rand(3, 4)
>>> torch.allclose(run([a, b, None]), a @ b)
True
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from tnconv.lower.schedule.einsum import Einsum, SlicedEinsum, SlicedSquares

__all__ = ["bind"]


def bind(step: Einsum, registers: Sequence[Any], device: Any = None) -> Callable[[Sequence[Any]], torch.Tensor]:
    """registers -> torch.einsum(step.equation, *inputs) (per slice for `SlicedEinsum`)."""
    if isinstance(step, SlicedEinsum):
        return _sliced(step)
    if isinstance(step, SlicedSquares):
        return _sliced_squares(step)
    equation, inputs = step.equation, step.inputs
    if len(inputs) == 2:
        first, second = inputs
        return lambda r: torch.einsum(equation, r[first], r[second])
    return lambda r: torch.einsum(equation, *[r[i] for i in inputs])


def _sliced(step: SlicedEinsum) -> Callable[[Sequence[Any]], torch.Tensor]:
    other, big = step.inputs
    equation, order, position = step.equation, step.order, step.position

    def run(r: Sequence[Any]) -> torch.Tensor:
        laid = r[other].permute(order).contiguous()
        sliced = r[big]
        return torch.stack([torch.einsum(equation, laid, sliced[i])
                            for i in range(sliced.shape[0])], position)

    return run


def _sliced_squares(step: SlicedSquares) -> Callable[[Sequence[Any]], torch.Tensor]:
    inputs, dims, equation = step.inputs, step.dims, step.equation
    summed, permutation = step.summed, step.permutation

    def run(r: Sequence[Any]) -> torch.Tensor:
        total = None
        operands = [r[x] for x in inputs]
        if step.layout:
            operands[0] = operands[0].permute(step.layout).contiguous()
        for i in range(step.slices):
            part = torch.einsum(equation, *[t if d < 0 else t.select(d, i)
                                            for t, d in zip(operands, dims)])
            part = part * part
            part = part.sum(summed) if summed else part
            total = part if total is None else total.add_(part)
        return total.permute(permutation) if permutation else total

    return run
