"""The einsum family: one `torch.einsum` call, the fallback for any contraction.

>>> from tnconv.lower.schedule.site import Operand, Site
>>> site = Site((Operand(0, ("n", "c"), False), Operand(1, ("c", "k"), True)), ("n", "k"), 2,
...             {"n": 2, "c": 3, "k": 4})
>>> einsum_rule(site)
Einsum(inputs=(0, 1), output=2, equation='ab,bc->ac')
"""

from __future__ import annotations

from dataclasses import dataclass

from tnconv.lower.schedule.model import Step
from tnconv.lower.schedule.site import Site

__all__ = ["Einsum", "einsum_rule"]


@dataclass(frozen=True)
class Einsum(Step):
    """output = torch.einsum(equation, *inputs)."""

    family = "einsum"
    equation: str

    def label(self) -> str:
        return f"einsum {self.equation}"


def einsum_rule(site: Site) -> Einsum:
    """Any contraction: one einsum over the operands as they are."""
    return Einsum(tuple(op.register for op in site.taken), site.output, site.equation())
