"""Runtime of the scatter family: a fold (scatter-add) through an index pattern.

With zero padding, one strided in-place add per tap (non-overlapping patches, K = S:
one strided copy per tap into memory laid out as the data's, and a crop; no zeros and
no adds); with the other padding modes one `index_add_` (the flat (o, k) -> i table is
built once, when the step is bound).

>>> import torch
>>> from tnconv.spec import IndexPattern
>>> from tnconv.lower.schedule.scatter import Fold
>>> p = IndexPattern(3, 2, 1, (1, 1), input_size=7, output_size=4)
>>> y = torch.rand(2, 4, 3, dtype=torch.float64)         # [n, o, k]
>>> run = bind(Fold((0,), 1, p, (0, 1, 2), (0, 1)), [], torch.device("cpu"))
>>> dense = torch.as_tensor(p.to_numpy())                 # [k, o, i]
>>> torch.allclose(run([y, None]), torch.einsum("nok,koi->ni", y, dense))
True
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from tnconv.lower.schedule.scatter import Fold

__all__ = ["bind"]


def bind(step: Fold, registers: Sequence[Any], device: Any = None) -> Callable[[Sequence[Any]], Any]:
    (source,), p = step.inputs, step.pattern
    permutation, out_permutation = step.permutation, step.out_permutation
    index = None
    if p.mode != "zeros":  # one slot past the end takes the padding's entries
        src = p.source_indices()  # [K, O], -1 where the padding is read
        flat = np.where(src < 0, p.input_size, src).T.reshape(-1)
        index = torch.as_tensor(flat, device=device)
    left = p.padding[0]
    reach = p.stride * (p.output_size - 1) + 1
    span = max(reach + p.dilation * (p.kernel_size - 1), left + p.input_size)

    interleave = p.mode == "zeros" and p.kernel_size == p.stride and p.dilation == 1
    flat = p.output_size * p.kernel_size
    cropped = 0 <= left and left + p.input_size <= flat

    def run(r: Sequence[Any]) -> torch.Tensor:
        y = r[source].permute(permutation)
        rest = y.shape[:-2]
        if interleave:  # non-overlapping patches: pixel o·K + k − left, one copy per tap
            res = _like(y, flat)
            for k in range(p.kernel_size):
                res[..., k::p.kernel_size].copy_(y.select(-1, k))
            res = (res[..., left:left + p.input_size] if cropped else
                   torch.nn.functional.pad(res, (-left, left + p.input_size - flat)))
        elif index is not None:
            res = y.new_zeros(*rest, p.input_size + 1)
            res.index_add_(-1, index, y.reshape(*rest, -1))
            res = res[..., :p.input_size]
        else:
            res = y.new_zeros(*rest, span)
            for k in range(p.kernel_size):
                start = k * p.dilation
                res[..., start:start + reach:p.stride] += y.select(-1, k)
            res = res[..., left:left + p.input_size]
        return res.permute(out_permutation)

    return run


def _like(y: torch.Tensor, size: int) -> torch.Tensor:
    """An empty (rest…, i) tensor of i size `size`, laid out in memory as y's (rest…, o, k)
    with i where o is: each tap's copy then reads and writes in the same order (a fresh
    contiguous result made it a transposing copy wherever y's o leg is not innermost)."""
    order = sorted(range(y.dim() - 1), key=lambda d: -y.stride(d))  # y's memory order, no k
    shape = list(y.shape[:-1])
    shape[-1] = size
    buffer = y.new_empty([shape[d] for d in order])
    return buffer.permute([order.index(d) for d in range(len(order))])
