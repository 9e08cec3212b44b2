"""What a step rule sees: one contraction of the path, with its operands described.

>>> site = Site((Operand(0, ("n", "c"), False), Operand(1, ("c",), True)), ("n",), 2,
...             {"n": 4, "c": 3})
>>> site.equation()
'ab,b->a'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Hashable, Mapping, Optional

from tnconv.ir.equation import spell

__all__ = ["Operand", "Site"]


@dataclass(frozen=True)
class Operand:
    """One register a contraction reads: its legs; whether it is known without data
    (a constant or a result of constants); an operand constant's symbolic `value`; the
    data `view` its register holds, with `argument` set (an argument seen through its
    view, or the rows a gather took from one before the view's steps); and its
    common-subexpression `signature`."""

    register: int
    legs: tuple[str, ...]
    constant: bool
    value: Optional[Hashable] = None
    view: Optional[Any] = None
    signature: Hashable = None
    argument: bool = False


@dataclass(frozen=True)
class Site:
    """One contraction: the operands taken, the legs of its result, the register it
    writes, the index sizes; `final`: it writes the program's output."""

    taken: tuple[Operand, ...]
    out: tuple[str, ...]
    output: int
    sizes: Mapping[str, int] = field(compare=False)
    final: bool = False

    def size(self, legs: tuple[str, ...]) -> int:
        return prod(self.sizes[leg] for leg in legs)

    def shape(self, legs: tuple[str, ...]) -> tuple[int, ...]:
        return tuple(self.sizes[leg] for leg in legs)

    def equation(self) -> str:
        """The step as one local einsum (ASCII letters)."""
        return spell([op.legs for op in self.taken], self.out)

    @property
    def pair(self) -> Optional[tuple[Operand, Operand]]:
        """The two operands of a pairwise step (None otherwise)."""
        return (self.taken[0], self.taken[1]) if len(self.taken) == 2 else None

    @property
    def orders(self) -> tuple[tuple[Operand, Operand], ...]:
        """The pair in both orders, for rules that try each operand in each role (none
        where the step is not pairwise)."""
        pair = self.pair
        return () if pair is None else (pair, pair[::-1])
