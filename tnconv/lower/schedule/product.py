"""The product family: contractions laid out as batched matrix products.

- `Gram`: a tensor met with an identical copy of itself (KFC's Uᵀ U, KFAC-reduce's
  ūᵀ ū): laid out once as [batch, free, contracted] and multiplied with its own
  transpose, block upper triangle only where the product is large (it is symmetric).
- `Matmul`: the last contraction of a program written straight in the result's
  layout, [B, M, K] @ [B, K, P] (einsum would pick its own layout, and the result
  would be copied whole: a 16,000-sample 1d front end spent 1.8 of 2.9 ms there).
- `MatrixChain`: constant [K, I] matrices on distinct legs of one data tensor
  (KFAC-reduce's Σ_o Π per dimension), applied in place, outermost leg first: a
  leg-by-leg einsum would copy the data to move each leg last, and opt_einsum often
  starts with the innermost leg, a product MKL runs 2-3x slower than a sum.

>>> from tnconv.lower.schedule.site import Operand, Site
>>> x = Operand(0, ("n", "c", "o"), False, signature="x")
>>> site = Site((x, Operand(1, ("n", "d", "o"), False, signature="x")), ("c", "d"), 2,
...             {"n": 2, "c": 3, "d": 3, "o": 4})
>>> gram_rule(site).matrix_shape
(1, 3, 8)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import Optional

from tnconv.lower.schedule.model import Step
from tnconv.lower.schedule.site import Site

__all__ = ["Gram", "Matmul", "MatrixChain", "gram_rule", "matmul_rule", "matrix_rule",
           "SYMMETRIC_MIN_INNER"]

#: Below this contracted size (e.g. KFAC-reduce's batch) a half product saves less than
#: its block loop and mirror copy cost: one plain product.
SYMMETRIC_MIN_INNER = 64


@dataclass(frozen=True)
class Gram(Step):
    """R[batch…, free…, free'…] = alpha · Σ_contracted A A', permuted to the step's output.

    The operand is permuted by `permutation` and viewed as `matrix_shape` [B, F, C]
    (with `contracted_first`, read as [B, C, F] as it lies, a thin product only);
    the [B, F, F] product is viewed as `result_shape`, then permuted
    (`output_permutation`, empty: already in order).
    """

    family = "product"
    permutation: tuple[int, ...]
    matrix_shape: tuple[int, int, int]
    result_shape: tuple[int, ...]
    output_permutation: tuple[int, ...]
    alpha: float = 1.0
    contracted_first: bool = False

    @property
    def reads(self) -> tuple[int, ...]:
        return self.inputs * 2

    @property
    def symmetric(self) -> bool:
        """Whether the block upper triangle is computed and mirrored (a large product)."""
        return self.matrix_shape[2] >= SYMMETRIC_MIN_INNER

    def label(self) -> str:
        b, f, c = self.matrix_shape
        kind = "symmetric half" if self.symmetric else "one bmm"
        scaled = f" × {self.alpha!r}" if self.alpha != 1 else ""
        return f"gram [{b}, {f}, {c}] @ its transpose ({kind}){scaled}"


@dataclass(frozen=True)
class Matmul(Step):
    """out = (left as [B, M, K]) @ (right as [B, K, P]), viewed as `shape`; each side
    permuted by its order, reshaped, and expanded over B where it lacks the batch legs."""

    family = "product"
    left_order: tuple[int, ...]
    right_order: tuple[int, ...]
    left_shape: tuple[int, int, int]
    right_shape: tuple[int, int, int]
    left_expand: bool
    right_expand: bool
    shape: tuple[int, ...]

    def label(self) -> str:
        (b, m, k), (_, _, p) = self.left_shape, self.right_shape
        return f"bmm [{b}, {m}, {k}] @ [{b}, {k}, {p}] in the result's layout"


@dataclass(frozen=True)
class MatrixChain(Step):
    """Constant matrices on distinct legs of the data (inputs[0]), outermost leg first.

    `matrices` holds, per matrix (inputs[1:], in order), (position of the leg it
    contracts in `legs`, whether it is stored [I, K] rather than [K, I]); each new leg
    takes its contracted leg's place, `permutation` orders the result as `out`.
    """

    family = "product"
    legs: tuple[str, ...]
    matrices: tuple[tuple[int, bool], ...]
    new_legs: tuple[str, ...]
    out: tuple[str, ...]
    shape: tuple[int, ...]  # the data's
    new_sizes: tuple[int, ...]  # per matrix, its new leg's size

    @property
    def placed(self) -> tuple[str, ...]:
        legs = list(self.legs)
        for (position, _), new in zip(self.matrices, self.new_legs):
            legs[position] = new
        return tuple(legs)

    @property
    def permutation(self) -> tuple[int, ...]:
        placed = self.placed
        order = tuple(placed.index(leg) for leg in self.out)
        return () if order == tuple(range(len(order))) else order

    def products(self) -> tuple[tuple[bool, tuple[int, ...]], ...]:
        """Per matrix: (batched product [rows, K, I] @ [rows, I, rest], else [rows, I] @ [I, K]),
        and the shape the data is viewed as for it."""
        shape, found = list(self.shape), []
        for (position, _), new in zip(self.matrices, self.new_sizes):
            rows, size, rest = prod(shape[:position]), shape[position], prod(shape[position + 1:])
            found.append((rest != 1, (rows, size, rest) if rest != 1 else (rows, size)))
            shape[position] = new
        return tuple(found)

    @property
    def final_shape(self) -> tuple[int, ...]:
        shape = list(self.shape)
        for (position, _), new in zip(self.matrices, self.new_sizes):
            shape[position] = new
        return tuple(shape)

    def label(self) -> str:
        return f"matrix chain on legs {[self.legs[p] for p, _ in self.matrices]}"

    def then(self, following: "MatrixChain") -> Optional["MatrixChain"]:
        """One chain doing this step and then `following` (which reads this step's result).

        None where `following` contracts a leg this chain created (its order would
        matter) or holds more than one matrix.
        """
        if len(following.matrices) != 1 or following.legs != self.out:
            return None
        (position, stored_transposed), = following.matrices
        contracted = following.legs[position]
        if contracted not in self.legs or contracted in self.new_legs:
            return None
        base = self.legs.index(contracted)
        if any(p == base for p, _ in self.matrices):
            return None
        entries = sorted(zip(self.matrices + ((base, stored_transposed),), self.inputs[1:]
                             + following.inputs[1:], self.new_legs + following.new_legs,
                             self.new_sizes + following.new_sizes), key=lambda e: e[0][0])
        return MatrixChain((self.inputs[0],) + tuple(e[1] for e in entries), following.output,
                           self.legs, tuple(e[0] for e in entries), tuple(e[2] for e in entries),
                           following.out, self.shape, tuple(e[3] for e in entries))


def gram_rule(site: Site) -> Optional[Gram]:
    """Two copies of one tensor (equal signatures): positions where they share a leg are
    batch legs (kept) or contracted (summed); every other position a free leg of each
    copy, kept in the output."""
    pair = site.pair
    if pair is None or pair[0].signature != pair[1].signature:
        return None
    legs, copy_legs, output = pair[0].legs, pair[1].legs, site.out
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
    first = legs if output.index(legs[free[0]]) < output.index(copy_legs[free[0]]) else copy_legs
    free.sort(key=lambda p: output.index(first[p]))
    second = copy_legs if first is legs else legs
    order = [legs[p] for p in batch] + [first[p] for p in free] + [second[p] for p in free]
    if sorted(order) != sorted(output) or len(set(order)) != len(order):
        return None
    shape = site.shape(legs)
    size = lambda positions: prod(shape[p] for p in positions)  # noqa: E731
    output_permutation = tuple(order.index(leg) for leg in output)
    return Gram(
        (pair[0].register,), site.output,
        permutation=tuple(batch + free + contracted),
        matrix_shape=(size(batch), size(free), size(contracted)),
        result_shape=tuple(shape[p] for p in batch + free + free),
        output_permutation=() if output_permutation == tuple(range(len(output)))
        else output_permutation,
        contracted_first=(batch + contracted + free == list(range(len(legs)))
                          and size(contracted) < SYMMETRIC_MIN_INNER))


def matmul_rule(site: Site) -> Optional[Matmul]:
    """The final step, where the output legs read [batch…, M…, P…] (M and P each from one
    operand only, batch legs on both operands or expanded over): one bmm in place."""
    pair = site.pair
    if not site.final or pair is None:
        return None
    (first, second), out = pair, site.out
    if len(set(first.legs)) != len(first.legs) or len(set(second.legs)) != len(second.legs):
        return None
    legs = (set(first.legs), set(second.legs))
    contracted = [leg for leg in first.legs if leg in legs[1] and leg not in out]
    if any(leg not in out and leg not in contracted for leg in (*first.legs, *second.legs)):
        return None
    split = _split(out, legs)
    if split is None:
        return None
    batch, m_legs, p_legs, m_side = split
    left, right = (first, second) if m_side == 0 else (second, first)
    rows = site.size(tuple(batch))
    left_batch = [leg for leg in batch if leg in left.legs]
    right_batch = [leg for leg in batch if leg in right.legs]
    if left_batch not in ([], list(batch)) or right_batch not in ([], list(batch)):
        return None
    order = lambda names, seq: tuple(names.index(leg) for leg in seq)  # noqa: E731
    k = site.size(tuple(contracted))
    return Matmul(
        (left.register, right.register), site.output,
        left_order=order(left.legs, left_batch + m_legs + contracted),
        right_order=order(right.legs, right_batch + contracted + p_legs),
        left_shape=(rows, site.size(tuple(m_legs)), k),
        right_shape=(rows, k, site.size(tuple(p_legs))),
        left_expand=not left_batch and rows > 1, right_expand=not right_batch and rows > 1,
        shape=site.shape(out))


def _split(out: tuple[str, ...], legs: tuple[set, set]) -> Optional[tuple]:
    """(batch, M, P, side of M): P the longest tail of `out` from one operand only, M the
    longest run before it from the other operand only; None where either is empty."""
    def only(leg: str, side: int) -> bool:
        return leg in legs[side] and leg not in legs[1 - side]

    for p_side in (0, 1):
        p_start = len(out)
        while p_start > 0 and only(out[p_start - 1], p_side):
            p_start -= 1
        m_start = p_start
        while m_start > 0 and only(out[m_start - 1], 1 - p_side):
            m_start -= 1
        if p_start < len(out) and m_start < p_start:
            return list(out[:m_start]), list(out[m_start:p_start]), list(out[p_start:]), 1 - p_side
    return None


def matrix_rule(site: Site) -> Optional[MatrixChain]:
    """A constant two-leg matrix replacing one leg of a data operand by a new one (the
    contracted leg summed, the new leg and every other data leg kept)."""
    for matrix, data in site.orders:
        if not matrix.constant or data.constant or len(matrix.legs) != 2:
            continue
        if len(set(data.legs)) != len(data.legs):
            continue
        on_data = [leg for leg in matrix.legs if leg in data.legs]
        if len(on_data) != 1:
            continue
        contracted = on_data[0]
        new = matrix.legs[1] if matrix.legs[0] == contracted else matrix.legs[0]
        if contracted in site.out or new not in site.out or new == contracted:
            continue
        placed = tuple(new if leg == contracted else leg for leg in data.legs)
        if sorted(placed) != sorted(site.out):
            continue
        return MatrixChain((data.register, matrix.register), site.output, data.legs,
                           ((data.legs.index(contracted), matrix.legs[0] == contracted),),
                           (new,), site.out, site.shape(data.legs), (site.sizes[new],))
    return None


def with_alpha(step: Gram, factor: float) -> Gram:
    """`step` with `factor` on its product."""
    return replace(step, alpha=step.alpha * factor)
