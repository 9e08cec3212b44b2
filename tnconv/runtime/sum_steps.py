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

And one thing makes a sum of a strided selection slow: torch reduces a leg
of stride 2 element by element. A strided 1×1 convolution's position sum (x
every other row and column) took 75 µs, against 53 µs for one product of x,
as it lies, with a mask of the selected pixels (`masked`); the mask carries
the plan's scale for free, where a Gram step after a plain sum takes it as
`baddbmm`'s alpha (10-25 µs more in a cold cache).

>>> import torch
>>> step = sum_step(0, ("n", "c", "o"), ("c", "n"))
>>> x = torch.rand(2, 3, 4)
>>> torch.equal(step([x]), x.sum(2).T)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import prod
from typing import Any, Optional

import torch

from tnconv.ir.views import Reshape, View

__all__ = ["SumStep", "MaskedSumStep", "sum_step", "unmerged", "masked"]

#: From this many elements on, several summed dimensions are summed one at a time.
_ONE_AT_A_TIME_MIN = 2 ** 15
#: A masked product reads every element of the summed block; it is chosen where
#: the selection keeps at least this share of them.
_MASKED_MIN_SHARE = 1 / 4


@dataclass(frozen=True)
class SumStep:
    """Sum the dims `summed` (ascending) of one register, reshape the rest to `kept_shape`
    (empty: as they are), then permute (`permutation` empty: keep the order)."""

    inputs: tuple[int]
    summed: tuple[int, ...]
    permutation: tuple[int, ...]
    kept_shape: tuple[int, ...] = ()
    #: A factor on the sums, in place (`scaled`).
    scale: float = 1.0

    def __call__(self, registers: list[Any]) -> torch.Tensor:
        t = registers[self.inputs[0]]
        if len(self.summed) > 1 and t.numel() >= _ONE_AT_A_TIME_MIN:
            for done, dim in enumerate(self.summed):  # outermost first
                t = t.sum(dim - done)
        elif self.summed:
            t = t.sum(self.summed)
        if self.scale != 1:
            t = t.mul_(self.scale)
        if self.kept_shape:
            t = t.reshape(self.kept_shape)
        return t.permute(self.permutation) if self.permutation else t

    def scaled(self, factor: float) -> Optional["SumStep"]:
        """This step with `factor` on its sums (None if it sums nothing: its result may be a
        view of its operand, which must not be scaled in place)."""
        return replace(self, scale=self.scale * factor) if self.summed else None


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


@dataclass(frozen=True)
class MaskedSumStep:
    """Σ of a strided selection as one product: the argument as [1, rows, block] times the
    [1, block, 1] counts of how often the selection reads each element of a block,
    reshaped to `kept_shape`, then permuted (`permutation` empty: keep the order)."""

    inputs: tuple[int]
    mask: torch.Tensor = field(compare=False)
    kept_shape: tuple[int, ...]
    permutation: tuple[int, ...]

    def __call__(self, registers: list[Any]) -> torch.Tensor:
        t = torch.bmm(registers[self.inputs[0]], self.mask).reshape(self.kept_shape)
        return t.permute(self.permutation) if self.permutation else t

    def scaled(self, factor: float) -> "MaskedSumStep":
        """This step with `factor` on its mask (a scale at no cost per call)."""
        return replace(self, mask=self.mask * factor)


def masked(view: View, step: SumStep, device: Any,
           dtype: Any) -> Optional[tuple[tuple[int, int, int], MaskedSumStep]]:
    """(the argument's new shape [1, rows, block], the step) where `step` sums a strided
    selection of a contiguous argument over all the legs it selects from; else None.

    The view must be a pure selection (one `as_strided` of the base), its kept
    legs the leading legs of the base untouched, and its summed legs the rest,
    with a stride above 1 in the innermost one (a contiguous sum is fast as it is).
    """
    done, size, stride, offset = view.strided_steps
    if done != len(view.steps):
        return None
    kept = len(size) - len(step.summed)
    if step.summed != tuple(range(kept, len(size))) or not step.summed or stride[-1] == 1:
        return None
    base = view.base_shape
    if kept > len(base):  # the kept legs are no leading legs of the base
        return None
    block = prod(base[kept:])
    leading_ok = all(size[d] == base[d] and (size[d] == 1 or stride[d] == prod(base[d + 1:]))
                     for d in range(kept))
    last = offset + sum((n - 1) * s for n, s in zip(size[kept:], stride[kept:]))
    if (not leading_ok or min(stride[kept:]) < 0 or last >= block
            or prod(size[kept:]) < _MASKED_MIN_SHARE * block):
        return None
    read = torch.arange(block).as_strided(size[kept:], stride[kept:], offset)
    mask = torch.bincount(read.reshape(-1), minlength=block).to(device=device, dtype=dtype)
    rows = prod(size[:kept])
    return (1, rows, block), MaskedSumStep(step.inputs, mask.reshape(1, block, 1),
                                           step.kept_shape or tuple(size[:kept]),
                                           step.permutation)
