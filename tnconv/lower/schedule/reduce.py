"""The reduce family: sums over some legs of one operand, plain or as a masked product.

Two things make a plain `t.sum(dims)` slow on the operands a convolution's network
sums (KFAC-reduce's 1×1 and patch-embedding layers): torch reduces several
non-adjacent dimensions of a large tensor at once several times slower than one at
a time (ViT's [2, 3, 14, 16, 14, 16] over the two position legs: 133 µs, against
26 µs outermost leg first); and an argument's view may end in a reshape that merges
strided legs, which copies the view before the sum (`unmerged` sums before the
merge: 53 µs against 125 µs). A sum of a strided selection is slow too (torch
reduces a leg of stride 2 element by element): `masked` turns it into one product
of the argument, as it lies, with a constant vector of counts (`SelectionCounts`),
which also carries a scale for free.

>>> from tnconv.lower.schedule.site import Operand, Site
>>> site = Site((Operand(0, ("n", "c", "o"), False),), ("c", "n"), 1, {"n": 2, "c": 3, "o": 4})
>>> reduce_rule(site)
Reduce(inputs=(0,), output=1, summed=(2,), permutation=(1, 0), kept_shape=(), scale=1.0, one_at_a_time=False)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import Optional

import numpy as np

from tnconv.ir.constants import register_constant
from tnconv.ir.views import Reshape, View
from tnconv.lower.schedule.model import Step
from tnconv.lower.schedule.site import Site

__all__ = ["Reduce", "MaskedReduce", "SelectionCounts", "HadamardSum", "reduce_rule",
           "hadamard_rule", "unmerged", "masked"]

#: From this many elements on, several summed dimensions are summed one at a time.
ONE_AT_A_TIME_MIN = 2 ** 15
#: A masked product reads every element of the summed block; it is chosen where the
#: selection keeps at least this share of them.
MASKED_MIN_SHARE = 1 / 4


@dataclass(frozen=True)
class Reduce(Step):
    """Sum the dims `summed` (ascending) of the input, reshape the rest to `kept_shape`
    (empty: as they are), then permute (`permutation` empty: keep the order); `scale`
    multiplies the sums."""

    family = "reduce"
    summed: tuple[int, ...]
    permutation: tuple[int, ...]
    kept_shape: tuple[int, ...] = ()
    scale: float = 1.0
    one_at_a_time: bool = False

    def label(self) -> str:
        what = f"sum dims {list(self.summed)}" if self.summed else "permute"
        return what + (f" × {self.scale!r}" if self.scale != 1 else "")

    def scaled(self, factor: float) -> Optional["Reduce"]:
        """This step with `factor` on its sums (None where it sums nothing: its result may
        be a view of its operand)."""
        return replace(self, scale=self.scale * factor) if self.summed else None


@dataclass(frozen=True)
class SelectionCounts:
    """[1, block, 1]: how often a strided selection (size, stride, offset) of a block reads
    each of its elements, times `scale` (a constant value)."""

    block: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int
    scale: float = 1.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, self.block, 1)

    def to_numpy(self) -> np.ndarray:
        read = np.lib.stride_tricks.as_strided(
            np.arange(self.block, dtype=np.int64)[self.offset:], self.size,
            tuple(8 * s for s in self.stride), writeable=False)
        counts = np.bincount(read.reshape(-1), minlength=self.block).astype(np.float64)
        return (counts * self.scale).reshape(self.shape)

    def describe(self) -> str:
        return f"counts of a strided selection of {self.block}" + (
            f" × {self.scale!r}" if self.scale != 1 else "")


register_constant(SelectionCounts, SelectionCounts.to_numpy)


@dataclass(frozen=True)
class MaskedReduce(Step):
    """Σ of a strided selection as one product: inputs (argument as [1, rows, block],
    counts [1, block, 1]); the result reshaped to `kept_shape`, then permuted."""

    family = "reduce"
    kept_shape: tuple[int, ...]
    permutation: tuple[int, ...]

    def label(self) -> str:
        return "masked sum (one product with the counts)"


def reduce_rule(site: Site) -> Optional[Reduce]:
    """One operand: sum the legs not in the result, permute the rest into its order."""
    if len(site.taken) != 1:
        return None
    op = site.taken[0]
    kept = [leg for leg in op.legs if leg in site.out]
    permutation = tuple(kept.index(leg) for leg in site.out)
    summed = tuple(d for d, leg in enumerate(op.legs) if leg not in site.out)
    return Reduce((op.register,), site.output, summed,
                  () if permutation == tuple(range(len(site.out))) else permutation,
                  one_at_a_time=len(summed) > 1 and site.size(op.legs) >= ONE_AT_A_TIME_MIN)


@dataclass(frozen=True)
class HadamardSum(Step):
    """Σ over `summed` of the elementwise product of two operands on the same legs (the
    second permuted by `other_order` to the first's order; one operand twice: its
    squares), then permuted: the last step of ‖g‖², Σ_n g², a GGN diagonal."""

    family = "reduce"
    summed: tuple[int, ...]
    permutation: tuple[int, ...]
    other_order: tuple[int, ...] = ()

    def label(self) -> str:
        kind = "squares" if self.inputs[0] == self.inputs[1] else "elementwise products"
        return f"sum of {kind} over dims {list(self.summed)}"


def hadamard_rule(site: Site) -> Optional[HadamardSum]:
    """Two operands with the same legs (each once), the result a subset of them: one
    multiply and one sum (torch.einsum runs it as a batched product of vectors, with
    copies to lay the batch out)."""
    pair = site.pair
    if pair is None:
        return None
    first, second = pair
    legs = first.legs
    if (len(set(legs)) != len(legs) or sorted(legs) != sorted(second.legs)
            or not set(site.out) <= set(legs)):
        return None
    kept = [leg for leg in legs if leg in site.out]
    permutation = tuple(kept.index(leg) for leg in site.out)
    order = tuple(second.legs.index(leg) for leg in legs)
    identity = lambda t: t == tuple(range(len(t)))  # noqa: E731
    return HadamardSum((first.register, second.register), site.output,
                       tuple(d for d, leg in enumerate(legs) if leg not in site.out),
                       () if identity(permutation) else permutation,
                       () if identity(order) else order)


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


def unmerged(view: View, step: Reduce) -> Optional[tuple[View, Reduce]]:
    """`view` without its trailing merging reshapes, and `step` summing the unmerged legs.

    None where the view ends in no reshape, the reshapes do more than merge, or the
    step sums nothing.
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
    return shorter, replace(step, summed=tuple(sorted(summed)),
                            kept_shape=() if kept_before == kept else kept,
                            one_at_a_time=len(summed) > 1 and prod(before) >= ONE_AT_A_TIME_MIN)


def masked(view: View, step: Reduce, counts_register: int) -> Optional[tuple]:
    """((1, rows, block), the counts' value, the step) where `step` sums a strided
    selection of a contiguous argument over all the legs it selects from; else None.

    The view must be a pure selection (one `as_strided` of the base), its kept legs the
    leading legs of the base untouched, and its summed legs the rest, with a stride above
    1 in the innermost one (a contiguous sum is fast as it is).
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
            or prod(size[kept:]) < MASKED_MIN_SHARE * block):
        return None
    counts = SelectionCounts(block, tuple(size[kept:]), tuple(stride[kept:]), offset, step.scale)
    reduced = MaskedReduce((step.inputs[0], counts_register), step.output,
                           step.kept_shape or tuple(size[:kept]), step.permutation)
    return (1, prod(size[:kept]), block), counts, reduced
