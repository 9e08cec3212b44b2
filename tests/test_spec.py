"""ConvSpec: normalisation, derived sizes, hashing, reading torch modules."""

from __future__ import annotations

import pytest
import torch

from tnconv import ConvSpec
from tests.helpers import rand


def test_ints_broadcast_and_padding_normalises():
    spec = ConvSpec(3, 6, kernel_size=3, input_size=(10, 12, 7), stride=2, padding=(1, (0, 2), 0))
    assert spec.ndim == 3
    assert spec.kernel_size == (3, 3, 3) and spec.stride == (2, 2, 2)
    assert spec.padding == ((1, 1), (0, 2), (0, 0))
    assert spec.output_size == (5, 6, 3)


@pytest.mark.parametrize("kernel, dilation, expected", [
    (3, 1, (1, 1)), (4, 1, (1, 2)), (4, 2, (3, 3)), (2, 3, (1, 2)), (1, 1, (0, 0)),
])
def test_same_puts_extra_pixel_right(kernel, dilation, expected):
    spec = ConvSpec(1, 1, kernel_size=kernel, input_size=(9,), padding="same", dilation=dilation)
    assert spec.padding == (expected,)
    assert spec.output_size == (9,)


def test_valid_padding():
    assert ConvSpec(1, 1, 3, (9,), padding="valid").padding == ((0, 0),)


def test_spec_is_hashable_and_structural():
    a = ConvSpec(3, 6, kernel_size=3, input_size=(8, 8), padding=1)
    b = ConvSpec(3, 6, kernel_size=(3, 3), input_size=[8, 8], padding=((1, 1), (1, 1)))
    assert a == b and hash(a) == hash(b)
    assert a != a.replace(stride=2)
    with pytest.raises(Exception):
        a.stride = 2  # frozen


def test_transposed_output_size_matches_torch():
    spec = ConvSpec(4, 6, kernel_size=4, input_size=(5, 7), stride=2, padding=1,
                    transposed=True, output_padding=(1, 0), groups=2)
    layer = torch.nn.ConvTranspose2d(4, 6, 4, stride=2, padding=1, output_padding=(1, 0), groups=2)
    assert tuple(layer(torch.rand(1, 4, 5, 7)).shape[2:]) == spec.output_size
    assert spec.weight_shape == tuple(layer.weight.shape)


@pytest.mark.parametrize("module", [
    torch.nn.Conv1d(2, 4, 3, stride=2, padding=1, padding_mode="circular"),
    torch.nn.Conv2d(4, 8, (3, 2), padding="same", dilation=(2, 1), groups=2,
                    padding_mode="reflect"),
    torch.nn.Conv3d(3, 3, 2, groups=3, padding="valid"),
    torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2),
])
def test_from_module_matches_module_output(module):
    ndim = len(module.kernel_size)
    x = rand(2, module.in_channels, *([6] * ndim), dtype=torch.float32)
    spec = ConvSpec.from_module(module, x)
    assert spec.ndim == ndim and spec.groups == module.groups
    assert spec.padding_mode == module.padding_mode
    assert spec.weight_shape == tuple(module.weight.shape)
    assert spec.output_size == tuple(module(x.cpu()).shape[2:])
    assert ConvSpec.from_module(module, x[0]) == spec  # unbatched input


def test_patterns_follow_spec():
    spec = ConvSpec(1, 1, kernel_size=(2, 3), input_size=(5, 6), stride=(1, 2), padding=(0, 1))
    p1, p2 = spec.patterns()
    assert p1.shape == (2, 4, 5) and p2.shape == (3, 3, 6)
    assert p2.source_indices()[:, 1].tolist() == [1, 2, 3]
