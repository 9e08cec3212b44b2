"""Transposed convolution, its VJPs and the transposed-convolution unfold."""

from __future__ import annotations

from math import prod

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tnconv
from tnconv.errors import TNConvError
from tests.helpers import DEVICE, assert_close, rand
from tests.test_autodiff import STRATEGIES, conv_reference

_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@st.composite
def transposed_specs(draw, ndim: int, groups=(1, 2), max_kernel: int = 3) -> tnconv.ConvSpec:
    g = draw(st.sampled_from(groups))
    kernel = [draw(st.integers(1, max_kernel)) for _ in range(ndim)]
    dilation = [draw(st.integers(1, 2)) for _ in range(ndim)]
    stride = [draw(st.integers(1, 3)) for _ in range(ndim)]
    output_padding = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    padding = [draw(st.integers(0, 2)) for _ in range(ndim)]
    sizes = [draw(st.integers(1, 4)) for _ in range(ndim)]
    try:
        return tnconv.ConvSpec(
            g * draw(st.integers(1, 2)), g * draw(st.integers(1, 2)), tuple(kernel),
            tuple(sizes), stride=tuple(stride), padding=tuple(padding),
            dilation=tuple(dilation), groups=g, transposed=True,
            output_padding=tuple(output_padding))
    except TNConvError:   # padding leaves no output
        assume(False)


def kwargs(spec: tnconv.ConvSpec) -> dict:
    return dict(stride=spec.stride, padding=tuple(p for p, _ in spec.padding),
                output_padding=spec.output_padding, groups=spec.groups, dilation=spec.dilation)


def transpose_reference(x: torch.Tensor, w: torch.Tensor, spec: tnconv.ConvSpec) -> torch.Tensor:
    """torch's kernel for N <= 3; beyond, the input VJP of the reference convolution."""
    if spec.ndim <= 3:
        return _CONV_T[spec.ndim](x, w, **kwargs(spec))
    forward = spec.replace(transposed=False, output_padding=0, input_size=spec.output_size,
                           in_channels=spec.out_channels, out_channels=spec.in_channels)
    z = torch.zeros(x.shape[0], forward.in_channels, *forward.input_size, dtype=x.dtype,
                    device=x.device, requires_grad=True)
    y = conv_reference(z, w, forward)
    for d, size in enumerate(spec.input_size):   # output_padding >= stride: crop the excess
        y = y.narrow(d + 2, 0, size)
    return torch.autograd.grad(y, z, x, create_graph=True)[0]


def tensors(spec: tnconv.ConvSpec, batch: int = 2):
    return (rand(batch, spec.in_channels, *spec.input_size), rand(*spec.weight_shape),
            rand(batch, spec.out_channels, *spec.output_size))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
@given(data=st.data())
def test_conv_transpose_and_its_vjps_match_torch(ndim, strategy, data):
    spec = data.draw(transposed_specs(ndim))
    x, w, g = tensors(spec)
    kw = dict(kwargs(spec), strategy=strategy)
    assert_close(tnconv.conv_transpose(x, w, **kw), transpose_reference(x, w, spec))
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    gx, gw = torch.autograd.grad(transpose_reference(xr, wr, spec), (xr, wr), g)
    assert_close(tnconv.conv_transpose_input_vjp(x.shape, w, g, **kw), gx)
    assert_close(tnconv.conv_transpose_weight_vjp(x, w.shape, g, **kw), gw)
    per_sample = tnconv.conv_transpose_weight_vjp(x, w.shape, g, per_sample=True, **kw)
    assert_close(per_sample.sum(0), gw)


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=5)
@given(spec=transposed_specs(4, groups=(1,), max_kernel=2))
def test_4d_transposed_against_reference(strategy, spec):
    x, w, g = tensors(spec, batch=1)
    kw = dict(kwargs(spec), strategy=strategy)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = transpose_reference(xr, wr, spec)
    assert_close(tnconv.conv_transpose(x, w, **kw), y.detach())
    gx, gw = torch.autograd.grad(y, (xr, wr), g)
    assert_close(tnconv.conv_transpose_input_vjp(x.shape, w, g, **kw), gx)
    assert_close(tnconv.conv_transpose_weight_vjp(x, w.shape, g, **kw), gw)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
