"""Fold steps: a scattering index pattern applied without building it.

A contraction step R[…, i] = Σ_{k,o} Π[k, o, i] Y[…, o, k], where an index
pattern meets one data operand that holds both its o and k legs, is the
scatter-add of `torch.nn.functional.fold`: each (o, k) entry of Y lands on at
most one i. As an einsum it needs the dense [K, O, I] pattern (2 GiB for the
input VJP of a 16,000-sample 1d layer) and O·I·K multiply-adds per row; as a
fold it reads Y once: with zero padding one strided in-place add per tap, with
the other padding modes one `index_add_`. Lowering marks such steps
(`tnconv.lower.program.find_folds`), the cost model prices them as one pass over Y,
and execution runs them as `FoldStep`s, so their patterns are never built.

>>> import torch
>>> from tnconv.spec.index_pattern import IndexPattern
>>> p = IndexPattern(3, 2, 1, (1, 1), input_size=7, output_size=4)
>>> y = torch.rand(2, 4, 3, dtype=torch.float64)         # [n, o, k]
>>> step = fold_step(0, ("n", "o", "k"), p, ("k", "o", "i"), ("n", "i"), torch.device("cpu"))
>>> dense = torch.as_tensor(p.to_numpy())                 # [k, o, i]
>>> torch.allclose(step([y]), torch.einsum("nok,koi->ni", y, dense))
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from tnconv.spec.index_pattern import IndexPattern

__all__ = ["FoldStep", "fold_step", "is_fold"]


def is_fold(pattern_legs: Sequence[str], value: Any, shape: Sequence[int],
            other_legs: Sequence[str], out: Sequence[str]) -> bool:
    """Whether contracting the pattern (`pattern_legs` = k, o, i) with `other_legs` into `out` folds.

    The pattern's k and o legs are both on the other operand and summed here,
    its i leg is kept, and the other operand's remaining legs pass through.
    """
    if not isinstance(value, IndexPattern) or len(pattern_legs) != 3 \
            or tuple(shape) != value.shape:
        return False
    k, o, i = pattern_legs
    if k not in other_legs or o not in other_legs or i in other_legs:
        return False
    kept = [leg for leg in other_legs if leg not in (k, o)] + [i]
    return sorted(kept) == sorted(out) and len(set(kept)) == len(kept)


@dataclass(frozen=True, eq=False)
class FoldStep:
    """Scatter-add of one data register through an index pattern (see the module docstring)."""

    inputs: tuple[int]
    pattern: IndexPattern
    permutation: tuple[int, ...]  # data legs -> (rest…, o, k)
    out_permutation: tuple[int, ...]  # (rest…, i) -> the step's output legs
    index: Optional[Any] = None  # flat (o, k) -> i, for the non-zero padding modes

    def __call__(self, registers: Sequence[Any]) -> Any:
        y = registers[self.inputs[0]].permute(self.permutation)
        p, rest = self.pattern, y.shape[:-2]
        if self.index is not None:  # one slot past the end takes the padding's entries
            res = y.new_zeros(*rest, p.input_size + 1)
            res.index_add_(-1, self.index, y.reshape(*rest, -1))
            res = res[..., :p.input_size]
        else:
            left = p.padding[0]
            reach = p.stride * (p.output_size - 1) + 1
            span = max(reach + p.dilation * (p.kernel_size - 1), left + p.input_size)
            res = y.new_zeros(*rest, span)
            for k in range(p.kernel_size):
                start = k * p.dilation
                res[..., start:start + reach:p.stride] += y.select(-1, k)
            res = res[..., left:left + p.input_size]
        return res.permute(self.out_permutation)


def fold_step(register: int, legs: tuple[str, ...], pattern: IndexPattern,
              pattern_legs: tuple[str, ...], out: tuple[str, ...], device: Any) -> FoldStep:
    """The `FoldStep` of a step that `is_fold` accepted (`legs`: the data register's)."""
    import torch

    k, o, i = pattern_legs
    rest = [leg for leg in legs if leg not in (k, o)]
    permutation = tuple(legs.index(leg) for leg in rest + [o, k])
    out_permutation = tuple((rest + [i]).index(leg) for leg in out)
    index = None
    if pattern.mode != "zeros":
        src = pattern.source_indices()  # [K, O], -1 where the padding is read
        flat = np.where(src < 0, pattern.input_size, src).T.reshape(-1)
        index = torch.as_tensor(flat, device=device)
    return FoldStep((register,), pattern, permutation, out_permutation, index)
