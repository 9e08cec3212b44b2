"""Fold (col2im) against torch.nn.functional.fold; for any N, the adjoint of an explicit unfold."""

from __future__ import annotations

import itertools
from math import prod

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tnconv.errors import TNConvError
from tests.helpers import assert_close, rand
from tests.test_autodiff import STRATEGIES


def unfold_reference(x: torch.Tensor, kernel, dilation, padding, stride) -> torch.Tensor:
    """im2col by strided slices of the zero-padded input: [N, C·∏K, ∏O]."""
    xp = F.pad(x, [p for q in reversed(padding) for p in (q, q)])
    out = [(xp.shape[d + 2] - dilation[d] * (k - 1) - 1) // stride[d] + 1
           for d, k in enumerate(kernel)]
    columns = []
    for taps in itertools.product(*[range(k) for k in kernel]):
        window = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                       for t, d, o, s in zip(taps, dilation, out, stride))
        columns.append(xp[(slice(None), slice(None)) + window])
    u = torch.stack(columns, 2)
    return u.reshape(x.shape[0], x.shape[1] * prod(kernel), prod(out))


def fold_reference(y: torch.Tensor, output_size, kernel, dilation, padding, stride):
    """Fold as the gradient of <unfold_reference(x), y> with respect to x."""
    channels = y.shape[1] // prod(kernel)
    x = torch.zeros(y.shape[0], channels, *output_size, dtype=y.dtype, device=y.device,
                    requires_grad=True)
    u = unfold_reference(x, kernel, dilation, padding, stride)
    return torch.autograd.grad(u, x, y)[0]


@st.composite
def fold_cases(draw, ndim: int):
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(ndim))
    size = tuple(max(d * (k - 1) + 1 - 2 * p, 1) + draw(st.integers(0, 3))
                 for k, d, p in zip(kernel, dilation, padding))
    blocks = prod((i + 2 * p - d * (k - 1) - 1) // s + 1
                  for i, k, d, p, s in zip(size, kernel, dilation, padding, stride))
    y = rand(draw(st.integers(1, 3)), draw(st.integers(1, 3)) * prod(kernel), blocks)
    return y, dict(output_size=size, kernel_size=kernel, dilation=dilation, padding=padding,
                   stride=stride)


def test_unfold_reference_is_torch_unfold():
    x = rand(2, 3, 7, 8)
    kw = dict(kernel_size=(3, 2), dilation=(1, 2), padding=(1, 0), stride=(2, 1))
    assert_close(unfold_reference(x, (3, 2), (1, 2), (1, 0), (2, 1)), F.unfold(x, **kw))


@pytest.mark.parametrize("strategy", STRATEGIES)
@given(case=fold_cases(2))
def test_fold_matches_torch(strategy, case):
    y, kw = case
    assert_close(tnconv.fold(y, **kw, strategy=strategy), F.fold(y, **kw))
    assert_close(tnconv.fold(y[0], **kw, strategy=strategy), F.fold(y[0], **kw))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 3, 4])
@settings(max_examples=15)
@given(data=st.data())
def test_fold_is_the_adjoint_of_unfold(ndim, strategy, data):
    y, kw = data.draw(fold_cases(ndim))
    folded = tnconv.fold(y, **kw, strategy=strategy)
    geometry = (kw["kernel_size"], kw["dilation"], kw["padding"], kw["stride"])
    assert_close(folded, fold_reference(y, kw["output_size"], *geometry))
    x = torch.randn_like(folded)
    inner = (unfold_reference(x, *geometry) * y).sum()
    assert abs(inner - (x * folded).sum()) <= 1e-12 * inner.abs().clamp_min(1)


def test_int_arguments_mean_two_dimensions():
    y = rand(2, 12, 9)
    assert_close(tnconv.fold(y, 5, 2, stride=2, padding=1),
                 F.fold(y, 5, 2, stride=2, padding=1))


def test_fold_is_differentiable():
    y = rand(1, 8, 9).requires_grad_()
    kw = dict(output_size=(4, 4), kernel_size=2, padding=1, stride=2)
    assert torch.autograd.gradcheck(lambda v: tnconv.fold(v, **kw), (y,))


def test_errors():
    with pytest.raises(TNConvError, match="fold.*'x'.*L=9"):
        tnconv.fold(rand(2, 12, 10), (4, 4), 2, padding=1, stride=2)
    with pytest.raises(TNConvError, match="fold.*'x'.*∏K=4"):
        tnconv.fold(rand(2, 10, 9), (4, 4), 2, padding=1, stride=2)
    with pytest.raises(TNConvError, match="fold.*'x'"):
        tnconv.fold(rand(12), (4, 4), 2)
    with pytest.raises(TNConvError, match="fold.*kernel_size"):
        tnconv.fold(rand(1, 12, 4), (4, 4), 5)
    with pytest.raises(TNConvError, match="fold.*'x'"):
        tnconv.fold([1.0], (4, 4), 2)