@settings(max_examples=8)
@given(data=st.data())
def test_conv_transpose_is_weight_matrix_times_unfold_transpose(ndim, strategy, data):
    spec = data.draw(transposed_specs(ndim, groups=(1,), max_kernel=2 if ndim == 4 else 3))
    x, w, _ = tensors(spec)
    kw = kwargs(spec)
    del kw["groups"]
    u = tnconv.unfold_transpose(x, spec.kernel_size, **kw, strategy=strategy)
    assert u.shape == (2, spec.in_channels * prod(spec.kernel_size), prod(spec.output_size))
    matrix = w.transpose(0, 1).reshape(spec.out_channels, -1)
    y = (matrix @ u).reshape(2, spec.out_channels, *spec.output_size)
    assert_close(y, tnconv.conv_transpose(x, w, **kw, strategy=strategy))


def test_bias_unbatched_and_from_module():
    module = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                                      dtype=torch.float64, device=DEVICE)
    x = rand(4, 5, 5)
    y = tnconv.conv_transpose(x, module.weight, module.bias, stride=2, padding=1,
                              output_padding=1, groups=2)
    assert_close(y, module(x))
    spec = tnconv.ConvSpec.from_module(module, x)
    g = rand(1, *y.shape)
    xr = x.unsqueeze(0).clone().requires_grad_()
    gx, gw = torch.autograd.grad(module(xr), (xr, module.weight), g)
    assert_close(tnconv.compile("input_vjp", spec, strategy="tn")(module.weight, g), gx)
    assert_close(tnconv.compile("weight_vjp", spec, strategy="tn")(xr.detach(), g), gw)


def test_errors():
    x, w = rand(2, 4, 5, 5), rand(4, 3, 3, 3)
    with pytest.raises(TNConvError, match="conv_transpose.*output_padding"):
        tnconv.conv_transpose(x, w, stride=2, output_padding=2)
    with pytest.raises(TNConvError, match="conv_transpose.*weight"):
        tnconv.conv_transpose(x, rand(3, 3, 3, 3))
    with pytest.raises(TNConvError, match="conv_transpose.*bias"):
        tnconv.conv_transpose(x, w, rand(4))
    with pytest.raises(TNConvError, match="conv_transpose_input_vjp.*grad_output"):
        tnconv.conv_transpose_input_vjp(x.shape, w, rand(2, 3, 7, 7), stride=2)   # 9x9 or 10x10
    with pytest.raises(TNConvError, match="conv_transpose_input_vjp.*input_size"):
        tnconv.conv_transpose_input_vjp((2, 4, 5), w, rand(2, 3, 7, 7))
    with pytest.raises(TNConvError, match="conv_transpose_weight_vjp.*grad_output"):
        tnconv.conv_transpose_weight_vjp(x, w.shape, rand(2, 3, 6, 6))
    with pytest.raises(TNConvError, match="unfold_transpose.*output_padding"):
        tnconv.unfold_transpose(x, 3, stride=1, output_padding=1)
    with pytest.raises(TNConvError, match="conv_transpose.*groups"):
        tnconv.conv_transpose(x, w, groups=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_asymmetric_padding_crops_the_full_output(strategy):
    x, w = rand(2, 2, 4, 3), rand(2, 3, 3, 2)
    full = F.conv_transpose2d(x, w, stride=(2, 1))
    y = tnconv.conv_transpose(x, w, stride=(2, 1), padding=((1, 2), (0, 1)), strategy=strategy)
    assert_close(y, full[:, :, 1:-2, :-1])
    g = torch.randn_like(y)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    gx, gw = torch.autograd.grad(F.conv_transpose2d(xr, wr, stride=(2, 1))[:, :, 1:-2, :-1],
                                 (xr, wr), g)
    kw = dict(stride=(2, 1), padding=((1, 2), (0, 1)), strategy=strategy)
    assert_close(tnconv.conv_transpose_input_vjp(x.shape, w, g, **kw), gx)
    assert_close(tnconv.conv_transpose_weight_vjp(x, w.shape, g, **kw), gw)
