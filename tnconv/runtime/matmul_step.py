"""Matmul steps: the last contraction of a plan, written in the result's own layout.

`torch.einsum` picks the layout of its product itself: a convolution's
`weight[a, c, k…] × windows[n, c, o…, k…] -> out[n, a, o…]` comes back as
[a, n, o…] (one GEMM over n·o), and the plan then copies the whole result into
[n, a, o…]. A 16,000-sample 1d front end with 512 channels spent 1.8 of its
2.9 ms in that copy. When the output legs read [batch…, M…, P…], M from one
operand only and P from the other only, one batched product
[B, M, K] @ [B, K, P] writes the result in place; an operand without the batch
legs is expanded over them (no copy).

>>> import torch
>>> step = matmul_step(1, ("a", "c", "k"), 0, ("n", "c", "o", "k"), ("n", "a", "o"),
...                    {"a": 5, "c": 2, "k": 3, "n": 4, "o": 6})
>>> x, w = torch.rand(4, 2, 6, 3), torch.rand(5, 2, 3)
>>> out = step([x, w])
>>> out.is_contiguous(), torch.allclose(out, torch.einsum("ack,ncok->nao", w, x))
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Optional, Sequence

import torch

__all__ = ["MatmulStep", "matmul_step"]


@dataclass(frozen=True)
class MatmulStep:
    """out = (left as [B, M, K]) @ (right as [B, K, P]), viewed as `shape`.

    Each side is permuted by its `*_order`, reshaped to its `*_shape` and, where
    it lacks the batch legs (`*_expand`), expanded over the B batch rows.
    """

    left: int
    right: int
    left_order: tuple[int, ...]
    right_order: tuple[int, ...]
    left_shape: tuple[int, int, int]
    right_shape: tuple[int, int, int]
    left_expand: bool
    right_expand: bool
    shape: tuple[int, ...]

    @property
    def inputs(self) -> tuple[int, ...]:
        return (self.left, self.right)

    def __call__(self, registers: Sequence[Any]) -> torch.Tensor:
        a = _side(registers[self.left], self.left_order, self.left_shape, self.left_expand)
        b = _side(registers[self.right], self.right_order, self.right_shape, self.right_expand)
        return torch.bmm(a, b).view(self.shape)


def _side(t: torch.Tensor, order: tuple[int, ...], shape: tuple[int, int, int],
          expand: bool) -> torch.Tensor:
    t = t.permute(order)
    if expand:
        return t.reshape(shape[1:]).expand(shape)
    return t.reshape(shape)


def matmul_step(first: int, first_legs: tuple[str, ...], second: int,
                second_legs: tuple[str, ...], out: tuple[str, ...],
                sizes: dict[str, int]) -> Optional[MatmulStep]:
    """The step writing `out` directly, or None where the output legs do not read
    [batch…, M…, P…] (M and P each from one operand only), a leg repeats within an
    operand, a leg is summed within one operand, or an operand has only some batch legs."""
    if len(set(first_legs)) != len(first_legs) or len(set(second_legs)) != len(second_legs):
        return None
    legs = (set(first_legs), set(second_legs))
    contracted = [leg for leg in first_legs if leg in legs[1] and leg not in out]
    if any(leg not in out and leg not in contracted for leg in (*first_legs, *second_legs)):
        return None
    split = _split(out, legs)
    if split is None:
        return None
    batch, m_legs, p_legs, m_side = split
    sides = ((first, first_legs), (second, second_legs))
    (left, left_legs), (right, right_legs) = sides if m_side == 0 else sides[::-1]
    size = lambda seq: prod(sizes[leg] for leg in seq)  # noqa: E731
    rows = size(batch)
    left_batch = [leg for leg in batch if leg in left_legs]
    right_batch = [leg for leg in batch if leg in right_legs]
    if left_batch not in ([], list(batch)) or right_batch not in ([], list(batch)):
        return None
    order = lambda names, seq: tuple(names.index(leg) for leg in seq)  # noqa: E731
    return MatmulStep(
        left=left, right=right,
        left_order=order(left_legs, left_batch + m_legs + contracted),
        right_order=order(right_legs, right_batch + contracted + p_legs),
        left_shape=(rows, size(m_legs), size(contracted)),
        right_shape=(rows, size(contracted), size(p_legs)),
        left_expand=not left_batch and rows > 1, right_expand=not right_batch and rows > 1,
        shape=tuple(sizes[leg] for leg in out))


def _split(out: tuple[str, ...], legs: tuple[set, set]) -> Optional[tuple]:
    """(batch, M, P, side of M): P the longest tail of `out` from one operand only, M the
    longest run before it from the other operand only; None where either is empty."""
    def only(leg: str, side: int) -> bool:
        return leg in legs[side] and leg not in legs[1 - side]

    for p_side in (0, 1):
        end = len(out)
        p_start = end
        while p_start > 0 and only(out[p_start - 1], p_side):
            p_start -= 1
        m_start = p_start
        while m_start > 0 and only(out[m_start - 1], 1 - p_side):
            m_start -= 1
        if p_start < end and m_start < p_start:
            return list(out[:m_start]), list(out[m_start:p_start]), list(out[p_start:]), 1 - p_side
    return None
