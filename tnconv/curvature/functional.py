"""Curvature quantities with explicit hyper-parameters (no module needed).

The number of spatial dimensions is read from `x` ([N, C_in, *spatial]); the
output channels from the backpropagated tensor. Functions of the weight's
curvature take `kernel_size`; those that pull a quantity back to the input take
the `weight` (its shape gives the kernel and channels, as `torch.nn.functional`).
Hyper-parameters are those of `tnconv.conv` (padding: int, tuple, (left, right)
pairs, 'same' or 'valid'; `padding_mode` 'zeros', 'circular', 'reflect',
'replicate'), plus `transposed` and `output_padding` for a transposed layer.

>>> import torch
>>> x, grad_output = torch.rand(5, 4, 16), torch.rand(5, 6, 8)
>>> variance(x, grad_output, 3, stride=2, padding=1, groups=2).shape
torch.Size([6, 2, 3])
>>> weight = torch.rand(6, 2, 3)
>>> hessian_diagonal_input(x, weight, grad_output ** 2, stride=2, padding=1, groups=2).shape
torch.Size([5, 4, 16])
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from tnconv.curvature._run import QUANTITIES, public_name, run
from tnconv.errors import argument_error
from tnconv.nn._arguments import check_groups
from tnconv.spec.conv_spec import ConvSpec, error_context

__all__ = ["batch_l2", "sum_grad_squared", "variance", "ggn_diagonal", "ggn_gram",
           "backpropagate_sqrt_factor", "hessian_diagonal_weight", "hessian_diagonal_input"]


def _input(op: str, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise argument_error(op, "x", shape, "a tensor [N, C_in, *spatial]")
    return x


def _output_channels(op: str, name: str, given: Any, ndim: int) -> int:
    """C_out read from the backpropagated tensor ([C,] N, C_out, *output)."""
    lead = 3 if QUANTITIES[name].columns else 2
    argument = QUANTITIES[name].given
    if not isinstance(given, torch.Tensor) or given.dim() != ndim + lead:
        shape = tuple(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
        layout = "[C, N, C_out, *output]" if lead == 3 else "[N, C_out, *output]"
        raise argument_error(op, argument, shape, f"a tensor {layout} with {ndim} spatial dims")
    return given.shape[lead - 1]


def _weight_side(name: str, x: Any, given: Any, kernel_size: Any, hyper: dict,
                 dtype: Optional[torch.dtype]) -> torch.Tensor:
    """A quantity of the weight: the kernel size is given, the channels read from the tensors."""
    op = public_name(name, functional=True)
    with error_context(op):
        x = _input(op, x)
        check_groups(op, hyper["groups"])
        out_channels = _output_channels(op, name, given, x.dim() - 2)
        spec = ConvSpec(x.shape[1], out_channels, kernel_size, tuple(x.shape[2:]), **hyper)
        if spec.ndim != x.dim() - 2:
            raise argument_error(op, "kernel_size", kernel_size,
                                 f"an int or a tuple of {x.dim() - 2} ints for a "
                                 f"{x.dim() - 2}d input")
        return run(name, spec, x, given, op=op, dtype=dtype)


def _input_side(name: str, x: Any, weight: Any, given: Any, hyper: dict,
                dtype: Optional[torch.dtype]) -> torch.Tensor:
    """A quantity pulled back to the input: kernel and channels from the weight."""
    op = public_name(name, functional=True)
    with error_context(op):
        x = _input(op, x)
        groups = check_groups(op, hyper["groups"])
        ndim = x.dim() - 2
        if not isinstance(weight, torch.Tensor) or weight.dim() != ndim + 2:
            shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight)
            raise argument_error(op, "weight", shape,
                                 f"a tensor [C_out, C_in/groups, *kernel] with {ndim} kernel dims"
                                 " ([C_in, C_out/groups, *kernel] when transposed)")
        out_channels = (weight.shape[1] * groups if hyper["transposed"] else weight.shape[0])
        spec = ConvSpec(x.shape[1], out_channels, tuple(weight.shape[2:]), tuple(x.shape[2:]),
                        **hyper)
        return run(name, spec, weight, given, op=op, dtype=dtype, batch=x.shape[0])


def _hyper(stride, padding, dilation, groups, padding_mode, transposed, output_padding) -> dict:
    return dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                padding_mode=padding_mode, transposed=transposed, output_padding=output_padding)


def batch_l2(x: torch.Tensor, grad_output: torch.Tensor, kernel_size, stride=1, padding=0,
             dilation=1, groups: int = 1, padding_mode: str = "zeros", transposed: bool = False,
             output_padding=0, *, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """‖g_n‖² of each sample's weight gradient: [N]."""
    return _weight_side("batch_l2", x, grad_output, kernel_size, _hyper(
        stride, padding, dilation, groups, padding_mode, transposed, output_padding), dtype)


