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


def _transforms(f, x, w, tx, tw):
    """Derivatives of f(x, w) that torch.func and forward-mode AD compute."""
    loss = lambda a, b: f(a, b).pow(3).sum()  # noqa: E731
    single = lambda b, a: loss(a[None], b)  # noqa: E731  (one sample)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual
        tangent = torch.autograd.forward_ad.unpack_dual(f(dual(x, tx), dual(w, tw))).tangent
    return {
        "jvp": torch.func.jvp(f, (x, w), (tx, tw))[1],
        "dual numbers": tangent,
        "vmap": torch.func.vmap(lambda a: f(a[None], w)[0])(x),
        "per-sample grad": torch.func.vmap(torch.func.grad(single), in_dims=(None, 0))(w, x),
        "per-sample weights": torch.func.vmap(lambda b: f(x, b))(torch.stack([w, tw])),
        "hvp": torch.func.jvp(torch.func.grad(lambda b: loss(x, b)), (w,), (tw,))[1],
        "jacrev": torch.func.jacrev(lambda b: f(x[:1], b))(w),
    }


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_torch_func_transforms_match_reference(ndim, strategy, data):
    case = data.draw(conv_cases(ndim))
    x, w, _ = case.tensors()
    tx, tw = torch.randn_like(x), torch.randn_like(w)
    actual = _transforms(lambda a, b: tnconv.conv(a, b, **case.kwargs(), strategy=strategy),
                         x, w, tx, tw)
    expected = _transforms(lambda a, b: conv_reference(a, b, case.spec), x, w, tx, tw)
    for name, value in expected.items():
        assert_close(actual[name], value, rtol=1e-10), name


def _vjp_pair(conv):
    """(input VJP (w, g), weight VJP (x, g)) of `conv`, by torch.func.vjp."""
    def input_vjp(x_shape, w, g):
        return torch.func.vjp(lambda v: conv(v, w), torch.zeros(x_shape, dtype=w.dtype, device=w.device))[1](g)[0]

    def weight_vjp(x, w_shape, g):
        return torch.func.vjp(lambda v: conv(x, v), torch.zeros(w_shape, dtype=x.dtype, device=x.device))[1](g)[0]
    return input_vjp, weight_vjp


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("op", ["input_vjp", "weight_vjp", "input_jvp", "weight_jvp",
                                "transpose_input_vjp", "transpose_weight_vjp"])
