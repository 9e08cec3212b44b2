"""Shift-GEMM steps: grouped stride-1 convolutions and weight VJPs, one batched product per tap."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tests.helpers import DEVICE, assert_close, rand
from tests.references import torch_conv
from tests.strategies import conv_params
from tnconv.runtime.execute import plan_for
from tnconv.runtime.shift_gemm import ShiftGemmOutputStep, ShiftGemmStep, shift_gemm_step


def _steps(spec: tnconv.ConvSpec, batch: int, op: str = "forward", **options) -> list:
    program = tnconv.compile(op, spec, strategy="tn", **options).program_for(batch)
    return [type(s) for s in plan_for(program, DEVICE, torch.float64)._steps]


def _pairs(spec: tnconv.ConvSpec) -> list:
    return list(spec.padding)


def _weight_grad(x, w, spec, g):
    w = w.clone().requires_grad_(True)
    y = torch_conv(x, w, spec.stride, _pairs(spec), spec.dilation, spec.groups,
                   spec.padding_mode)
    return torch.autograd.grad(y, w, g)[0]


@given(conv_params(modes=("zeros", "reflect", "circular")), st.data())
def test_grouped_forward_and_weight_vjp_match_torch(params, data):
    """Any grouped stride-1 convolution (1-3d, dilation, asymmetric or 'same' padding,
    padding modes) and its weight VJP are exact on the TN route, shift-GEMM or not."""
    groups = data.draw(st.sampled_from([2, 3]))
    ndim = params["ndim"]
    per_in, per_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    spec = tnconv.ConvSpec(groups * per_in, groups * per_out, params["kernel_size"],
                           params["input_shape"][2:], stride=1,
                           padding=params["padding"], dilation=params["dilation"],
                           groups=groups, padding_mode=params["padding_mode"])
    batch = params["input_shape"][0]
    x = rand(batch, spec.in_channels, *spec.input_size)
    w = rand(*spec.weight_shape)
    expected = torch_conv(x, w, (1,) * ndim, _pairs(spec), spec.dilation, groups,
                          spec.padding_mode)
    assert_close(tnconv.conv(x, w, None, 1, params["padding"], spec.dilation, groups,
                             padding_mode=spec.padding_mode, strategy="tn"), expected)
    g = rand(*expected.shape)
    assert_close(tnconv.conv_weight_vjp(x, w.shape, g, 1, params["padding"], spec.dilation,
                                        groups, padding_mode=spec.padding_mode, strategy="tn"),
                 _weight_grad(x, w, spec, g))


@pytest.mark.parametrize("kernel, size, padding, dilation, mode", [
    ((5,), (40,), 2, 1, "zeros"),
    ((3, 3), (20, 17), ((1, 2), (0, 1)), (2, 1), "zeros"),
    ((4, 4), (16, 16), "same", 1, "reflect"),
    ((3,), (30,), ((0, 2),), 3, "replicate"),
    ((3, 3), (12, 12), 1, 1, "circular"),
])
def test_grouped_layers_and_weight_vjps_run_one_product_per_tap(kernel, size, padding, dilation, mode):
    spec = tnconv.ConvSpec(6, 9, kernel, size, padding=padding, dilation=dilation, groups=3,
                           padding_mode=mode)
    assert ShiftGemmStep in _steps(spec, 2)
    assert ShiftGemmOutputStep in _steps(spec, 2, "weight_vjp")
    assert ShiftGemmOutputStep in _steps(spec, 2, "weight_vjp", per_sample=True)
    x, w = rand(2, 6, *size), rand(*spec.weight_shape)
    expected = torch_conv(x, w, (1,) * len(size), _pairs(spec), spec.dilation, 3, mode)
    kw = dict(padding=padding, dilation=dilation, groups=3, padding_mode=mode, strategy="tn")
    assert_close(tnconv.conv(x, w, **kw), expected)
    g = rand(*expected.shape)
    assert_close(tnconv.conv_weight_vjp(x, w.shape, g, **kw), _weight_grad(x, w, spec, g))
    per_sample = torch.stack([_weight_grad(x[i:i + 1], w, spec, g[i:i + 1]) for i in range(2)])
    assert_close(tnconv.conv_weight_vjp(x, w.shape, g, per_sample=True, **kw), per_sample)


def test_dense_and_strided_convolutions_keep_one_einsum():
    dense = tnconv.ConvSpec(4, 4, kernel_size=3, input_size=(9, 9), padding=1)
    strided = tnconv.ConvSpec(4, 4, kernel_size=3, input_size=(9, 9), stride=2, groups=2)
    assert ShiftGemmStep not in _steps(dense, 2)
    assert ShiftGemmStep not in _steps(strided, 2)


def test_windows_without_a_unit_stride_fall_back_to_the_einsum():
    """Windows over a transposed input have no contiguous run: the step runs the einsum."""
    legs, other_legs = ("n", "g", "c", "o", "k", "p", "j"), ("g", "f", "c", "k", "j")
    sizes = {"n": 2, "g": 2, "c": 3, "o": 5, "k": 3, "p": 4, "j": 2, "f": 2}
    step = shift_gemm_step(0, legs, (4, 6), 1, other_legs, ("n", "g", "f", "o", "p"), sizes)
    assert step is not None
    x = rand(2, 2, 3, 5, 7).transpose(3, 4).contiguous().transpose(3, 4)  # [n, g, c, 7, 5]
    windows = x.unfold(3, 3, 1).unfold(4, 2, 1)  # [n, g, c, o, p, k, j]
    windows = windows.permute(0, 1, 2, 3, 5, 4, 6)  # [n, g, c, o, k, p, j]
    w = rand(2, 2, 3, 3, 2)
    expected = torch.einsum("ngcokpj,gfckj->ngfop", windows, w)
    assert_close(step([windows, w]), expected)
    contiguous = rand(2, 2, 3, 7, 5).unfold(3, 3, 1).unfold(4, 2, 1).permute(0, 1, 2, 3, 5, 4, 6)
    assert_close(step([contiguous, w]), torch.einsum("ngcokpj,gfckj->ngfop", contiguous, w))


def test_legs_out_of_the_expected_order_are_declined():
    sizes = {"n": 2, "g": 2, "c": 3, "o": 5, "k": 3, "f": 2}
    # contracted leg before the shared one, a tap kept in the result, no shared leg
    assert shift_gemm_step(0, ("n", "c", "g", "o", "k"), (4,), 1, ("g", "f", "c", "k"),
                           ("n", "g", "f", "o"), sizes) is None
    assert shift_gemm_step(0, ("n", "g", "c", "o", "k"), (4,), 1, ("g", "f", "c"),
                           ("n", "g", "f", "o", "k"), sizes) is None
    assert shift_gemm_step(0, ("n", "c", "o", "k"), (3,), 1, ("f", "c", "k"),
                           ("n", "f", "o"), sizes) is None


def test_output_step_on_windows_without_a_unit_stride_falls_back_to_the_einsum():
    legs, other_legs = ("n", "g", "c", "o", "k", "p", "j"), ("n", "g", "f", "o", "p")
    sizes = {"n": 2, "g": 2, "c": 3, "o": 5, "k": 3, "p": 4, "j": 2, "f": 2}
    out = ("g", "f", "c", "k", "j")
    step = shift_gemm_step(0, legs, (4, 6), 1, other_legs, out, sizes)
    assert isinstance(step, ShiftGemmOutputStep)
    g = rand(2, 2, 2, 5, 4)
    for x in (rand(2, 2, 3, 7, 5), rand(2, 2, 3, 5, 7).transpose(3, 4)):
        windows = x.unfold(3, 3, 1).unfold(4, 2, 1).permute(0, 1, 2, 3, 5, 4, 6)
        assert_close(step([windows, g]), torch.einsum("ngcokpj,ngfop->gfckj", windows, g))


def test_steps_that_autograd_records_run_the_einsum():
    """A double backward differentiates the plan itself: the steps fall back to the
    einsum, whose gradient is exact, instead of accumulating into out= buffers."""
    legs, other_legs = ("n", "g", "c", "o", "k"), ("g", "f", "c", "k")
    sizes = {"n": 2, "g": 2, "c": 3, "o": 5, "k": 3, "f": 2}
    step = shift_gemm_step(0, legs, (4,), 1, other_legs, ("n", "g", "f", "o"), sizes)
    x, w = rand(2, 2, 3, 7).requires_grad_(True), rand(2, 2, 3, 3).requires_grad_(True)
    g = rand(2, 2, 2, 5)
    grads = torch.autograd.grad((step([x.unfold(3, 3, 1), w]) * g).sum(), (x, w))
    expected = torch.autograd.grad(
        (torch.einsum("ngcok,gfck->ngfo", x.unfold(3, 3, 1), w) * g).sum(), (x, w))
    for actual, reference in zip(grads, expected):
        assert_close(actual, reference)
