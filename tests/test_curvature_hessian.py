"""Hessian-diagonal backpropagation (Becker & LeCun, HesScale) through a convolution.

Exact: a convolution followed by an elementwise loss Σ a·cos(y) has a diagonal
output Hessian, so the weight's and the input's Hessian diagonals from
`torch.func.hessian` must match exactly. Approximate: with a random (not
diagonal) output Hessian, the methods' published formulas, Σ_{n,o} h·u² for the
weight (u from an independent unfold) and Σ_{c_out,o} h·J² for the input (J from
`torch.func.jacrev`).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

import tnconv
from tnconv.curvature import functional as CF
from tnconv.ops.hessian import taps_distinct
from tests.curvature_references import hyper, input_jacobian, layer, spec_of, tensors
from tests.helpers import DEVICE, assert_close, rand
from tests.references import unfold_nd
from tests.strategies import conv_params


def _exact(spec, x, w, a):
    """Hessian diagonals of Σ a·cos(layer(x, w)) with respect to w and x, and h = −a·cos(y)."""
    f = layer(spec)

    def diagonal(function, value):
        return torch.func.hessian(function)(value).reshape(value.numel(), -1).diagonal() \
            .reshape(value.shape)

    weight = diagonal(lambda w: (a * torch.cos(f(x, w))).sum(), w)
    inputs = diagonal(lambda x: (a * torch.cos(f(x, w))).sum(), x)
    return weight, inputs, -a * torch.cos(f(x, w))


@pytest.mark.slow
@given(conv_params(max_kernel=2))
def test_exact_for_a_diagonal_output_hessian(params):
    spec = spec_of(params)
    x, w, a = tensors(spec, params["input_shape"][0])
    weight, inputs, h = _exact(spec, x, w, a)
    assert_close(CF.hessian_diagonal_weight(x, h, spec.kernel_size, **hyper(spec)), weight)
    assert_close(CF.hessian_diagonal_input(x, w, h, **hyper(spec)), inputs)


@pytest.mark.slow
@given(conv_params())
def test_published_formulas(params):
    """Any non-negative h (the diagonal of some output Hessian): Σ h·u² and Σ h·J²."""
    spec = spec_of(params)
    x, w, h = tensors(spec, params["input_shape"][0])
    h = h.abs()
    g = spec.groups
    u = unfold_nd(x, spec.kernel_size, spec.stride, spec.padding, spec.dilation,
                  spec.padding_mode)
    u = u.reshape(x.shape[0], g, -1, u.shape[-1])  # [N, G, C_in/G·∏K, ∏O]
    hg = h.reshape(x.shape[0], g, spec.out_channels // g, -1)
    weight = torch.einsum("ngmo,ngdo->gmd", hg, u ** 2).reshape(w.shape)
    assert_close(CF.hessian_diagonal_weight(x, h, spec.kernel_size, **hyper(spec)), weight)
    jac = input_jacobian(spec, x, w)  # [N, M, D]
    inputs = torch.einsum("nm,nmd->nd", h.flatten(1), jac ** 2).reshape(x.shape)
    assert_close(CF.hessian_diagonal_input(x, w, h, **hyper(spec)), inputs)


@pytest.mark.parametrize("kwargs, distinct", [
    (dict(kernel_size=3, input_size=(5,), padding=1, padding_mode="reflect"), False),
    (dict(kernel_size=3, input_size=(5,), padding=1, padding_mode="circular"), True),
    (dict(kernel_size=3, input_size=(2,), padding=2, padding_mode="circular"), False),
    (dict(kernel_size=3, input_size=(5,), padding=1, padding_mode="replicate"), False),
    (dict(kernel_size=(3, 3), input_size=(6, 6), padding=2, dilation=2), True),
])
def test_taps_that_meet_one_pixel_get_their_own_copy(kwargs, distinct):
    """Where two taps read one pixel at one output position (reflect and replicate at the
    border, circular wrapping onto itself), J² needs the tap legs of both copies."""
    spec = tnconv.ConvSpec(2, 2, **kwargs)
    assert taps_distinct(spec) is distinct
    net = tnconv.compile("hessian_diagonal_input", spec).input_network()
    assert sum(t.role == "pattern" for t in net.tensors) == spec.ndim * (1 if distinct else 2)
    x, w, h = tensors(spec, 2)
    jac = input_jacobian(spec, x, w)
    expected = torch.einsum("nm,nmd->nd", h.flatten(1), jac ** 2).reshape(x.shape)
    assert_close(CF.hessian_diagonal_input(x, w, h, **hyper(spec)), expected)


@pytest.mark.parametrize("kwargs", [dict(stride=2, padding=1, output_padding=1),
                                    dict(groups=2, dilation=2)])
def test_transposed_layers_are_exact_for_a_diagonal_output_hessian(kwargs):
    conv = torch.nn.ConvTranspose2d(2, 4, 2, bias=False, **kwargs).double().to(DEVICE)
    x = rand(2, 2, 3, 3)
    spec = tnconv.ConvSpec.from_module(conv, x)
    a = rand(2, spec.out_channels, *spec.output_size)
    weight, inputs, h = _exact(spec, x, conv.weight.detach(), a)
    assert_close(tnconv.curvature.hessian_diagonal_weight(conv, x, h), weight)
    assert_close(tnconv.curvature.hessian_diagonal_input(conv, x, h), inputs)
