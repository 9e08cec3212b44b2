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
from tnconv.nn.validate import floating, kernel_for, shape_fields

__all__ = ["kfc", "kfac_reduce", "patches", "averaged_patches"]


def _spec(op: str, x: Any, kernel_size, stride, padding, dilation, groups, padding_mode,
          transposed, output_padding) -> ConvSpec:
    floating(op, ("x", x))
    if x.dim() < 3:
        raise argument_error(op, "x", f"tensor of shape {tuple(x.shape)}",
                             "a tensor [N, C, *spatial]")
    kernel_for(op, kernel_size, x)
    check_groups(op, groups)  # before it stands in for out_channels below
    fields = {**shape_fields("x", x, "in_channels", "input_size"),
              "out_channels": ("groups", groups)}
    with error_context(op, fields):
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
        max_intermediate: Optional[int] = None, strategy: str = "auto") -> torch.Tensor:
    """KFC (KFAC-expand) input factor [G, D, D] of the convolution these arguments define.

    Options and conventions as `tnconv.kfc` (`reduction` "mean", "batch" or "sum").

    Examples:
        >>> import torch
        >>> x = torch.rand(4, 2, 6, dtype=torch.float64)
        >>> u = torch.nn.functional.unfold(x.unsqueeze(-1), (3, 1))     # [N, D, ∏O]
        >>> torch.allclose(kfc(x, 3)[0], torch.einsum("ndo,neo->de", u, u) / (4 * 4))
        True
    """
    op = "tnconv.nn.functional.kfc"
    with error_context(op):
        spec = _spec(op, x, kernel_size, stride, padding, dilation, groups, padding_mode,
                     transposed, output_padding)
        return factor("kfc", spec, x, op=op, reduction=reduction, bias=bias,
                      group_average=group_average, structure=structure, dtype=dtype,
                      max_intermediate=max_intermediate, strategy=strategy)


def kfac_reduce(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1,
                groups: int = 1, padding_mode: str = "zeros", transposed: bool = False,
                output_padding=0, *, reduction: str = "mean", bias: bool = False,
                group_average: bool = False, structure: str = "full",
                dtype: Optional[torch.dtype] = None, strategy: str = "auto") -> torch.Tensor:
    """KFAC-reduce input factor [G, D, D] of the convolution these arguments define.

    Options and conventions as `tnconv.kfac_reduce` (`reduction` "mean" or "sum").

    Examples:
        >>> import torch
        >>> x = torch.rand(4, 2, 6, dtype=torch.float64)
        >>> u = torch.nn.functional.unfold(x.unsqueeze(-1), (3, 1)).mean(2)   # [N, D]
        >>> torch.allclose(kfac_reduce(x, 3)[0], u.T @ u / 4)
        True
    """
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
    """Patch matrix [N, G, ∏O, D]: the unfolded input per group, one row per output position.

    Examples:
        >>> import torch
        >>> patches(torch.rand(5, 4, 7, 7), 3, padding=1, groups=2).shape
        torch.Size([5, 2, 49, 18])
    """
    op = "tnconv.nn.functional.patches"
    with error_context(op):
        spec = _spec(op, x, kernel_size, stride, padding, dilation, groups, padding_mode,
                     transposed, output_padding)
        return patch_matrix("patches", spec, x, op=op, dtype=dtype, strategy=strategy)


def averaged_patches(x: torch.Tensor, kernel_size, stride=1, padding=0, dilation=1,
                     groups: int = 1, padding_mode: str = "zeros", transposed: bool = False,
                     output_padding=0, *, dtype: Optional[torch.dtype] = None,
                     strategy: str = "auto") -> torch.Tensor:
    """Patches averaged over output positions [N, G, D].

    Examples:
        >>> import torch
        >>> x = torch.rand(5, 4, 7, 7)
        >>> torch.allclose(averaged_patches(x, 3, padding=1, groups=2),
        ...                patches(x, 3, padding=1, groups=2).mean(2), atol=1e-6)
        True
    """
    op = "tnconv.nn.functional.averaged_patches"
    with error_context(op):
        spec = _spec(op, x, kernel_size, stride, padding, dilation, groups, padding_mode,
                     transposed, output_padding)
        return patch_matrix("averaged_patches", spec, x, op=op, dtype=dtype, strategy=strategy)
