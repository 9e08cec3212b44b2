"""The einsum family: one `torch.einsum` call, the fallback for any contraction.

torch.einsum lays a pairwise contraction out as one batched product, each operand
permuted to [batch, free, summed] (copied where that is no view) and the result as
the equation asks. A step that feeds later steps (not the program's result) may
leave its result in any layout, so it asks for [batch, free legs of the larger
operand, free legs of the other] with the larger operand first, and hands on a
permuted view: a [C, N, C_out, O] sqrt factor met over o with N-batched patches is
then copied with its rows kept (C and N swapped), not transposed (wav2vec2's first
layer: 1.0 s against 2.1 s).

>>> from tnconv.lower.schedule.site import Operand, Site
>>> site = Site((Operand(0, ("n", "c"), False), Operand(1, ("c", "k"), True)), ("n", "k"), 2,
...             {"n": 2, "c": 3, "k": 4})
>>> einsum_rule(site)   # the larger operand (register 1) first, its free leg k first
Einsum(inputs=(1, 0), output=2, equation='ab,ca->bc', permutation=(1, 0))
"""

from __future__ import annotations

from dataclasses import dataclass

from tnconv.ir.equation import spell
from tnconv.lower.schedule.model import Step
from tnconv.lower.schedule.site import Site

__all__ = ["Einsum", "einsum_rule"]


@dataclass(frozen=True)
class Einsum(Step):
    """output = torch.einsum(equation, *inputs)."""

    family = "einsum"
    equation: str
    #: Applied to the einsum's result (a view): its legs in the step's order.
    permutation: tuple[int, ...] = ()

    def label(self) -> str:
        return f"einsum {self.equation}" + (
            f", permuted {list(self.permutation)}" if self.permutation else "")


def einsum_rule(site: Site) -> Einsum:
    """Any contraction: one einsum over the operands as they are (see the module docstring
    for the layout of a pair's result that later steps read)."""
    pair = site.pair
    if pair is None or site.final:
        return Einsum(tuple(op.register for op in site.taken), site.output, site.equation())
    big, small = sorted(pair, key=lambda op: -site.size(op.legs))
    if any(big.legs.count(leg) > 1 or small.legs.count(leg) > 1 for leg in site.out):
        return Einsum((pair[0].register, pair[1].register), site.output, site.equation())
    batch = [leg for leg in big.legs if leg in small.legs and leg in site.out]
    order = tuple(batch + [leg for leg in big.legs if leg in site.out and leg not in batch]
                  + [leg for leg in small.legs if leg in site.out and leg not in big.legs])
    permutation = tuple(order.index(leg) for leg in site.out)
    return Einsum((big.register, small.register), site.output,
                  spell([big.legs, small.legs], order),
                  () if permutation == tuple(range(len(order))) else permutation)
