"""Gram steps: a contraction of a tensor with an identical copy of itself.

KFC contracts two copies of the (viewed) input over the batch and output legs
and keeps the channel and kernel legs of each copy: S = Uᵀ U. `torch.einsum`
would lay out each copy separately (two copies of the unfolded input); here the
operand is laid out once as [batch, contracted, free] and multiplied with its
own transpose, block upper triangle only (the product is symmetric).

>>> import torch
>>> step = gram_step(("n", "c", "o"), ("n", "d", "o"), (2, 3, 4), ("c", "d"), register=0)
>>> u = torch.rand(2, 3, 4, dtype=torch.float64)
>>> torch.allclose(step([u]), torch.einsum("nco,ndo->cd", u, u))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Optional, Sequence

import torch

__all__ = ["GramStep", "gram_step", "add_symmetric_product", "mirror_upper"]

#: Target rows per block of the symmetric product (smaller blocks lose GEMM speed).
_BLOCK_ROWS = 128
#: Below this contracted size (e.g. KFAC-reduce's batch) the half-product saves less
#: than its block loop and mirror copy cost.
_SYMMETRIC_MIN_INNER = 64


def _block_edges(d: int) -> list[int]:
    blocks = max(1, round(d / _BLOCK_ROWS))
    return [d * b // blocks for b in range(blocks + 1)]


def add_symmetric_product(out: torch.Tensor, u: torch.Tensor, alpha: float = 1.0) -> None:
    """out += alpha · u @ uᵀ per batch entry ([B, D, R] -> [B, D, D]), on the blocks on and
    above the diagonal only (about half the multiplications); `mirror_upper` completes it."""
    edges = _block_edges(u.shape[1])
    for a, b in zip(edges, edges[1:]):
        out[:, a:b, a:].baddbmm_(u[:, a:b], u[:, a:].transpose(1, 2), alpha=alpha)


def mirror_upper(out: torch.Tensor) -> torch.Tensor:
    """Copy the block upper triangle written by `add_symmetric_product` onto the lower one."""
    edges = _block_edges(out.shape[1])
    for a, b in zip(edges, edges[1:]):
        out[:, b:, a:b] = out[:, a:b, b:].transpose(1, 2)
    return out


@dataclass(frozen=True)
class GramStep:
    """R[batch…, free…, free'…] = alpha · Σ_contracted A[…] A'[…], permuted to the step's output.

    `alpha` carries the plan's scale into the product (no pass over the result).
    """

    register: int
    permutation: tuple[int, ...]
    matrix_shape: tuple[int, int, int]
    result_shape: tuple[int, ...]
    output_permutation: tuple[int, ...]  # empty: already in order
    alpha: float = 1.0
    #: The operand's legs already read [batch, contracted, free] (a thin product only):
    #: Aᵀ A on the operand as it lies, instead of a transposing copy.
    contracted_first: bool = False

    @property
    def inputs(self) -> tuple[int, ...]:
        return (self.register,)

    def __call__(self, registers: Sequence[Any]) -> torch.Tensor:
        batch, free, inner = self.matrix_shape
        if self.contracted_first:
            a = registers[self.register].reshape(batch, inner, free).transpose(1, 2)
        else:
            a = registers[self.register].permute(self.permutation).reshape(self.matrix_shape)
        if inner < _SYMMETRIC_MIN_INNER:  # a thin product: one bmm is faster
            if self.alpha == 1:
                product = torch.bmm(a, a.transpose(1, 2))
            else:  # beta=0: the empty input is never read
                product = torch.baddbmm(a.new_empty(batch, free, free), a, a.transpose(1, 2),
                                        beta=0, alpha=self.alpha)
        else:
            product = a.new_zeros(batch, free, free)
            add_symmetric_product(product, a, self.alpha)
            mirror_upper(product)
        product = product.reshape(self.result_shape)
        return product.permute(self.output_permutation) if self.output_permutation else product


def gram_step(legs: tuple[str, ...], copy_legs: tuple[str, ...], shape: tuple[int, ...],
              output: tuple[str, ...], register: int) -> Optional[GramStep]:
    """A `GramStep` if contracting `legs` with an identical tensor carrying `copy_legs` is one.

    Positions where the two copies share a leg are batch legs (kept in the
    output) or contracted legs (summed; none makes it an outer product); every
    other position must be a free leg on each copy, kept in the output.
    Returns None otherwise.
    """
    batch, contracted, free = [], [], []
    for pos, (leg, copy_leg) in enumerate(zip(legs, copy_legs)):
        if leg == copy_leg:
            (batch if leg in output else contracted).append(pos)
        elif leg in output and copy_leg in output and leg not in copy_legs:
            free.append(pos)
        else:
            return None
    if not free:
        return None
    # Lay the legs out in the order the output wants them, so the result needs no copy;
    # the product is symmetric, so either copy's legs may come first.
    batch.sort(key=lambda p: output.index(legs[p]))
    first_legs = legs if output.index(legs[free[0]]) < output.index(copy_legs[free[0]]) \
        else copy_legs
    free.sort(key=lambda p: output.index(first_legs[p]))
    second_legs = copy_legs if first_legs is legs else legs
    order = ([legs[p] for p in batch] + [first_legs[p] for p in free]
             + [second_legs[p] for p in free])
    if sorted(order) != sorted(output) or len(set(order)) != len(order):
        return None
    size = lambda positions: prod(shape[p] for p in positions)  # noqa: E731
    output_permutation = tuple(order.index(leg) for leg in output)
    return GramStep(
        register=register,
        permutation=tuple(batch + free + contracted),
        matrix_shape=(size(batch), size(free), size(contracted)),
        result_shape=tuple(shape[p] for p in batch + free + free),
        output_permutation=() if output_permutation == tuple(range(len(output)))
        else output_permutation,
        contracted_first=(batch + contracted + free == list(range(len(legs)))
                          and size(contracted) < _SYMMETRIC_MIN_INNER),
    )
