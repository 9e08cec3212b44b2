"""Matrix chains: constant matrices applied to distinct legs of one data tensor.

KFAC-reduce's network sums the input against one [K_d, I_d] matrix of counts
per spatial dimension (Σ_o Π_d); so do averaged patches. `torch.einsum`
contracting a leg that is not the last one first copies the data so that the
leg is last; opt_einsum, for which every order costs the same, often starts
with the innermost leg, a product with only K_N output columns that MKL runs
2-3x slower than a sum over the same data. A chain step instead applies each
matrix in place, outermost leg first, as one batched product
[K, I] @ [rows, I, rest] on the data as laid out (the innermost leg, once the
data is small, as [rows, I] @ [I, K]). The matrices act on distinct legs, so
their order does not change the value. Consecutive matrix steps of the plan
merge into one chain (`MatrixChainStep.then`).

>>> import torch
>>> x, a, b = torch.rand(2, 5, 6), torch.rand(3, 5), torch.rand(6, 4)
>>> step = matrix_step(0, ("n", "i", "j"), 1, ("k", "i"), ("n", "k", "j"))
>>> step = step.then(matrix_step(3, ("n", "k", "j"), 2, ("j", "l"), ("n", "l", "k")))
>>> torch.allclose(step([x, a, b]), torch.einsum("nij,ki,jl->nlk", x, a, b))
True
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from math import prod
from typing import Any, Callable, Optional, Sequence

import torch

__all__ = ["MatrixChainStep", "matrix_step"]


@dataclass(frozen=True)
class MatrixChainStep:
    """Matrices on distinct legs of `data`, applied outermost leg first.

    `matrices` holds (register, position of the contracted leg in `legs`, whether
    the matrix is stored [I, K] rather than [K, I]), sorted by position; each
    new leg takes its contracted leg's place (`placed`), and `permutation`
    orders `placed` as the step's output `out` (empty: already in order).
    """

    data: int
    legs: tuple[str, ...]
    matrices: tuple[tuple[int, int, bool], ...]
    new_legs: tuple[str, ...]  # per matrix, in the order of `matrices`
    out: tuple[str, ...]
    #: Set by `bind`: the products with their operands and shapes fixed.
    bound: Optional[Callable[[Sequence[Any]], torch.Tensor]] = field(default=None,
                                                                      compare=False)

    @property
    def inputs(self) -> tuple[int, ...]:
        return (self.data, *(register for register, _, _ in self.matrices))

    @property
    def placed(self) -> tuple[str, ...]:
        legs = list(self.legs)
        for (_, position, _), new in zip(self.matrices, self.new_legs):
            legs[position] = new
        return tuple(legs)

    @property
    def permutation(self) -> tuple[int, ...]:
        placed = self.placed
        order = tuple(placed.index(leg) for leg in self.out)
        return () if order == tuple(range(len(order))) else order

    def bind(self, registers: Sequence[Any], data_shape: tuple[int, ...]) -> "MatrixChainStep":
        """This step for one execution plan: its matrices are the constants in `registers`
        and its data has `data_shape`, so the expanded and transposed operands and every
        shape are laid out once (a per-call expand and a transposed last matrix cost
        7 and 5 µs of a 40 µs KFAC-reduce)."""
        products = []
        shape = list(data_shape)
        for register, position, stored_transposed in self.matrices:
            m = registers[register]
            m = m.T if stored_transposed else m  # [K, I]
            rows, size, rest = prod(shape[:position]), shape[position], prod(shape[position + 1:])
            if rest == 1:
                products.append((False, m.T.contiguous(), (rows, size)))
            else:  # bmm on the expanded matrix: matmul's broadcasting dispatches ~15 ops
                products.append((True, m.expand(rows, *m.shape), (rows, size, rest)))
            shape[position] = m.shape[0]
        data, final, permutation = self.data, tuple(shape), self.permutation

        def run(registers: Sequence[Any]) -> torch.Tensor:
            t = registers[data]
            for batched, m, operand_shape in products:
                t = (torch.bmm(m, t.reshape(operand_shape)) if batched
                     else torch.mm(t.reshape(operand_shape), m))
            t = t.reshape(final)
            return t.permute(permutation) if permutation else t

        return replace(self, bound=run)

    def __call__(self, registers: Sequence[Any]) -> torch.Tensor:
        """The chain on `registers`; an unbound step (outside a plan) binds for this call."""
        bound = self.bound or self.bind(registers, tuple(registers[self.data].shape)).bound
        return bound(registers)

    def then(self, following: "MatrixChainStep") -> Optional["MatrixChainStep"]:
        """One chain doing this step and then `following` (which reads this step's result).

        None where `following` contracts a leg this chain created (its order
        would matter) or holds more than one matrix.
        """
        if len(following.matrices) != 1 or following.legs != self.out:
            return None
        (register, position, stored_transposed), = following.matrices
        contracted = following.legs[position]
        if contracted not in self.legs or contracted in self.new_legs:
            return None
        base = self.legs.index(contracted)
        if any(p == base for _, p, _ in self.matrices):
            return None
        entries = sorted(zip(self.matrices + ((register, base, stored_transposed),),
                             self.new_legs + following.new_legs), key=lambda e: e[0][1])
        return MatrixChainStep(self.data, self.legs, tuple(m for m, _ in entries),
                               tuple(n for _, n in entries), following.out)


def matrix_step(data: int, legs: tuple[str, ...], matrix: int, matrix_legs: tuple[str, ...],
                out: tuple[str, ...]) -> Optional[MatrixChainStep]:
    """A one-matrix chain where `matrix` (2 legs) replaces one leg of `data` by a new one.

    None unless exactly one matrix leg is on the data (and summed) and the
    other is new (and kept), and every other data leg is kept.
    """
    if len(matrix_legs) != 2 or len(set(legs)) != len(legs):
        return None
    on_data = [leg for leg in matrix_legs if leg in legs]
    if len(on_data) != 1:
        return None
    contracted = on_data[0]
    new = matrix_legs[1] if matrix_legs[0] == contracted else matrix_legs[0]
    if contracted in out or new not in out or new == contracted:
        return None
    placed = tuple(new if leg == contracted else leg for leg in legs)
    if sorted(placed) != sorted(out):
        return None
    return MatrixChainStep(data, legs, ((matrix, legs.index(contracted),
                                         matrix_legs[0] == contracted),), (new,), out)
