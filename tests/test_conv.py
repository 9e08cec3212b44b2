"""tnconv.conv against torch (N = 1..3) and an independent loop reference (N = 4..6)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given

import tnconv
from tests.helpers import DEVICE, assert_close, rand
from tests.references import conv_nd, torch_conv
from tests.strategies import conv_params

STRATEGIES = ("auto", "tn")


def explicit_pairs(padding, kernel, dilation):
    """Padding as (left, right) pairs, computed independently of tnconv."""
    ndim = len(kernel)
    if padding == "valid":
        return [(0, 0)] * ndim
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        return [(t // 2, t - t // 2) for t in totals]
    if isinstance(padding, int):
        return [(padding, padding)] * ndim
    return [p if isinstance(p, tuple) else (p, p) for p in padding]


def draw_tensors(p):
    x = rand(*p["input_shape"])
    w = rand(p["out_channels"], p["in_channels"] // p["groups"], *p["kernel_size"])
    return x, w


@pytest.mark.parametrize("strategy", STRATEGIES)
@given(p=conv_params())
def test_conv_matches_torch(strategy, p):
    x, w = draw_tensors(p)
    pairs = explicit_pairs(p["padding"], p["kernel_size"], p["dilation"])
    expected = torch_conv(x, w, p["stride"], pairs, p["dilation"], p["groups"], p["padding_mode"])
    actual = tnconv.conv(x, w, stride=p["stride"], padding=p["padding"], dilation=p["dilation"],
                         groups=p["groups"], padding_mode=p["padding_mode"], strategy=strategy)
    assert_close(actual, expected)


@pytest.mark.parametrize("mode", ["zeros", "circular", "reflect", "replicate"])
def test_conv_matches_torch_module_same_even_kernel(mode):
    conv = torch.nn.Conv2d(4, 6, (4, 2), padding="same", padding_mode=mode, groups=2,
                           dilation=(1, 2)).double().to(DEVICE)
    x = rand(3, 4, 7, 9)
    with torch.no_grad():
        expected = conv(x)
        for strategy in STRATEGIES:
            actual = tnconv.conv(x, conv.weight, conv.bias, padding="same", padding_mode=mode,
                                 groups=2, dilation=(1, 2), strategy=strategy)
            assert_close(actual, expected)


def test_depthwise_with_bias():
    x, w, b = rand(2, 8, 10, 10), rand(8, 1, 3, 3), rand(8)
    expected = torch.nn.functional.conv2d(x, w, b, stride=2, padding=1, groups=8)
    for strategy in STRATEGIES:
        assert_close(tnconv.conv(x, w, b, stride=2, padding=1, groups=8, strategy=strategy),
                     expected)


def test_unbatched_input():
    x, w = rand(3, 11), rand(5, 3, 3)
    expected = torch.nn.functional.conv1d(x.unsqueeze(0), w, padding=1).squeeze(0)
    assert_close(tnconv.conv(x, w, padding=1, strategy="tn"), expected)


@pytest.mark.parametrize("ndim", [4, 5, 6])
@pytest.mark.parametrize("mode", ["zeros", "circular", "replicate"])
def test_conv_high_dimensional(ndim, mode):
    torch.manual_seed(ndim)
    kernel = (2, 3, 1, 2, 2, 1)[:ndim]
    stride = (1, 2, 1, 1, 2, 1)[:ndim]
    dilation = (1, 1, 1, 2, 1, 1)[:ndim]
    padding = ((1, 0), 1, 0, (0, 1), 1, 0)[:ndim]
    size = (4, 5, 3, 4, 3, 2)[:ndim]
    x, w = rand(2, 4, *size), rand(2, 2, *kernel)
    pairs = explicit_pairs(padding, kernel, dilation)
    expected = conv_nd(x, w, stride, pairs, dilation, groups=2, mode=mode)
    for strategy in STRATEGIES:
        actual = tnconv.conv(x, w, stride=stride, padding=padding, dilation=dilation, groups=2,
                             padding_mode=mode, strategy=strategy)
        assert_close(actual, expected)


def test_reference_agrees_with_torch():
    """The loop reference itself, checked once against torch in 3d."""
    x, w = rand(2, 4, 5, 6, 4), rand(6, 2, 2, 3, 2)
    pairs = [(1, 0), (1, 1), (0, 2)]
    for mode in ("zeros", "circular", "reflect", "replicate"):
        assert_close(conv_nd(x, w, (1, 2, 1), pairs, (2, 1, 1), 2, mode),
                     torch_conv(x, w, (1, 2, 1), pairs, (2, 1, 1), 2, mode))


def test_float32_and_device_follow_input():
    x, w = rand(2, 3, 8, 8, dtype=torch.float32), rand(4, 3, 3, 3, dtype=torch.float32)
    y = tnconv.conv(x, w, padding=1, strategy="tn")
    assert y.dtype == torch.float32 and y.device == x.device
    assert_close(y, torch.nn.functional.conv2d(x, w, padding=1), rtol=1e-5)
