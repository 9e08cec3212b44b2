"""Curvature quantities of a torch conv layer: the module forms.

`conv` is a `torch.nn.Conv{1,2,3}d` or `ConvTranspose{1,2,3}d` (every
hyper-parameter, `padding_mode` included, is read from it), `x` its batched
input [N, C_in, *spatial], and the backpropagated quantity is laid out as the
layer's output: `grad_output` and `output_hessian_diagonal` [N, C_out, *output],
`sqrt_factor` [C, N, C_out, *output]. See `tnconv.curvature` for the conventions.

>>> import torch
>>> conv = torch.nn.Conv2d(3, 4, 3, padding=1, groups=1)
>>> x, grad_output = torch.rand(5, 3, 8, 8), torch.rand(5, 4, 8, 8)
>>> batch_l2(conv, x, grad_output).shape, sum_grad_squared(conv, x, grad_output).shape
(torch.Size([5]), torch.Size([4, 3, 3, 3]))
>>> sqrt_factor = torch.rand(10, 5, 4, 8, 8)             # 10 classes
>>> ggn_gram(conv, x, sqrt_factor).shape
torch.Size([50, 50])
>>> backpropagate_sqrt_factor(conv, x, sqrt_factor).shape
torch.Size([10, 5, 3, 8, 8])
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from tnconv.errors import argument_error
from tnconv.curvature._run import QUANTITIES, public_name, run
from tnconv.nn.kfac import module_spec
from tnconv.spec.conv_spec import error_context

__all__ = ["batch_l2", "sum_grad_squared", "variance", "ggn_diagonal", "ggn_gram",
           "backpropagate_sqrt_factor", "hessian_diagonal_weight", "hessian_diagonal_input"]


def _layer(name: str, conv: Any, x: Any, given: Any, dtype: Optional[torch.dtype]) -> torch.Tensor:
    op = public_name(name, functional=False)
    with error_context(op):
        spec, _ = module_spec(op, conv, x)  # cached on the module's hyper-parameters
        if x.dim() != spec.ndim + 2:
            raise argument_error(op, "x", f"tensor of shape {tuple(x.shape)}",
                                 f"a batched input [N, C_in, *spatial] with {spec.ndim} "
                                 "spatial dims")
        first = conv.weight if QUANTITIES[name].first == "weight" else x
        return run(name, spec, first, given, op=op, dtype=dtype, batch=x.shape[0])


def batch_l2(conv: Any, x: torch.Tensor, grad_output: torch.Tensor, *,
             dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """‖g_n‖² of each sample's weight gradient g_n (from `grad_output`): [N]."""
    return _layer("batch_l2", conv, x, grad_output, dtype)


def sum_grad_squared(conv: Any, x: torch.Tensor, grad_output: torch.Tensor, *,
                     dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Σ_n g_n² (elementwise), shaped as the weight."""
    return _layer("sum_grad_squared", conv, x, grad_output, dtype)


def variance(conv: Any, x: torch.Tensor, grad_output: torch.Tensor, *,
             dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """(1/N) Σ_n g_n² − ((1/N) Σ_n g_n)² (BackPACK's `Variance`), shaped as the weight."""
    return _layer("variance", conv, x, grad_output, dtype)


def ggn_diagonal(conv: Any, x: torch.Tensor, sqrt_factor: torch.Tensor, *,
                 dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Diagonal of the weight's GGN Σ_{c,n} (J_nᵀ S[c, n])², shaped as the weight."""
    return _layer("ggn_diagonal", conv, x, sqrt_factor, dtype)


def ggn_gram(conv: Any, x: torch.Tensor, sqrt_factor: torch.Tensor, *,
             dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The weight's GGN Gram matrix (Jᵀ S)ᵀ (Jᵀ S): [C·N, C·N], row c·N + n."""
    return _layer("ggn_gram", conv, x, sqrt_factor, dtype)


def backpropagate_sqrt_factor(conv: Any, x: torch.Tensor, sqrt_factor: torch.Tensor, *,
                              dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """The sqrt factor pulled back to the layer's input, J_xᵀ S: [C, N, C_in, *spatial]."""
    return _layer("backpropagate_sqrt_factor", conv, x, sqrt_factor, dtype)


def hessian_diagonal_weight(conv: Any, x: torch.Tensor, output_hessian_diagonal: torch.Tensor,
                            *, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Hessian diagonal of the weight from that of the output: Σ_{n,o} h · u², as the weight."""
    return _layer("hessian_diagonal_weight", conv, x, output_hessian_diagonal, dtype)


def hessian_diagonal_input(conv: Any, x: torch.Tensor, output_hessian_diagonal: torch.Tensor,
                           *, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """Hessian diagonal of the input from that of the output: Σ h · J², as x."""
    return _layer("hessian_diagonal_input", conv, x, output_hessian_diagonal, dtype)
