"""Brute-force references for the curvature tests: torch.func on torch's own convolution.

The layer is torch's convolution after an explicit `F.pad` (every padding mode,
asymmetric pairs) or torch's transposed convolution; per-sample gradients come
from `torch.func.vmap(torch.func.grad(...))`, Jacobians from `torch.func.jacrev`,
Hessians from `torch.func.hessian`. Nothing here uses tnconv's networks.
"""

from __future__ import annotations

from math import prod

import torch
import torch.nn.functional as F

import tnconv
from tests.helpers import rand
from tests.references import torch_conv

_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def spec_of(params: dict) -> tnconv.ConvSpec:
    """The `ConvSpec` of `tests.strategies.conv_params`' keyword arguments."""
    return tnconv.ConvSpec(params["in_channels"], params["out_channels"], params["kernel_size"],
                           params["input_shape"][2:], stride=params["stride"],
                           padding=params["padding"], dilation=params["dilation"],
                           groups=params["groups"], padding_mode=params["padding_mode"])


def hyper(spec: tnconv.ConvSpec) -> dict:
    """The functional forms' hyper-parameters of `spec` (padding as resolved pairs)."""
    extra = dict(transposed=True, output_padding=spec.output_padding) if spec.transposed else {}
    return dict(stride=spec.stride, padding=spec.padding, dilation=spec.dilation,
                groups=spec.groups, padding_mode=spec.padding_mode, **extra)


def layer(spec: tnconv.ConvSpec):
    """y = layer(x, w): torch's (transposed) convolution for `spec`."""
    if spec.transposed:
        return lambda x, w: _CONV_T[spec.ndim](
            x, w, stride=spec.stride, padding=[p for p, _ in spec.padding],
            output_padding=spec.output_padding, groups=spec.groups, dilation=spec.dilation)
    return lambda x, w: torch_conv(x, w, spec.stride, spec.padding, spec.dilation, spec.groups,
                                   spec.padding_mode)


def tensors(spec: tnconv.ConvSpec, batch: int, columns: int = 0) -> tuple[torch.Tensor, ...]:
    """x, w and a random tensor laid out as the output (with `columns` leading columns)."""
    x = rand(batch, spec.in_channels, *spec.input_size)
    w = rand(*spec.weight_shape)
    lead = (columns,) if columns else ()
    return x, w, rand(*lead, batch, spec.out_channels, *spec.output_size)


def per_sample_gradients(spec: tnconv.ConvSpec, x: torch.Tensor, w: torch.Tensor,
                         v: torch.Tensor) -> torch.Tensor:
    """g[n] = ∂/∂w ⟨layer(x_n, w), v_n⟩, by vmap(grad): [N, *w]."""
    f = layer(spec)

    def sample_loss(w, xn, vn):
        return (f(xn[None], w) * vn[None]).sum()

    return torch.func.vmap(torch.func.grad(sample_loss), in_dims=(None, 0, 0))(w, x, v)


def weight_jacobian(spec: tnconv.ConvSpec, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """∂ layer(x, w) / ∂w by jacrev, as [N, M, W] (M output entries per sample, W weights)."""
    jac = torch.func.jacrev(layer(spec), argnums=1)(x, w)
    return jac.reshape(x.shape[0], -1, w.numel())


def input_jacobian(spec: tnconv.ConvSpec, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-sample ∂ layer(x_n, w) / ∂x_n by jacrev: [N, M, D] (D input entries per sample)."""
    f = layer(spec)
    jac = torch.func.vmap(torch.func.jacrev(lambda xn: f(xn[None], w)[0]))(x)
    return jac.reshape(x.shape[0], -1, prod(x.shape[1:]))

