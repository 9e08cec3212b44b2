"""Checks shared by the torch front-end: tensors, ranks, batching.

>>> import torch
>>> batched(torch.rand(3, 8), 1, "tnconv.unfold", "x")[0].shape
torch.Size([1, 3, 8])
"""

from __future__ import annotations

from typing import Any

import torch

from tnconv.errors import argument_error, positive_int

__all__ = ["require_tensor", "batched", "spatial_ndim", "check_groups", "same_dtype"]


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


def check_groups(operation: str, groups: Any) -> int:
    """`groups` itself, after checking it is a positive int (before any channel check
    that divides by it, so that a bad groups is reported as groups)."""
    return positive_int(operation, "groups", groups)


def same_dtype(operation: str, *tensors: tuple[str, torch.Tensor]) -> None:
    """The named tensors share one real floating-point dtype, as torch's convolutions need
    (torch would fail with "expected scalar type" or "not implemented" from inside)."""
    (first_name, first), *others = tensors
    if not first.dtype.is_floating_point:
        raise argument_error(operation, first_name, f"tensor of dtype {first.dtype}",
                             "a real floating-point tensor")
    for name, tensor in others:
        if tensor.dtype != first.dtype:
            raise argument_error(operation, name, f"tensor of dtype {tensor.dtype}",
                                 f"{first.dtype}, the dtype of {first_name}")
