"""Every bad input raises TNConvError naming the argument, the value and what is allowed."""

from __future__ import annotations

import pytest
import torch

import tnconv
from tnconv import ConvSpec, TNConvError
from tests.helpers import rand


def spec(**changes):
    kwargs = dict(in_channels=4, out_channels=6, kernel_size=3, input_size=(8, 8))
    kwargs.update(changes)
    return ConvSpec(**kwargs)


@pytest.mark.parametrize("changes, argument, fragment", [
    (dict(in_channels=0), "in_channels", "positive int"),
    (dict(out_channels=-1), "out_channels", "positive int"),
    (dict(kernel_size=0), "kernel_size", ">= 1"),
    (dict(stride=(1, 0)), "stride", ">= 1"),
    (dict(dilation=-2), "dilation", ">= 1"),
    (dict(padding=-1), "padding", "'same' or 'valid'"),
    (dict(input_size=(8, 0)), "input_size", ">= 1"),
    (dict(groups=4), "out_channels", "multiple of groups=4"),
    (dict(groups=3), "in_channels", "multiple of groups=3"),
    (dict(kernel_size=9), "kernel_size", "no larger than the padded input"),
    (dict(kernel_size=3, dilation=5), "kernel_size", "no larger than the padded input"),
    (dict(padding="same", stride=2), "padding", "'same' only with stride 1"),
    (dict(padding="full"), "padding", "'same' or 'valid'"),
    (dict(padding=8, padding_mode="reflect"), "padding", "at most 7"),
    (dict(padding=9, padding_mode="circular"), "padding", "at most 8"),
    (dict(padding_mode="mirror"), "padding_mode", "'zeros', 'circular', 'reflect', 'replicate'"),
    (dict(kernel_size=(3, 3, 3)), "input_size", "one entry per spatial dimension"),
    (dict(output_padding=1), "output_padding", "unless transposed=True"),
    (dict(transposed=True, output_padding=1), "output_padding", "smaller than stride"),
    (dict(transposed=True, padding_mode="reflect"), "padding_mode", "'zeros' for a transposed"),
    (dict(transposed=True, padding=9), "padding", "positive output size"),
])
def test_spec_errors(changes, argument, fragment):
    with pytest.raises(TNConvError) as info:
        spec(**changes)
    message = str(info.value)
    assert f"'{argument}'" in message and fragment in message, message
    assert "ConvSpec" in message


def test_error_is_value_error():
    assert issubclass(TNConvError, ValueError)


@pytest.mark.parametrize("call, argument", [
    (lambda: tnconv.conv(rand(4, 8), rand(6, 4, 3, 3)), "x"),
    (lambda: tnconv.conv(rand(2, 4, 8), rand(6, 4, 3, 3)), "weight"),
    (lambda: tnconv.conv(rand(2, 4, 8, 8), rand(6, 3, 3, 3)), "weight"),
    (lambda: tnconv.conv(rand(2, 4, 8, 8), rand(6, 2, 3, 3), groups=2, stride=0), "stride"),
    (lambda: tnconv.conv(rand(2, 4, 8, 8), rand(6, 4, 3, 3), bias=rand(5)), "bias"),
    (lambda: tnconv.conv(rand(2, 4, 8, 8), "w"), "weight"),
    (lambda: tnconv.conv(rand(2, 4, 8, 8), rand(6, 4)), "weight"),
    (lambda: tnconv.conv(rand(2, 4, 4, 4), rand(6, 4, 5, 5)), "kernel_size"),
    (lambda: tnconv.conv(rand(2, 4, 4, 4), rand(6, 4, 3, 3), padding_mode="wrap"),
     "padding_mode"),
    (lambda: tnconv.unfold(rand(2, 4, 8, 8), (3, 3, 3)), "input_size"),
    (lambda: tnconv.unfold(rand(2, 4), 3), "x"),
    (lambda: tnconv.unfold([1, 2], 3), "x"),
])
def test_functional_errors_name_the_operation(call, argument):
    with pytest.raises(TNConvError) as info:
        call()
    message = str(info.value)
    assert message.startswith("tnconv."), message
    assert f"'{argument}'" in message, message


def test_compile_errors():
    s = spec()
    with pytest.raises(TNConvError, match="'op'.*'forward'"):
        tnconv.compile("backward", s)
    with pytest.raises(TNConvError, match="'strategy'"):
        tnconv.compile("forward", s, strategy="fast")
    with pytest.raises(TNConvError, match="'spec'"):
        tnconv.compile("forward", (4, 6, 3))
    with pytest.raises(TNConvError, match="'colour'"):
        tnconv.compile("forward", s, colour="red")
    fwd = tnconv.compile("forward", s, strategy="tn")
    with pytest.raises(TNConvError, match="'weight'.*shape"):
        fwd(rand(2, 4, 8, 8), rand(6, 4, 3, 2))
    with pytest.raises(TNConvError, match="expected 2 tensors"):
        fwd(rand(2, 4, 8, 8))


def test_from_module_errors():
    with pytest.raises(TNConvError, match="'module'"):
        ConvSpec.from_module(torch.nn.Linear(3, 4), rand(2, 3))
    with pytest.raises(TNConvError, match="'x'.*channels"):
        ConvSpec.from_module(torch.nn.Conv2d(3, 4, 3), rand(2, 5, 8, 8))
    with pytest.raises(TNConvError, match="'x'"):
        ConvSpec.from_module(torch.nn.Conv2d(3, 4, 3), rand(2, 3, 8))
