"""Shape checks shared by the torch front-end: ranks, batching, groups.

The dtype and device policy lives in `tnconv.nn.validate`; `require_tensor`
and `same_dtype` are its checks under the names the front-end has used.

>>> import torch
>>> batched(torch.rand(3, 8), 1, "tnconv.unfold", "x")[0].shape
torch.Size([1, 3, 8])
"""

from __future__ import annotations

from typing import Any

import torch

from tnconv.errors import argument_error, positive_int
from tnconv.nn.validate import floating, require_tensor
from tnconv.spec.conv_spec import MAX_SIZE

__all__ = ["require_tensor", "batched", "spatial_ndim", "check_groups", "same_dtype"]


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
    allowed = f"a positive int (at most {MAX_SIZE})"
    if isinstance(groups, int) and groups > MAX_SIZE:
        raise argument_error(operation, "groups", groups, allowed)
    return positive_int(operation, "groups", groups, allowed)


def same_dtype(operation: str, *tensors: tuple[str, torch.Tensor]) -> None:
    """The named tensors share one real floating-point dtype and one device
    (`tnconv.nn.validate.floating`)."""
    floating(operation, *tensors)
