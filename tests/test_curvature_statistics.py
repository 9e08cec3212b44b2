"""batch_l2, sum_grad_squared and variance against per-sample gradients from vmap(grad).

Float64, random hyper-parameters (1d/2d/3d, groups, stride, dilation, every padding
form and mode), functional and module forms, transposed layers; and the plan: the
compiler forms g_n or runs the Gram form, whichever its cost model prices lower, and
`explain()` says which.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.curvature import functional as CF
from tests.curvature_references import hyper, per_sample_gradients, spec_of, tensors
from tests.helpers import DEVICE, assert_close
from tests.strategies import conv_params

STATISTICS = ("batch_l2", "sum_grad_squared", "variance")


def expected(name: str, g: torch.Tensor) -> torch.Tensor:
    if name == "batch_l2":
        return g.flatten(1).pow(2).sum(1)
    if name == "sum_grad_squared":
        return g.pow(2).sum(0)
    return g.pow(2).mean(0) - g.mean(0).pow(2)


@given(conv_params(), st.sampled_from(STATISTICS))
def test_statistics_match_vmap_grad(params, name):
    spec = spec_of(params)
    x, w, v = tensors(spec, params["input_shape"][0])
    g = per_sample_gradients(spec, x, w, v)
    got = getattr(CF, name)(x, v, spec.kernel_size, **hyper(spec))
    assert_close(got, expected(name, g), rtol=1e-11)


@pytest.mark.parametrize("name", STATISTICS)
@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
])
def test_transposed_layers(name, kwargs):
    ndim = len(kwargs["kernel_size"]) if isinstance(kwargs["kernel_size"], tuple) else 1
    module = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d}[ndim]
    conv = module(4, 6, bias=False, **kwargs).double().to(DEVICE)
    x = torch.randn(3, 4, *(5,) * ndim, dtype=torch.float64, device=DEVICE)
    spec = tnconv.ConvSpec.from_module(conv, x)
    _, _, v = tensors(spec, 3)
    g = per_sample_gradients(spec, x, conv.weight.detach(), v)
    assert_close(getattr(tnconv.curvature, name)(conv, x, v), expected(name, g), rtol=1e-11)


@pytest.mark.parametrize("name", STATISTICS)
@pytest.mark.parametrize("conv", [
    torch.nn.Conv1d(4, 6, 3, stride=2, groups=2, padding=2, padding_mode="reflect"),
    torch.nn.Conv2d(3, 4, (3, 2), padding="same", dilation=(2, 1), padding_mode="circular"),
    torch.nn.Conv3d(2, 2, 2, stride=(1, 2, 1), padding=1, padding_mode="replicate"),
])
def test_module_forms(name, conv):
    conv = conv.double().to(DEVICE)
    x = torch.randn(5, conv.in_channels, *(6,) * (conv.weight.dim() - 2), dtype=torch.float64,
                    device=DEVICE)
    spec = tnconv.ConvSpec.from_module(conv, x)
    _, _, v = tensors(spec, 5)
    g = per_sample_gradients(spec, x, conv.weight.detach(), v)
    assert_close(getattr(tnconv.curvature, name)(conv, x, v), expected(name, g), rtol=1e-11)


def test_variance_has_no_cancellation():
    """Per-sample gradients with a large common part: Σ g² / N − ḡ² would lose every digit
    in float32; the centred network keeps the variance."""
    conv = torch.nn.Conv1d(1, 1, 1, bias=False)
    x = torch.ones(4, 1, 1)
    v = (1000.0 + torch.tensor([-1.0, 1.0, -1.0, 1.0])).reshape(4, 1, 1)
    assert_close(tnconv.curvature.variance(conv, x, v), torch.ones(1, 1, 1), rtol=1e-6)


@pytest.mark.parametrize("name", STATISTICS)
def test_explain_names_the_gram_form_where_it_is_cheaper(name):
    """A patch embedding (few output positions, many channels): ‖g_n‖² by the Gram form.
    A 3×3 layer on a large image: by the per-sample gradients."""
    patch = tnconv.ConvSpec(3, 768, 16, (224, 224), stride=16)
    wide = tnconv.ConvSpec(16, 16, 3, (64, 64), padding=1)
    form = {"batch_l2": "gram", "sum_grad_squared": "per_sample", "variance": "per_sample"}
    assert f"plan     {form[name]}:" in tnconv.compile(name, patch, batch_size=2).explain()
    assert "plan     per_sample:" in tnconv.compile(name, wide, batch_size=2).explain()


def test_gram_form_runs_and_is_right():
    spec = tnconv.ConvSpec(2, 32, 4, (8, 8), stride=4)
    assert "plan     gram:" in tnconv.compile("batch_l2", spec, batch_size=3).explain()
    x, w, v = tensors(spec, 3)
    g = per_sample_gradients(spec, x, w, v)
    assert_close(CF.batch_l2(x, v, 4, stride=4), expected("batch_l2", g), rtol=1e-11)
