"""tnconv.conv and tnconv.conv_transpose under torch.autograd: gradients, double backward,
what is saved, and which VJPs run."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd import gradcheck, gradgradcheck

import tnconv
import tnconv.nn.autograd as conv_autograd
from tests.helpers import assert_close, rand
from tests.test_autodiff import MODES, STRATEGIES, conv_cases, conv_reference


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_conv(strategy, mode):
    x = rand(1, 4, 4, 3).requires_grad_()
    w, b = rand(6, 2, 3, 2).requires_grad_(), rand(6).requires_grad_()

    def f(x, w, b):
        return tnconv.conv(x, w, b, stride=(2, 1), padding=((1, 2), (1, 0)), groups=2,
                           padding_mode=mode, strategy=strategy)

    assert gradcheck(f, (x, w, b))
    assert gradgradcheck(f, (x, w, b))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 2])
def test_gradcheck_conv_transpose(strategy, ndim):
    x = rand(1, 4, *[2, 3][:ndim]).requires_grad_()
    w, b = rand(4, 3, *[2, 2][:ndim]).requires_grad_(), rand(6).requires_grad_()

    def f(x, w, b):
        return tnconv.conv_transpose(x, w, b, stride=2, padding=1, output_padding=1, groups=2,
                                     dilation=(1, 2)[:ndim], strategy=strategy)

    assert gradcheck(f, (x, w, b))
    assert gradgradcheck(f, (x, w, b))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
@settings(max_examples=15)
@given(data=st.data())
def test_conv_gradients_match_reference(ndim, strategy, data):
    case = data.draw(conv_cases(ndim))
    x, w, g = case.tensors()
    leaves = (x.requires_grad_(), w.requires_grad_())
    expected = torch.autograd.grad(conv_reference(x, w, case.spec), leaves, g)
    actual = torch.autograd.grad(tnconv.conv(x, w, **case.kwargs(), strategy=strategy),
                                 leaves, g)
    for a, e in zip(actual, expected):
        assert_close(a, e)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_4d_gradients(strategy):
    spec = tnconv.ConvSpec(2, 2, kernel_size=2, input_size=(3, 3, 2, 3), stride=(1, 2, 1, 1),
                           padding=1, padding_mode="circular")
    x, w = rand(2, 2, 3, 3, 2, 3).requires_grad_(), rand(2, 2, 2, 2, 2, 2).requires_grad_()
    y = tnconv.conv(x, w, stride=spec.stride, padding=1, padding_mode="circular",
                    strategy=strategy)
    g = torch.randn_like(y)
    expected = torch.autograd.grad(conv_reference(x, w, spec), (x, w), g)
    for a, e in zip(torch.autograd.grad(y, (x, w), g), expected):
        assert_close(a, e)


def test_torch_func_transforms():
    x, w = rand(2, 3, 7), rand(4, 3, 3)
    dx = torch.randn_like(x)
    _, tangent = torch.func.jvp(lambda v: tnconv.conv(v, w, padding=1), (x,), (dx,))
    assert_close(tangent, tnconv.conv(dx, w, padding=1))
    grad = torch.func.grad(lambda v: tnconv.conv(x, v, padding=1).square().sum())(w)
    expected = torch.func.grad(
        lambda v: torch.nn.functional.conv1d(x, v, padding=1).square().sum())(w)
    assert_close(grad, expected)


# ------------------------------------------------------------ what is saved / run
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("op", ["conv", "conv_transpose"])
def test_input_is_not_saved_without_weight_gradient(op, strategy):
    x, w = rand(2, 4, 6, 6).requires_grad_(), rand(4, 4, 3, 3)
    packed = []

    def pack(t):
        packed.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = getattr(tnconv, op)(x, w, strategy=strategy)
    assert not any(t is x or t.data_ptr() == x.data_ptr() for t in packed)
    assert any(t is w for t in packed)
    y.sum().backward()
    assert x.grad is not None


def test_input_is_freed_without_weight_gradient():
    a, w = rand(2, 3, 8).requires_grad_(), rand(4, 3, 3)
    x = a * 2
    ref = weakref.ref(x)
    y = tnconv.conv(x, w)
    del x
    gc.collect()
    assert ref() is None
    y.sum().backward()
    assert a.grad is not None


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)])
def test_backward_runs_only_the_needed_vjps(monkeypatch, strategy, needs):
    compiled = []

    def spy(op, spec, **kwargs):
        compiled.append((op, kwargs["strategy"]))
        return tnconv.compile(op, spec, **kwargs)

    x, w = rand(2, 3, 8).requires_grad_(needs[0]), rand(4, 3, 3).requires_grad_(needs[1])
    y = tnconv.conv(x, w, strategy=strategy)
    monkeypatch.setattr(conv_autograd, "compile", spy)
    y.sum().backward()
    wanted = [op for op, need in zip(("input_vjp", "weight_vjp"), needs) if need]
    assert compiled == [(op, strategy) for op in wanted]
