"""The einsum family: `torch.einsum` calls, the fallback for any contraction.

- `Einsum`: one call over the operands as they are.
- `SlicedEinsum`: a pair where one large operand leads with a leg of its own (a
  class or Monte-Carlo column of a sqrt factor) in front of the legs the pair
  shares: `torch.einsum` would copy that operand whole to move the shared legs
  first (on a 3d layer's GGN, 74 ms of a 366 ms call). One call per slice of the
  leading leg reads each slice in place; the other operand is laid out once as
  [shared…, own…, contracted…], and the slices' results are stacked.
- `SlicedSquares`: an einsum whose result only a sum of its squares reads, over a
  batch leg among others (a GGN diagonal's Σ_{c,n} φ²): one einsum per slice of that
  leg, squared and summed into the total, so the whole product (tens of MiB of fresh
  pages) is never made (`tnconv.lower.schedule.passes.square_in_slices`).

>>> from tnconv.lower.schedule.site import Operand, Site
>>> site = Site((Operand(0, ("n", "c"), False), Operand(1, ("c", "k"), True)), ("n", "k"), 2,
...             {"n": 2, "c": 3, "k": 4})
>>> einsum_rule(site)
Einsum(inputs=(0, 1), output=2, equation='ab,bc->ac')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from tnconv.ir.equation import spell
from tnconv.lower.schedule.model import Step
from tnconv.lower.schedule.site import Site

__all__ = ["Einsum", "SlicedEinsum", "SlicedSquares", "einsum_rule", "sliced_einsum_rule",
           "SLICED_MIN_ELEMENTS", "SLICED_FRESH_ELEMENTS", "SLICED_MAX_SLICES",
           "SLICED_MIN_COLUMNS"]

#: A sliced einsum saves one copy of the sliced operand: worth a loop from this size.
SLICED_MIN_ELEMENTS = 1 << 20
#: At most this many slices (one torch call each).
SLICED_MAX_SLICES = 64
#: A sliced operand of this many elements or more (32 MiB in fp32: above glibc's largest
#: mmap threshold, so a copy of it is fresh pages every call) is read a slice at a time even
#: where the loop re-reads the other operand more than one einsum would move: a GGN
#: diagonal's sqrt factor (C = 10), against one einsum, 0.66x on Parallel WaveGAN's dilated
#: 1d layer (82 MiB), 0.83x on a TCN's (41 MiB), 0.90x on I3D's 1×3×3 (128 MiB), 0.55x
#: on ResNet-18's stem (64 MiB); below it, 1.04-1.12x on the 'same' 4×4, R3D's and
#: ResNet's 3×3 (8-32 MiB).
SLICED_FRESH_ELEMENTS = 1 << 23
#: Each slice's product must keep at least this many columns of its own (a real matrix
#: product; a depthwise layer's one column per slice measured 3-4x slower as a loop).
SLICED_MIN_COLUMNS = 16


@dataclass(frozen=True)
class Einsum(Step):
    """output = torch.einsum(equation, *inputs)."""

    family = "einsum"
    equation: str

    def label(self) -> str:
        return f"einsum {self.equation}"


@dataclass(frozen=True)
class SlicedSquares(Step):
    """Σ over `summed` of einsum(equation, *inputs)², one slice of a leg at a time: input
    j is read at index i of its dim `dims[j]` (-1: whole), `equation` is the einsum of one
    slice, `summed` the dims of a slice's result summed; the total is permuted by
    `permutation`. With a `layout`, the first input is permuted by it and made contiguous
    once, before the slices (a `SlicedEinsum`'s other operand)."""

    family = "einsum"
    equation: str
    dims: tuple[int, ...]
    slices: int
    summed: tuple[int, ...]
    permutation: tuple[int, ...] = ()
    layout: tuple[int, ...] = ()

    def label(self) -> str:
        return (f"sum of squares of einsum {self.equation}, one slice of {self.slices} at a "
                f"time")


def einsum_rule(site: Site) -> Einsum:
    """Any contraction: one einsum over the operands as they are."""
    return Einsum(tuple(op.register for op in site.taken), site.output, site.equation())


@dataclass(frozen=True)
class SlicedEinsum(Step):
    """output = stack over i of torch.einsum(equation, other laid out, sliced[i]) at
    `position`: inputs[`sliced`] is read one slice of its leading leg at a time, the
    other operand permuted by `order` and made contiguous once."""

    family = "einsum"
    equation: str
    sliced: int
    order: tuple[int, ...]
    position: int
    slices: int

    def label(self) -> str:
        return f"einsum {self.equation} per slice ({self.slices}) of operand {self.sliced}"


def _copies(view: Any) -> bool:
    """Whether the operand is read through a view that copies (pads, gathers, overlapping
    windows): a slice of its register would not be a slice of the data in place. A view
    of splits and reshapes only (a stride-K, size-K transposed convolution's cotangent)
    does not: U-Net's 2×2/2 up-convolution's GGN diagonal (C = 10) took 0.57x the time
    of one einsum, whose copy of the split sqrt factor ran at 0.5 GB/s."""
    return view is not None and (not hasattr(view, "copied_elements")
                                 or view.copied_elements() > 0)


def sliced_einsum_rule(site: Site) -> Optional[SlicedEinsum]:
    """A pair where one operand's leading leg is its own (not in the other, kept in the
    output) and stands before a leg the two share and keep (a batch leg): each slice of
    that leg is already [batch…, …] in place, where one einsum would copy the operand.

    Priced in elements moved: the loop reads the other operand (laid out, e.g. a
    layer's unfolded input) once per slice, one einsum reads and writes the sliced
    operand once. A GGN factor's C = 10 columns on a 3×3 layer re-read a 9x larger
    unfolded input 10 times (measured 15% slower as a loop: no slicing), on a 3d RGB
    stem a small one (3.2x faster). From `SLICED_FRESH_ELEMENTS` the one einsum's copy
    of the sliced operand lands in fresh pages every call, and the loop pays even so."""
    pair = site.pair
    if pair is None or any(len(set(op.legs)) != len(op.legs) for op in pair):
        return None
    for side in (1, 0):
        big, other = pair[side], pair[1 - side]
        if not big.legs:
            continue
        lead = big.legs[0]
        if (_copies(big.view) or lead in other.legs or lead not in site.out
                or not 2 <= site.sizes[lead] <= SLICED_MAX_SLICES
                or site.size(big.legs) < SLICED_MIN_ELEMENTS):
            continue
        batch = [leg for leg in other.legs if leg in big.legs and leg in site.out]
        own = [leg for leg in big.legs[1:] if leg not in other.legs]
        if (not batch or site.size(tuple(own)) < SLICED_MIN_COLUMNS
                or (site.sizes[lead] * site.size(other.legs) >= 2 * site.size(big.legs)
                    and site.size(big.legs) < SLICED_FRESH_ELEMENTS)):
            continue
        contracted = [leg for leg in other.legs if leg in big.legs and leg not in site.out]
        layout = batch + [leg for leg in other.legs if leg not in big.legs] + contracted
        if len(layout) != len(other.legs):  # a leg summed on one side only: not a pair
            continue
        out = tuple(leg for leg in site.out if leg != lead)
        return SlicedEinsum((other.register, big.register), site.output,
                            spell([tuple(layout), big.legs[1:]], out), side,
                            tuple(other.legs.index(leg) for leg in layout),
                            site.out.index(lead), site.sizes[lead])
    return None
