"""tnconv.unfold against F.unfold (2d) and a strided-slicing reference (any N)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given

import tnconv
from tests.helpers import assert_close, rand
from tests.references import unfold_nd
from tests.strategies import conv_params
from tests.test_conv import STRATEGIES, explicit_pairs


@pytest.mark.parametrize("strategy", STRATEGIES)
@given(p=conv_params(ndims=(2,), modes=("zeros",)))
def test_unfold_matches_torch_2d(strategy, p):
    if not isinstance(p["padding"], int):
        p["padding"] = 1  # F.unfold takes symmetric int padding only
    x = rand(*p["input_shape"])
    expected = F.unfold(x, p["kernel_size"], dilation=p["dilation"], padding=p["padding"],
                        stride=p["stride"])
    actual = tnconv.unfold(x, p["kernel_size"], stride=p["stride"], padding=p["padding"],
                           dilation=p["dilation"], strategy=strategy)
    assert_close(actual, expected)


@pytest.mark.parametrize("strategy", STRATEGIES)
@given(p=conv_params())
def test_unfold_matches_reference(strategy, p):
    x = rand(*p["input_shape"])
    pairs = explicit_pairs(p["padding"], p["kernel_size"], p["dilation"])
    expected = unfold_nd(x, p["kernel_size"], p["stride"], pairs, p["dilation"],
                         p["padding_mode"])
    actual = tnconv.unfold(x, p["kernel_size"], stride=p["stride"], padding=p["padding"],
                           dilation=p["dilation"], padding_mode=p["padding_mode"],
                           strategy=strategy)
    assert_close(actual, expected)


def test_reference_matches_f_unfold():
    x = rand(2, 3, 7, 8)
    assert_close(unfold_nd(x, (3, 2), (2, 1), [(1, 1), (0, 0)], (1, 2)),
                 F.unfold(x, (3, 2), dilation=(1, 2), padding=(1, 0), stride=(2, 1)))


@pytest.mark.parametrize("ndim", [4, 5, 6])
def test_unfold_high_dimensional(ndim):
    kernel = (2, 1, 2, 1, 2, 2)[:ndim]
    stride = (1, 2, 1, 1, 1, 2)[:ndim]
    padding = (1, 0, (0, 1), 0, 0, 1)[:ndim]
    size = (3, 4, 3, 2, 3, 3)[:ndim]
    x = rand(2, 2, *size)
    pairs = explicit_pairs(padding, kernel, (1,) * ndim)
    expected = unfold_nd(x, kernel, stride, pairs, (1,) * ndim)
    for strategy in STRATEGIES:
        assert_close(tnconv.unfold(x, kernel, stride=stride, padding=padding,
                                   strategy=strategy), expected)


def test_unfold_layout_is_channel_major():
    x = torch.arange(2 * 5, dtype=torch.float64).reshape(1, 2, 5)
    u = tnconv.unfold(x, 2, strategy="tn")
    assert u.shape == (1, 4, 4)
    assert u[0, :, 0].tolist() == [0.0, 1.0, 5.0, 6.0]  # (c0,k0), (c0,k1), (c1,k0), (c1,k1)
