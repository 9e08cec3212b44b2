"""Sum steps: one operand, some legs summed, the rest permuted (no einsum parsing per call).

Two things make a plain `t.sum(dims)` slow on the operands a convolution's
network sums (KFAC-reduce's 1×1 and patch-embedding layers):

- torch reduces several non-adjacent dimensions of a large tensor at once
  several times slower than one at a time (ViT's [2, 3, 14, 16, 14, 16] over
  the two position legs: 133 µs, against 26 µs outermost leg first);
- an argument's view may end in a reshape that merges strided legs (a strided
  1×1 convolution's positions o1·o2), which copies the view before the sum.
  Summing the legs before they are merged reads the view in place (53 µs
  against 125 µs for the copy and the sum). `unmerged` moves such a step's
  sum ahead of the view's trailing reshapes.

>>> import torch
>>> step = sum_step(0, ("n", "c", "o"), ("c", "n"))
>>> x = torch.rand(2, 3, 4)
>>> torch.equal(step([x]), x.sum(2).T)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .views import Reshape, View

__all__ = ["SumStep", "sum_step", "unmerged"]

#: From this many elements on, several summed dimensions are summed one at a time.
_ONE_AT_A_TIME_MIN = 2 ** 15


@dataclass(frozen=True)
class SumStep:
    """Sum the dims `summed` (ascending) of one register, reshape the rest to `kept_shape`
    (empty: as they are), then permute (`permutation` empty: keep the order)."""

    inputs: tuple[int]
    summed: tuple[int, ...]
    permutation: tuple[int, ...]
    kept_shape: tuple[int, ...] = ()

    def __call__(self, registers: list[Any]) -> torch.Tensor:
        t = registers[self.inputs[0]]
        if len(self.summed) > 1 and t.numel() >= _ONE_AT_A_TIME_MIN:
            for done, dim in enumerate(self.summed):  # outermost first
                t = t.sum(dim - done)
        elif self.summed:
            t = t.sum(self.summed)
        if self.kept_shape:
            t = t.reshape(self.kept_shape)
        return t.permute(self.permutation) if self.permutation else t


def sum_step(register: int, legs: tuple[str, ...], out: tuple[str, ...]) -> SumStep:
    """The step summing the legs of `legs` not in `out`, the others permuted to `out`."""
    kept = [leg for leg in legs if leg in out]
    permutation = tuple(kept.index(leg) for leg in out)
    return SumStep((register,), tuple(d for d, leg in enumerate(legs) if leg not in out),
                   () if permutation == tuple(range(len(out))) else permutation)


def _merged_from(before: tuple[int, ...], after: tuple[int, ...]) -> Optional[list[list[int]]]:
    """For each dim of `after`, the consecutive dims of `before` it merges (None: not a merge)."""
    groups: list[list[int]] = []
    position = 0
    for size in after:
        group, product = [], 1
        while position < len(before) and product < size:
            group.append(position)
            product *= before[position]
            position += 1
        if product != size:
            return None
        groups.append(group)
    if any(before[d] != 1 for d in range(position, len(before))) or not groups:
        return None
    groups[-1].extend(range(position, len(before)))  # trailing size-1 dims
    return groups


def unmerged(view: View, step: SumStep) -> Optional[tuple[View, SumStep]]:
    """`view` without its trailing merging reshapes, and `step` summing the unmerged legs.

    None where the view ends in no reshape, the reshapes do more than merge,
    or the step sums nothing.
    """
    steps = list(view.steps)
    while steps and isinstance(steps[-1], Reshape):
        steps.pop()
    if len(steps) == len(view.steps) or not step.summed:
        return None
    shorter = View(view.base_shape, tuple(steps))
    before = shorter.shape
    groups = _merged_from(before, view.shape)
    if groups is None:
        return None
    summed = tuple(d for dim in step.summed for d in groups[dim])
    kept = tuple(view.shape[dim] for dim in range(len(groups)) if dim not in step.summed)
    if not summed:  # the summed legs have size 1 and no dims of their own
        return None
    kept_before = tuple(before[d] for d in range(len(before)) if d not in summed)
    return shorter, SumStep(step.inputs, tuple(sorted(summed)), step.permutation,
                            () if kept_before == kept else kept)
