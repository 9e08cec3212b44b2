"""Checks shared by the torch front-end: tensors, ranks, batching.

>>> import torch
>>> batched(torch.rand(3, 8), 1, "tnconv.unfold", "x")[0].shape
torch.Size([1, 3, 8])
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import argument_error

__all__ = ["require_tensor", "batched", "spatial_ndim"]


def require_tensor(operation: str, name: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise argument_error(operation, name, type(value).__name__, "a torch.Tensor")
    return value


def spatial_ndim(operation: str, name: str, x: torch.Tensor) -> int:
    """N for a batched input [N, C, *spatial]; at least one spatial dimension."""
    if x.dim() < 3:
        raise argument_error(operation, name, f"tensor of shape {tuple(x.shape)}",
                             "a tensor [N, C, *spatial] with at least one spatial dimension")
    return x.dim() - 2


def batched(x: torch.Tensor, ndim: int, operation: str, name: str) -> tuple[torch.Tensor, bool]:
    """Add a batch dimension to an unbatched [C, *spatial] input; say whether one was added."""
    require_tensor(operation, name, x)
    if x.dim() == ndim + 1:
        return x.unsqueeze(0), True
    if x.dim() != ndim + 2:
        raise argument_error(operation, name, f"tensor of shape {tuple(x.shape)}",
                             f"[N, C, *spatial] or [C, *spatial] with {ndim} spatial dims")
    return x, False
