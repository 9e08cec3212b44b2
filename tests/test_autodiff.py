"""VJPs and JVPs by graph surgery: against torch autograd, torch.func.jvp and torch.nn.grad.

Also holds the independent references (padding and N-d convolution as sums of
3d convolutions) that the transposed-convolution and autograd tests reuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tnconv.runtime import native
from tnconv.errors import TNConvError
from tnconv.ops.autodiff import jvp_network, vjp_network
from tnconv.ops.convolution import forward_network
from tests.helpers import assert_close, rand

MODES = ("zeros", "circular", "reflect", "replicate")
STRATEGIES = ("auto", "tn")
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


# ------------------------------------------------------------------ references
def pad_reference(x: torch.Tensor, pairs, mode: str) -> torch.Tensor:
    """Padding as torch's modules do; beyond 3 spatial dims only zeros and circular."""
    if x.dim() - 2 <= 3 or mode == "zeros":
        flat = [p for pair in reversed(pairs) for p in pair]
        return F.pad(x, flat, mode="constant" if mode == "zeros" else mode)
    assert mode == "circular"
    for d, (left, right) in enumerate(pairs):
        dim, n = d + 2, x.shape[d + 2]
        x = torch.cat([x.narrow(dim, n - left, left), x, x.narrow(dim, 0, right)], dim)
    return x


def conv_valid(xp: torch.Tensor, w: torch.Tensor, stride, dilation, groups: int) -> torch.Tensor:
    """Convolution of a padded input: torch for N <= 3, sums of (N-1)-d convolutions above."""
    n = w.dim() - 2
    if n <= 3:
        return _CONV[n](xp, w, stride=tuple(stride), dilation=tuple(dilation), groups=groups)
    s, d, k = stride[0], dilation[0], w.shape[2]
    out = (xp.shape[2] - d * (k - 1) - 1) // s + 1
    return torch.stack([
        sum(conv_valid(xp[:, :, o * s + j * d], w[:, :, j], stride[1:], dilation[1:], groups)
            for j in range(k))
        for o in range(out)], 2)


def conv_reference(x: torch.Tensor, w: torch.Tensor, spec: tnconv.ConvSpec) -> torch.Tensor:
    """The (non-transposed) convolution `spec` describes, independently of tnconv."""
    xp = pad_reference(x, spec.padding, spec.padding_mode)
    return conv_valid(xp, w, spec.stride, spec.dilation, spec.groups)


