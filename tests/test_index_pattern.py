"""IndexPattern: the one-hot structure per padding mode, and cached materialisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tnconv.spec.index_pattern import IndexPattern, materialize
from tests.helpers import DEVICE
from tests.references import _pad_indices


@pytest.mark.parametrize("mode", ["zeros", "circular", "reflect", "replicate"])
@pytest.mark.parametrize("kernel, stride, dilation, padding, size", [
    (3, 1, 1, (1, 1), 5), (4, 2, 1, (1, 2), 7), (2, 3, 2, (2, 0), 6), (1, 2, 1, (0, 0), 7),
])
def test_pattern_matches_padded_sliding_window(mode, kernel, stride, dilation, padding, size):
    out = (size + sum(padding) - dilation * (kernel - 1) - 1) // stride + 1
    pattern = IndexPattern(kernel, stride, dilation, padding, size, out, mode)
    padded = _pad_indices(size, *padding, mode)
    expected = np.array([[padded[o * stride + k * dilation] for o in range(out)]
                         for k in range(kernel)])
    assert pattern.source_indices().tolist() == expected.tolist()
    dense = pattern.to_numpy()
    assert dense.shape == (kernel, out, size)
    assert dense.sum(axis=2).max() <= 1  # one-hot in i


def test_materialize_is_cached_per_device_and_dtype():
    pattern = IndexPattern(3, 1, 1, (1, 1), 6, 6)
    a = materialize(pattern, DEVICE, torch.float64)
    assert materialize(pattern, DEVICE, torch.float64) is a
    b = materialize(pattern, DEVICE, torch.float32)
    assert b.dtype == torch.float32 and b is not a
    assert torch.equal(a.cpu(), torch.from_numpy(pattern.to_numpy()))
