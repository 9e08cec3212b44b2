"""A batch of no samples behaves as in torch: empty results, or zeros where the batch is summed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tnconv
from tests.helpers import DEVICE, rand

STRATEGIES = ["auto", "tn"]


def _cases(strategy: str):
    x, w = rand(0, 3, 8, 7), rand(4, 3, 3, 2)
    g = rand(0, 4, 6, 6)
    wt = rand(3, 4, 3, 3)  # a transposed convolution 3 -> 4 channels
    kw = dict(strategy=strategy)
    conv = torch.nn.Conv2d(3, 4, (3, 2)).to(DEVICE).double()
    return {
        "conv": (tnconv.conv(x, w, **kw), F.conv2d(x, w)),
        "conv_transpose": (tnconv.conv_transpose(x, wt, stride=2, **kw),
                           F.conv_transpose2d(x, wt, stride=2)),
        "unfold": (tnconv.unfold(x, (3, 2), **kw), F.unfold(x, (3, 2))),
        "input_vjp": (tnconv.conv_input_vjp(x.shape, w, g, **kw),
                      torch.nn.grad.conv2d_input(x.shape, w, g)),
        "weight_vjp": (tnconv.conv_weight_vjp(x, w.shape, g, **kw),
                       torch.nn.grad.conv2d_weight(x, w.shape, g)),
        "patches": (tnconv.patches(conv, x, **kw), x.new_zeros(0, 1, 36, 18)),
        "averaged_patches": (tnconv.averaged_patches(conv, x, **kw), x.new_zeros(0, 1, 18)),
        "kfc sum": (tnconv.kfc(conv, x, reduction="sum", **kw), x.new_zeros(1, 19, 19)),
        "kfac_reduce sum": (tnconv.kfac_reduce(conv, x, reduction="sum", **kw),
                            x.new_zeros(1, 19, 19)),
    }


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_operation_takes_an_empty_batch_as_torch_does(strategy):
    for _ in range(2):  # the second time through the call-site caches
        for name, (ours, theirs) in _cases(strategy).items():
            assert ours.shape == theirs.shape, name
            assert ours.dtype == theirs.dtype and ours.device == theirs.device, name
            assert not ours.any() and not theirs.any(), name


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_mean_over_no_samples_is_an_error_naming_the_input(strategy):
    spec = tnconv.ConvSpec(3, 4, 3, (8, 8))
    with pytest.raises(tnconv.TNConvError, match="'input'.*no samples"):
        tnconv.compile("kfc", spec, strategy=strategy)(rand(0, 3, 8, 8))
    with pytest.raises(tnconv.TNConvError, match="'weight_size'"):  # no batch: must be ≥ 1
        tnconv.conv_weight_vjp(rand(2, 3, 8, 8), (0, 3, 3, 3), rand(2, 0, 6, 6))
