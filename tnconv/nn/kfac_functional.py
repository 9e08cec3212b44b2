"""Functional KFAC factors with explicit hyper-parameters (no module needed).

The number of spatial dimensions is read from `x` ([N, C, *spatial]); the
options and conventions are those of `tnconv.kfc` / `tnconv.kfac_reduce`
(here `bias` defaults to False, as there is no module to ask).

>>> import torch
>>> x = torch.rand(5, 2, 9)
>>> kfc(x, 3, padding="same", padding_mode="circular").shape
torch.Size([1, 6, 6])
>>> kfac_reduce(x, 3, stride=2, bias=True, reduction="sum").shape
torch.Size([1, 7, 7])
>>> patches(x, 3, groups=2).shape
torch.Size([5, 2, 7, 3])
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from tnconv.errors import argument_error
from tnconv.nn.factors import factor, patch_matrix
from tnconv.spec.conv_spec import ConvSpec, error_context
from tnconv.nn._arguments import check_groups

__all__ = ["kfc", "kfac_reduce", "patches", "averaged_patches"]


def _spec(op: str, x: Any, kernel_size, stride, padding, dilation, groups, padding_mode,
          transposed, output_padding) -> ConvSpec:
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise argument_error(op, "x", shape, "a tensor [N, C, *spatial]")
    check_groups(op, groups)  # before it stands in for out_channels below
    spec = ConvSpec(x.shape[1], groups, kernel_size,
                    tuple(x.shape[2:]), stride=stride, padding=padding, dilation=dilation,
                    groups=groups, padding_mode=padding_mode, transposed=transposed,
                    output_padding=output_padding)
    if spec.ndim != x.dim() - 2:
        raise argument_error(op, "kernel_size", kernel_size,
                             f"an int or a tuple of {x.dim() - 2} ints for a "
                             f"{x.dim() - 2}d input")
    return spec


def kfc(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1,
        padding_mode: str = "zeros", transposed: bool = False, output_padding=0, *,
        reduction: str = "mean", bias: bool = False, group_average: bool = False,
        structure: str = "full", dtype: Optional[torch.dtype] = None,
        max_intermediate: Optional[int] = None, strategy: str = "auto",
        sample: Optional[Any] = None) -> torch.Tensor:
    """KFC (KFAC-expand) input factor [G, D, D] of the convolution these arguments define
    (`sample`: estimated from a fresh random subset, as `tnconv.kfc`)."""
    op = "tnconv.nn.functional.kfc"
    with error_context(op):
        spec = _spec(op, x, kernel_size, stride, padding, dilation, groups, padding_mode,
                     transposed, output_padding)
        return factor("kfc", spec, x, op=op, reduction=reduction, bias=bias,
                      group_average=group_average, structure=structure, dtype=dtype,
                      max_intermediate=max_intermediate, strategy=strategy, sample=sample)


def kfac_reduce(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1,
                groups: int = 1, padding_mode: str = "zeros", transposed: bool = False,
                output_padding=0, *, reduction: str = "mean", bias: bool = False,
                group_average: bool = False, structure: str = "full",
                dtype: Optional[torch.dtype] = None, strategy: str = "auto") -> torch.Tensor:
    """KFAC-reduce input factor [G, D, D] of the convolution these arguments define."""
    op = "tnconv.nn.functional.kfac_reduce"
    with error_context(op):
        spec = _spec(op, x, kernel_size, stride, padding, dilation, groups, padding_mode,
                     transposed, output_padding)
        return factor("kfac_reduce", spec, x, op=op, reduction=reduction, bias=bias,
                      group_average=group_average, structure=structure, dtype=dtype,
                      strategy=strategy)


def patches(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1,
            padding_mode: str = "zeros", transposed: bool = False, output_padding=0, *,
            dtype: Optional[torch.dtype] = None, strategy: str = "auto") -> torch.Tensor:
    """Patch matrix [N, G, ∏O, D]."""
    op = "tnconv.nn.functional.patches"
    with error_context(op):
        spec = _spec(op, x, kernel_size, stride, padding, dilation, groups, padding_mode,
                     transposed, output_padding)
        return patch_matrix("patches", spec, x, op=op, dtype=dtype, strategy=strategy)


def averaged_patches(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1,
                     groups: int = 1, padding_mode: str = "zeros", transposed: bool = False,
                     output_padding=0, *, dtype: Optional[torch.dtype] = None,
                     strategy: str = "auto") -> torch.Tensor:
    """Patches averaged over output positions [N, G, D]."""
    op = "tnconv.nn.functional.averaged_patches"
    with error_context(op):
        spec = _spec(op, x, kernel_size, stride, padding, dilation, groups, padding_mode,
                     transposed, output_padding)
        return patch_matrix("averaged_patches", spec, x, op=op, dtype=dtype, strategy=strategy)
