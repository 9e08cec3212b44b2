"""Runtime of the einsum family: one `torch.einsum` call.

>>> import torch
>>> from tnconv.lower.schedule.einsum import Einsum
>>> run = bind(Einsum((0, 1), 2, "ab,bc->ac"), [])
>>> a, b = torch.rand(2, 3), torch.rand(3, 4)
>>> torch.allclose(run([a, b, None]), a @ b)
True
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from tnconv.lower.schedule.einsum import Einsum

__all__ = ["bind"]


def bind(step: Einsum, registers: Sequence[Any], device: Any = None) -> Callable[[Sequence[Any]], torch.Tensor]:
    """registers -> torch.einsum(step.equation, *inputs)."""
    equation, inputs = step.equation, step.inputs
    if len(inputs) == 2:
        first, second = inputs
        return lambda r: torch.einsum(equation, r[first], r[second])
    return lambda r: torch.einsum(equation, *[r[i] for i in inputs])