def test_public_derivatives_under_torch_func(op, strategy):
    x, w, g = rand(2, 4, 7, 6), rand(6, 2, 3, 2), rand(2, 6, 3, 6)
    kw = dict(stride=(2, 1), padding=((1, 0), (1, 0)), groups=2)
    ref_in, ref_w = _vjp_pair(lambda a, b: torch.nn.functional.conv2d(
        torch.nn.functional.pad(a, (1, 0, 1, 0)), b, stride=(2, 1), groups=2))
    tkw = dict(stride=(2, 1), padding=(1, 0), groups=2)
    tref_in, tref_w = _vjp_pair(lambda a, b: torch.nn.functional.conv_transpose2d(
        a, b, stride=(2, 1), padding=(1, 0), groups=2))
    gt = rand(2, 4, 5, 7)  # cotangent of the transposed conv of a [2, 6, 3, 6] input
    calls = {  # (tnconv, reference) as functions of two tensors
        "input_vjp": (lambda a, b: tnconv.conv_input_vjp(x.shape, a, b, **kw, strategy=strategy),
                      lambda a, b: ref_in(x.shape, a, b), (w, g)),
        "weight_vjp": (lambda a, b: tnconv.conv_weight_vjp(a, w.shape, b, **kw,
                                                           strategy=strategy),
                       lambda a, b: ref_w(a, w.shape, b), (x, g)),
        "input_jvp": (lambda a, b: tnconv.conv_input_jvp(a, b, **kw, strategy=strategy),
                      lambda a, b: torch.func.jvp(lambda v: torch.nn.functional.conv2d(
                          torch.nn.functional.pad(v, (1, 0, 1, 0)), b, stride=(2, 1),
                          groups=2), (x,), (a,))[1], (x, w)),
        "weight_jvp": (lambda a, b: tnconv.conv_weight_jvp(a, b, **kw, strategy=strategy),
                       lambda a, b: torch.nn.functional.conv2d(
                           torch.nn.functional.pad(a, (1, 0, 1, 0)), b, stride=(2, 1),
                           groups=2), (x, w)),
        "transpose_input_vjp": (
            lambda a, b: tnconv.conv_transpose_input_vjp(g.shape, a, b, **tkw,
                                                         strategy=strategy),
            lambda a, b: tref_in(g.shape, a, b), (rand(6, 2, 3, 2), gt)),
        "transpose_weight_vjp": (
            lambda a, b: tnconv.conv_transpose_weight_vjp(a, (6, 2, 3, 2), b, **tkw,
                                                          strategy=strategy),
            lambda a, b: tref_w(a, (6, 2, 3, 2), b), (g, gt)),
    }
    ours, reference, (a, b) = calls[op]
    ta, tb = torch.randn_like(a), torch.randn_like(b)
    checks = {
        "value": lambda f: f(a, b),
        "jvp": lambda f: torch.func.jvp(f, (a, b), (ta, tb))[1],
        "grad": lambda f: torch.func.grad(lambda u, v: f(u, v).pow(3).sum(), (0, 1))(a, b),
        "vmap": lambda f: torch.func.vmap(f, in_dims=(None, 0))(a, torch.stack([b, tb])),
        "vmap both": lambda f: torch.func.vmap(f)(torch.stack([a, ta]), torch.stack([b, tb])),
    }
    for name, check in checks.items():
        actual, expected = check(ours), check(reference)
        for u, v in zip(*(r if isinstance(r, tuple) else (r,) for r in (actual, expected))):
            assert_close(u, v, rtol=1e-10), name


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_per_sample_weight_vjps_under_torch_func(strategy, transposed, groups):
    """Per-sample weight VJPs run sample by sample under a transform: their compiled
    steps (stride 1: tap products) write into buffers, which vmap and forward-mode AD
    cannot see through."""
    kw = dict(padding=1, groups=groups)
    if transposed:  # x [3, 6, 5, 6] -> y [3, 4, 5, 5]; weight [6, 4/G, 3, 2]
        shape, a, b = (6, 4 // groups, 3, 2), rand(3, 6, 5, 6), rand(3, 4, 5, 5)
        public, conv = tnconv.conv_transpose_weight_vjp, torch.nn.functional.conv_transpose2d
    else:  # x [3, 4, 7, 6] -> y [3, 6, 7, 7]; weight [6, 4/G, 3, 2]
        shape, a, b = (6, 4 // groups, 3, 2), rand(3, 4, 7, 6), rand(3, 6, 7, 7)
        public, conv = tnconv.conv_weight_vjp, torch.nn.functional.conv2d
    summed = _vjp_pair(lambda p, q: conv(p, q, **kw))[1]

    def ours(u, v):
        return public(u, shape, v, **kw, per_sample=True, strategy=strategy)

    def reference(u, v):
        return torch.stack([summed(u[n:n + 1], shape, v[n:n + 1]) for n in range(u.shape[0])])

    ta, tb = torch.randn_like(a), torch.randn_like(b)
    checks = {
        "value": lambda f: f(a, b),
        "jvp": lambda f: torch.func.jvp(f, (a, b), (ta, tb))[1],
        "vmap": lambda f: torch.func.vmap(f, in_dims=(None, 0))(a, torch.stack([b, tb])),
        "vmap both": lambda f: torch.func.vmap(f)(torch.stack([a, ta]), torch.stack([b, tb])),
        "grad": lambda f: torch.func.grad(lambda u, v: f(u, v).pow(3).sum(), (0, 1))(a, b),
    }
    for name, check in checks.items():
        actual, expected = check(ours), check(reference)
        for u, v in zip(*(r if isinstance(r, tuple) else (r,) for r in (actual, expected))):
            assert_close(u, v, rtol=1e-10), name
