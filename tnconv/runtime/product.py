"""Runtime of the product family: Gram products, matmuls in the result's layout, chains.

A large Gram product computes the blocks on and above the diagonal only and mirrors
them (it is symmetric); a chain's expanded matrices are laid out once, when the step
is bound (a per-call expand and transpose cost 7 and 5 µs of a 40 µs KFAC-reduce).

>>> import torch
>>> from tnconv.lower.schedule.product import Gram
>>> step = Gram((0,), 1, (0, 1, 2), (1, 3, 4), (3, 3), ())
>>> u = torch.rand(1, 3, 4, dtype=torch.float64)
>>> torch.allclose(bind(step, [u, None])([u, None]), u[0] @ u[0].T)
True
"""

from __future__ import annotations

from math import prod
from typing import Any, Callable, Optional, Sequence

import torch

from tnconv.lower.schedule.product import Gram, Matmul, MatrixChain

__all__ = ["bind", "add_symmetric_product", "mirror_upper"]

Run = Callable[[Sequence[Any]], torch.Tensor]
#: Target rows per block of the symmetric product (smaller blocks lose GEMM speed).
_BLOCK_ROWS = 128


def bind(step: Any, registers: Sequence[Any], device: Any = None) -> Run:
    """The call of a `Gram`, `Matmul` or `MatrixChain` step."""
    if isinstance(step, Gram):
        return _gram(step)
    if isinstance(step, Matmul):
        return _matmul(step)
    return _chain(step, registers)


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


def _gram(step: Gram) -> Run:
    (source,), (batch, free, inner) = step.inputs, step.matrix_shape
    alpha, symmetric = step.alpha, step.symmetric

    def run(r: Sequence[Any]) -> torch.Tensor:
        if step.contracted_first:
            a = r[source].reshape(batch, inner, free).transpose(1, 2)
        else:
            a = r[source].permute(step.permutation).reshape(step.matrix_shape)
        if not symmetric:  # a thin product: one bmm is faster
            if alpha == 1:
                product = torch.bmm(a, a.transpose(1, 2))
            else:  # beta=0: the empty input is never read
                product = torch.baddbmm(a.new_empty(batch, free, free), a, a.transpose(1, 2),
                                        beta=0, alpha=alpha)
        else:
            product = a.new_zeros(batch, free, free)
            add_symmetric_product(product, a, alpha)
            mirror_upper(product)
        product = product.reshape(step.result_shape)
        return product.permute(step.output_permutation) if step.output_permutation else product

    return run


def _side(t: torch.Tensor, order: tuple[int, ...], shape: tuple[int, int, int],
          expand: bool) -> torch.Tensor:
    t = t.permute(order)
    if expand:
        return _matrix(t, shape[1:]).expand(shape)
    return _matrix(t, shape)


def _matrix(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """`t` ([batch…, rows…, columns…]) as a matrix (batch) of `shape`: a view where one
    exists, else a copy that streams: row-major, or column-major (transposed back) where
    the last row leg streams better than the last column leg (`_run`). The windows of
    ResNet's 3x3 weight VJP as [n·o, c·k], copied with the tap leg innermost, took 24 ms
    against 2 ms with o innermost (7.2 M elements); bmm reads either layout."""
    try:
        return t.view(shape)
    except RuntimeError:
        pass
    sizes = tuple(t.shape)
    lead, rows = _cut(sizes, prod(shape[:-2])), None
    if lead is not None:
        rows = _cut(sizes, prod(shape[:-1]), lead)
    if rows is None or not lead < rows < t.dim() or _run(t, rows - 1) <= _run(t, t.dim() - 1):
        return t.reshape(shape)
    columns_first = (*range(lead), *range(rows, t.dim()), *range(lead, rows))
    return t.permute(columns_first).reshape(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)


def _run(t: torch.Tensor, d: int) -> float:
    """How well a copy with leg d innermost streams: its length over its stride (a run of
    3 at unit stride reads worse than 28 elements at stride 2)."""
    return t.shape[d] / max(1, abs(t.stride(d))) if t.shape[d] > 1 else 0.0


def _cut(sizes: tuple[int, ...], size: int, start: int = 0) -> Optional[int]:
    """The first d >= start where the legs before d hold `size` elements (None if none)."""
    for d in range(start, len(sizes) + 1):
        if prod(sizes[:d]) == size:
            return d
    return None


def _matmul(step: Matmul) -> Run:
    left, right = step.inputs

    def run(r: Sequence[Any]) -> torch.Tensor:
        a = _side(r[left], step.left_order, step.left_shape, step.left_expand)
        b = _side(r[right], step.right_order, step.right_shape, step.right_expand)
        return torch.bmm(a, b).view(step.shape)

    return run


def _chain(step: MatrixChain, registers: Sequence[Any]) -> Run:
    """The chain with its matrices (constants, in `registers`) expanded or transposed once;
    bmm on the expanded matrix, since matmul's broadcasting dispatches ~15 ops a call. A
    matrix that is one value almost everywhere (KFAC-reduce's Σ_o Π: each tap reads every
    pixel but a few at the borders) is applied as that value times the leg's sum plus a
    product over the few columns that differ (`_mostly_constant`)."""
    products = []
    for register, (position, stored_transposed), (batched, shape) in zip(
            step.inputs[1:], step.matrices, step.products()):
        m = registers[register]
        m = m.T if stored_transposed else m  # [K, I]
        products.append((_sum_and_border(m, batched, shape) or
                         _product(m, batched, shape)))
    data, final, permutation = step.inputs[0], step.final_shape, step.permutation

    def run(r: Sequence[Any]) -> torch.Tensor:
        t = r[data]
        for apply in products:
            t = apply(t)
        t = t.reshape(final)
        return t.permute(permutation) if permutation else t

    return run


def _product(m: torch.Tensor, batched: bool, shape: tuple[int, ...]) -> Callable:
    if batched:
        expanded = m.expand(shape[0], *m.shape)
        return lambda t: torch.bmm(expanded, t.reshape(shape))
    transposed = m.T.contiguous()
    return lambda t: torch.mm(t.reshape(shape), transposed)


#: A chain matrix differing from one value in at most this share of its columns, and in at
#: most this many entries (one small add each: a 31-tap 1d kernel's border has 480), is
#: applied as a sum plus its border.
_BORDER_SHARE = 0.25
_BORDER_ENTRIES = 16


def _sum_and_border(m: torch.Tensor, batched: bool,
                    shape: tuple[int, ...]) -> Optional[Callable]:
    """For m = v·1 + B, B nonzero in few columns: t's leg summed times v, then each
    nonzero B[k, i] times t's column i added to row k (one pass over t instead of a
    product with K columns). None where m is no such matrix."""
    if m.device.type == "meta" or m.numel() == 0:
        return None
    values, counts = torch.unique(m, return_counts=True)
    v = values[counts.argmax()]
    if v == 0 or bool((m != v).any(0).sum() > _BORDER_SHARE * m.shape[1]):
        return None
    border = [(int(k), int(i), float(m[k, i] - v)) for k, i in (m != v).nonzero().tolist()]
    if len(border) > _BORDER_ENTRIES:
        return None
    size, scale = m.shape[0], float(v)
    three = shape if batched else (*shape, 1)  # [rows, I, rest]

    def apply(t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(three)
        out = t.sum(1, keepdim=True).mul_(scale).expand(-1, size, -1).contiguous()
        for k, i, coefficient in border:
            out[:, k].add_(t[:, i], alpha=coefficient)
        return out if batched else out.squeeze(-1)
    return apply