@dataclass(frozen=True)
class Case:
    """A drawn convolution: its spec, the padding argument as drawn, the batch size."""

    spec: tnconv.ConvSpec
    padding: Any
    batch: int

    def kwargs(self) -> dict:
        s = self.spec
        return dict(stride=s.stride, padding=self.padding, dilation=s.dilation, groups=s.groups,
                    padding_mode=s.padding_mode)

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input, weight and a cotangent of the output."""
        s = self.spec
        return (rand(self.batch, s.in_channels, *s.input_size), rand(*s.weight_shape),
                rand(self.batch, s.out_channels, *s.output_size))


def _padding(draw, style: str, kernel, dilation):
    ndim = len(kernel)
    if style == "int":
        p = draw(st.integers(0, 2))
        return p, [(p, p)] * ndim
    if style == "pairs":
        pairs = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(ndim)]
        return tuple(pairs), pairs
    if style == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return "same", [(t // 2, t - t // 2) for t in totals]
    return "valid", [(0, 0)] * ndim


@st.composite
def conv_cases(draw, ndim: int, modes=MODES, max_kernel: int = 3) -> Case:
    groups = draw(st.sampled_from([1, 2]))
    style = draw(st.sampled_from(["int", "pairs", "same", "valid"]))
    kernel = [draw(st.integers(1, max_kernel)) for _ in range(ndim)]
    dilation = [draw(st.integers(1, 2)) for _ in range(ndim)]
    stride = [1 if style == "same" else draw(st.integers(1, 3)) for _ in range(ndim)]
    padding, pairs = _padding(draw, style, kernel, dilation)
    sizes = [max(d * (k - 1) + 1 - left - right, max(left, right) + 1) + draw(st.integers(0, 2))
             for k, d, (left, right) in zip(kernel, dilation, pairs)]
    spec = tnconv.ConvSpec(
        groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)), tuple(kernel),
        tuple(sizes), stride=tuple(stride), padding=padding, dilation=tuple(dilation),
        groups=groups, padding_mode=draw(st.sampled_from(modes)))
    return Case(spec, padding, draw(st.integers(1, 3)))


def reference_vjps(case: Case, x, w, g):
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    return torch.autograd.grad(conv_reference(x, w, case.spec), (x, w), g)


# ------------------------------------------------------------------- surgery
def test_vjp_network_cuts_the_tensor_and_adds_the_cotangent():
    fwd = forward_network(tnconv.ConvSpec(4, 6, kernel_size=(3, 2), input_size=(7, 6),
                                          groups=2), batch=3)
    vjp = vjp_network(fwd, "weight")
    assert vjp.output == fwd.with_role("weight").indices
    assert vjp.with_role("grad_output").indices == fwd.output
    assert "weight" not in {t.role for t in vjp.tensors}
    per_sample = vjp_network(fwd, "weight", keep=("n",))
    assert per_sample.output == ("n",) + fwd.with_role("weight").indices
    assert vjp_network(fwd, "input", keep=("n",)).output == fwd.with_role("input").indices


def test_jvp_network_relabels_the_role():
    fwd = forward_network(tnconv.ConvSpec(2, 3, kernel_size=3, input_size=(6,)), batch=2)
    jvp = jvp_network(fwd, "weight", "weight_tangent")
    assert jvp.output == fwd.output
    assert jvp.with_role("weight_tangent").indices == fwd.with_role("weight").indices
    assert [t.role for t in jvp.tensors].count("weight") == 0


def test_surgery_errors():
    fwd = forward_network(tnconv.ConvSpec(2, 3, kernel_size=3, input_size=(6,)), batch=2)
    with pytest.raises(TNConvError, match="role 'bias'"):
        vjp_network(fwd, "bias")
    with pytest.raises(TNConvError, match="keep"):
        vjp_network(fwd, "input", keep=("k1",))
    doubled = fwd.replace(tensors=tuple(
        t.__class__(t.name, t.indices, "input") if t.role == "weight" else t
        for t in fwd.tensors))
    with pytest.raises(TNConvError, match="2 tensors with role 'input'"):
        jvp_network(doubled, "input", "input_tangent")


@pytest.mark.parametrize("op", ["input_vjp", "weight_vjp", "input_jvp", "weight_jvp", "fold"])
@pytest.mark.parametrize("transposed", [False, True])
def test_compile_knows_the_operations_and_explains_them(op, transposed):
    spec = tnconv.ConvSpec(2, 4, kernel_size=3, input_size=(5, 5), stride=2, padding=1,
                           groups=2, transposed=transposed, output_padding=int(transposed))
    text = tnconv.compile(op, spec, strategy="tn").explain()
    assert text.startswith(f"operation {op}:") and "einsum" in text


# -------------------------------------------------------------- VJPs and JVPs
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
@given(data=st.data())
def test_vjps_match_autograd(ndim, strategy, data):
    case = data.draw(conv_cases(ndim))
    x, w, g = case.tensors()
    gx, gw = reference_vjps(case, x, w, g)
    kw = dict(case.kwargs(), strategy=strategy)
    assert_close(tnconv.conv_input_vjp(x.shape, w, g, **kw), gx)
    assert_close(tnconv.conv_weight_vjp(x, w.shape, g, **kw), gw)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
@given(data=st.data())
def test_jvps_match_torch_func_jvp(ndim, strategy, data):
    case = data.draw(conv_cases(ndim))
    x, w, _ = case.tensors()
    dx, dw = torch.randn_like(x), torch.randn_like(w)
    kw = dict(case.kwargs(), strategy=strategy)
    _, expected = torch.func.jvp(lambda v: conv_reference(v, w, case.spec), (x,), (dx,))
    assert_close(tnconv.conv_input_jvp(dx, w, **kw), expected)
    _, expected = torch.func.jvp(lambda v: conv_reference(x, v, case.spec), (w,), (dw,))
    assert_close(tnconv.conv_weight_jvp(x, dw, **kw), expected)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_vjps_match_torch_nn_grad(ndim, strategy):
    x, w = rand(2, 4, *[7, 6, 5][:ndim]), rand(6, 2, *[3, 2, 3][:ndim])
    kw = dict(stride=2, padding=1, dilation=1, groups=2)
    g = rand(*_CONV[ndim](x, w, **kw).shape)
    grad = torch.nn.grad
    input_ref = getattr(grad, f"conv{ndim}d_input")(x.shape, w, g, **kw)
    weight_ref = getattr(grad, f"conv{ndim}d_weight")(x, w.shape, g, **kw)
    assert_close(tnconv.conv_input_vjp(x.shape, w, g, **kw, strategy=strategy), input_ref)
    assert_close(tnconv.conv_weight_vjp(x, w.shape, g, **kw, strategy=strategy), weight_ref)


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=10)
@given(case=conv_cases(2))
def test_per_sample_weight_vjp(strategy, case):
    x, w, g = case.tensors()
    kw = dict(case.kwargs(), strategy=strategy)
    per_sample = tnconv.conv_weight_vjp(x, w.shape, g, per_sample=True, **kw)
    assert per_sample.shape == (case.batch, *w.shape)
    assert_close(per_sample.sum(0), tnconv.conv_weight_vjp(x, w.shape, g, **kw))
    for n in range(case.batch):
        one = case.spec
        _, gw = reference_vjps(Case(one, case.padding, 1), x[n:n + 1], w, g[n:n + 1])
        assert_close(per_sample[n], gw)


@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=6)
@given(case=conv_cases(4, modes=("zeros", "circular"), max_kernel=2))
def test_4d_against_sums_of_3d_convolutions(strategy, case):
    x, w, g = case.tensors()
    kw = dict(case.kwargs(), strategy=strategy)
    gx, gw = reference_vjps(case, x, w, g)
    assert_close(tnconv.conv_input_vjp(x.shape, w, g, **kw), gx)
    assert_close(tnconv.conv_weight_vjp(x, w.shape, g, **kw), gw)
    assert_close(tnconv.conv_weight_vjp(x, w.shape, g, per_sample=True, **kw).sum(0), gw)
    dx, dw = torch.randn_like(x), torch.randn_like(w)
    assert_close(tnconv.conv_input_jvp(dx, w, **kw), conv_reference(dx, w, case.spec))
    assert_close(tnconv.conv_weight_jvp(x, dw, **kw), conv_reference(x, dw, case.spec))


@pytest.mark.parametrize("mode", MODES)
def test_native_routes_cover_every_padding_mode(mode):
    spec = tnconv.ConvSpec(2, 3, kernel_size=(3, 2), input_size=(6, 5), padding=((1, 2), (1, 0)),
                           padding_mode=mode)
    x, w, g = Case(spec, spec.padding, 2).tensors()
    gx, gw = reference_vjps(Case(spec, spec.padding, 2), x, w, g)
    assert_close(native.conv_input_vjp(spec, {}, w, g), gx)
    assert_close(native.conv_weight_vjp(spec, {}, x, g), gw)
    assert native.conv_weight_vjp(spec, {"per_sample": True}, x, g) is NotImplemented
    four = tnconv.ConvSpec(1, 1, kernel_size=1, input_size=(2, 2, 2, 2))
    assert native.conv_input_vjp(four, {}, rand(1, 1, 1, 1, 1, 1),
                                 rand(1, 1, 2, 2, 2, 2)) is NotImplemented


# ------------------------------------------------------------------- errors
def test_errors():
    x, w = rand(2, 4, 8, 8), rand(6, 2, 3, 3)
    g = rand(2, 6, 6, 6)
    with pytest.raises(TNConvError, match="conv_input_vjp.*grad_output"):
        tnconv.conv_input_vjp((2, 4, 9, 9), w, g, groups=2)       # input size gives 7x7
    with pytest.raises(TNConvError, match="conv_input_vjp.*weight"):
        tnconv.conv_input_vjp((2, 6, 8, 8), w, g, groups=2)       # channel mismatch
    with pytest.raises(TNConvError, match="conv_input_vjp.*input_size"):
        tnconv.conv_input_vjp((4, 8, 8), w, g, groups=2)
    with pytest.raises(TNConvError, match="conv_weight_vjp.*grad_output"):
        tnconv.conv_weight_vjp(x, w.shape, rand(3, 6, 6, 6), groups=2)
    with pytest.raises(TNConvError, match="conv_weight_vjp.*weight_size"):
        tnconv.conv_weight_vjp(x, (6, 2, 3), g, groups=2)
    with pytest.raises(TNConvError, match="per_sample"):
        tnconv.conv_weight_vjp(x, w.shape, g, groups=2, per_sample="yes")
    with pytest.raises(TNConvError, match="conv_input_jvp.*weight"):
        tnconv.conv_input_jvp(x, w)                               # groups missing
    with pytest.raises(TNConvError, match="conv_weight_jvp.*stride"):
        tnconv.conv_weight_jvp(x, w, groups=2, stride=0)
    with pytest.raises(TNConvError, match="strategy"):
        tnconv.conv_input_vjp(x.shape, w, g, groups=2, strategy="fast")


@pytest.mark.parametrize("transposed", [False, True])
def test_networks_as_built_without_rewrites(transposed):
    spec = tnconv.ConvSpec(4, 6, kernel_size=(3, 2), input_size=(5, 4), stride=(2, 1),
                           padding=((1, 2), (0, 1)) if not transposed else 1, groups=2,
                           padding_mode="zeros" if transposed else "reflect",
                           transposed=transposed, output_padding=(int(transposed), 0))
    x, w, g = Case(spec, spec.padding, 2).tensors()
    run = {op: tnconv.compile(op, spec, strategy="tn", rewrite=False)
           for op in ("forward", "input_vjp", "weight_vjp", "input_jvp", "weight_jvp")}
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    gx, gw = torch.autograd.grad(run["forward"](xr, wr), (xr, wr), g)
    assert_close(run["forward"](x, w), native.conv_forward(spec, {}, x, w))
    assert_close(run["input_vjp"](w, g), gx)
    assert_close(run["weight_vjp"](x, g), gw)
    assert_close(run["input_jvp"](x, w), run["forward"](x, w))
    assert_close(run["weight_jvp"](x, w), run["forward"](x, w))