def sum_grad_squared(x: torch.Tensor, grad_output: torch.Tensor, kernel_size, stride=1,
                     padding=0, dilation=1, groups: int = 1, padding_mode: str = "zeros",
                     transposed: bool = False, output_padding=0, *,
                     dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Σ_n g_n², shaped as the weight."""
    return _weight_side("sum_grad_squared", x, grad_output, kernel_size, _hyper(
        stride, padding, dilation, groups, padding_mode, transposed, output_padding), dtype)


def variance(x: torch.Tensor, grad_output: torch.Tensor, kernel_size, stride=1, padding=0,
             dilation=1, groups: int = 1, padding_mode: str = "zeros", transposed: bool = False,
             output_padding=0, *, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """(1/N) Σ_n g_n² − ((1/N) Σ_n g_n)² (BackPACK's `Variance`), shaped as the weight."""
    return _weight_side("variance", x, grad_output, kernel_size, _hyper(
        stride, padding, dilation, groups, padding_mode, transposed, output_padding), dtype)


def ggn_diagonal(x: torch.Tensor, sqrt_factor: torch.Tensor, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, padding_mode: str = "zeros",
                 transposed: bool = False, output_padding=0, *,
                 dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Σ_{c,n} (J_nᵀ S[c, n])², shaped as the weight."""
    return _weight_side("ggn_diagonal", x, sqrt_factor, kernel_size, _hyper(
        stride, padding, dilation, groups, padding_mode, transposed, output_padding), dtype)


def ggn_gram(x: torch.Tensor, sqrt_factor: torch.Tensor, kernel_size, stride=1, padding=0,
             dilation=1, groups: int = 1, padding_mode: str = "zeros", transposed: bool = False,
             output_padding=0, *, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """(Jᵀ S)ᵀ (Jᵀ S): [C·N, C·N], row c·N + n."""
    return _weight_side("ggn_gram", x, sqrt_factor, kernel_size, _hyper(
        stride, padding, dilation, groups, padding_mode, transposed, output_padding), dtype)


def hessian_diagonal_weight(x: torch.Tensor, output_hessian_diagonal: torch.Tensor,
                            kernel_size, stride=1, padding=0, dilation=1, groups: int = 1,
                            padding_mode: str = "zeros", transposed: bool = False,
                            output_padding=0, *,
                            dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Σ_{n,o} h · u², shaped as the weight."""
    return _weight_side("hessian_diagonal_weight", x, output_hessian_diagonal, kernel_size,
                        _hyper(stride, padding, dilation, groups, padding_mode, transposed,
                               output_padding), dtype)


def backpropagate_sqrt_factor(x: torch.Tensor, weight: torch.Tensor, sqrt_factor: torch.Tensor,
                              stride=1, padding=0, dilation=1, groups: int = 1,
                              padding_mode: str = "zeros", transposed: bool = False,
                              output_padding=0, *,
                              dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """J_xᵀ S for every column of S: [C, N, C_in, *spatial]."""
    return _input_side("backpropagate_sqrt_factor", x, weight, sqrt_factor, _hyper(
        stride, padding, dilation, groups, padding_mode, transposed, output_padding), dtype)


def hessian_diagonal_input(x: torch.Tensor, weight: torch.Tensor,
                           output_hessian_diagonal: torch.Tensor, stride=1, padding=0,
                           dilation=1, groups: int = 1, padding_mode: str = "zeros",
                           transposed: bool = False, output_padding=0, *,
                           dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Σ_{c_out,o} h · (Σ_k W Π)², shaped as x."""
    return _input_side("hessian_diagonal_input", x, weight, output_hessian_diagonal, _hyper(
        stride, padding, dilation, groups, padding_mode, transposed, output_padding), dtype)
