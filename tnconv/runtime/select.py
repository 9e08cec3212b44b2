"""Runtime of the select family: one `index_select` through a pattern's table of choices.

The input gets one zero appended along the selected leg (the "nothing" slot of the
table), so padding reads a true zero and no element is multiplied by 0 or 1.

>>> import torch
>>> from tnconv.spec import IndexPattern
>>> from tnconv.lower.schedule.select import PatternGather
>>> p = IndexPattern(3, 1, 1, (1, 1), input_size=4, output_size=4)
>>> x = torch.arange(8.0).reshape(2, 4)
>>> bind(PatternGather((0,), 1, p, 2, 1, (0, 1, 2)), [])([x, None])[0, :, 0].tolist()
[0.0, 0.0, 1.0]
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from tnconv.lower.schedule.select import PatternGather

__all__ = ["bind"]


def bind(step: PatternGather, registers: Sequence[Any],
         device: Any = None) -> Callable[[Sequence[Any]], torch.Tensor]:
    if not step.injective:
        return _summed(step, device)
    table = step.table()
    size = (step.pattern.shape)[step.summed]
    flat = torch.as_tensor(np.where(table < 0, size, table).reshape(-1), device=device)
    (source,), dim, kept, permutation = step.inputs, step.dim, table.shape, step.permutation

    def run(r: Sequence[Any]) -> torch.Tensor:
        x = r[source]
        padded = F.pad(x, [0, 0] * (x.dim() - 1 - dim) + [0, 1])
        picked = padded.index_select(dim, flat)
        shape = picked.shape[:dim] + kept + picked.shape[dim + 1:]
        return picked.view(shape).permute(permutation)

    return run


def _summed(step: PatternGather, device: Any) -> Callable[[Sequence[Any]], torch.Tensor]:
    """Several values for one place: each linked value added onto its place."""
    sources, places = (torch.as_tensor(a, device=device) for a in step.pairs())
    kept = tuple(n for axis, n in enumerate(step.pattern.shape) if axis != step.summed)
    (source,), dim, permutation = step.inputs, step.dim, step.permutation

    def run(r: Sequence[Any]) -> torch.Tensor:
        x = r[source]
        shape = x.shape[:dim] + (kept[0] * kept[1],) + x.shape[dim + 1:]
        out = x.new_zeros(shape).index_add_(dim, places, x.index_select(dim, sources))
        return out.view(x.shape[:dim] + kept + x.shape[dim + 1:]).permute(permutation)

    return run
