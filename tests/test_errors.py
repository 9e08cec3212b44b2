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
    (dict(padding="same", kernel_size=(1, 18), padding_mode="reflect"), "padding",
     "got 'same'; allowed: at most 7 in dim 1 for padding_mode='reflect' with input size 8 "
     "('same' pads ((0, 0), (8, 9)) here)"),  # named as the caller wrote it
    (dict(padding=9, padding_mode="circular"), "padding", "at most 8"),
    (dict(padding_mode="mirror"), "padding_mode", "'zeros', 'circular', 'reflect', 'replicate'"),
    (dict(kernel_size=(3, 3, 3)), "kernel_size", "a tuple of 2 such ints"),
    (dict(input_size=8, kernel_size=(3, 3), stride=(1, 1, 1)), "input_size",
     "one entry per spatial dimension"),
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
    (lambda: tnconv.conv(rand(2, 4, 4, 4), rand(6, 4, 5, 5)), "weight"),  # kernel from weight
    (lambda: tnconv.conv(rand(2, 4, 4, 4), rand(6, 4, 3, 3), padding_mode="wrap"),
     "padding_mode"),
    (lambda: tnconv.unfold(rand(2, 4, 8, 8), (3, 3, 3)), "kernel_size"),
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


@pytest.mark.parametrize("options, argument", [
    (dict(reduction="bad"), "reduction"),
    (dict(structure="bad"), "structure"),
    (dict(group_average="no"), "group_average"),
    (dict(group_average=1), "group_average"),
    (dict(reduction=["mean"]), "reduction"),  # unhashable
])
@pytest.mark.parametrize("op", ["kfc", "kfac_reduce"])
@pytest.mark.parametrize("strategy", ["auto", "tn"])
def test_compile_checks_factor_options_up_front(op, options, argument, strategy):
    with pytest.raises(TNConvError, match=rf"compile\('{op}'\): argument '{argument}'"):
        tnconv.compile(op, spec(), strategy=strategy, **options)


@pytest.mark.parametrize("kwargs, argument", [
    (dict(batch_size=True), "batch_size"),
    (dict(rewrite="no"), "rewrite"),
    (dict(per_sample=0), "per_sample"),
    (dict(per_sample=None), "per_sample"),
])
def test_compile_checks_flags(kwargs, argument):
    with pytest.raises(TNConvError, match=f"'{argument}'"):
        tnconv.compile("weight_vjp", spec(), **kwargs)
    with pytest.raises(TNConvError, match="'op'"):
        tnconv.compile(["forward"], spec())


def test_transposed_must_be_a_bool():
    with pytest.raises(TNConvError, match="'transposed' got 'False'"):
        tnconv.nn.functional.kfc(rand(3, 4, 8, 8), 3, stride=2, transposed="False")
    with pytest.raises(TNConvError, match="'transposed'"):
        spec(transposed=1)


X, W, G = (4, 4, 8, 8), (6, 4, 3, 3), (4, 6, 6, 6)


@pytest.mark.parametrize("call, argument, fragment", [
    (lambda d: tnconv.conv(rand(*X), rand(*W, dtype=d)), "weight", "the dtype of x"),
    (lambda d: tnconv.conv(rand(*X).long(), rand(*W).long()), "x", "real floating-point"),
    (lambda d: tnconv.conv(rand(*X), rand(*W), bias=rand(6, dtype=d)), "bias", "dtype"),
    (lambda d: tnconv.conv_input_vjp(X, rand(*W), rand(*G, dtype=d)), "grad_output", "dtype"),
    (lambda d: tnconv.conv_weight_vjp(rand(*X), W, rand(*G, dtype=d)), "grad_output", "dtype"),
    (lambda d: tnconv.conv_input_jvp(rand(*X), rand(*W, dtype=d)), "weight", "dtype"),
    (lambda d: tnconv.conv_weight_jvp(rand(*X), rand(*W, dtype=d)), "weight_tangent", "dtype"),
    (lambda d: tnconv.conv_transpose(rand(*G), rand(*W, dtype=d)), "weight", "dtype"),
    (lambda d: tnconv.conv_transpose_input_vjp(G, rand(*W), rand(*X, dtype=d)), "grad_output",
     "dtype"),
    (lambda d: tnconv.conv_transpose_weight_vjp(rand(*G), W, rand(*X, dtype=d)),
     "grad_output", "dtype"),
])
def test_tensors_of_one_call_share_a_float_dtype(call, argument, fragment):
    with pytest.raises(TNConvError, match=f"'{argument}'.*{fragment}"):
        call(torch.float16)


@pytest.mark.parametrize("call, paired", [
    (lambda x: tnconv.conv(x, rand(*W)), True),
    (lambda x: tnconv.unfold(x, 3), False),
    (lambda x: tnconv.conv_weight_vjp(x, W, rand(*G)), True),
    (lambda x: tnconv.conv_input_jvp(x, rand(*W)), True),
    (lambda x: tnconv.conv_transpose(x, rand(*W).transpose(0, 1).contiguous()), True),
])
def test_a_cached_call_does_not_answer_an_array(call, paired):
    numpy = pytest.importorskip("numpy")
    call(rand(*X))  # sets up the call site for a tensor of this shape
    with pytest.raises(TNConvError, match="'(x|input|input_tangent)'.*ndarray"):
        call(numpy.zeros(X, numpy.float64))
    if paired:  # another dtype than its partner's is checked again, not taken from the cache
        with pytest.raises(TNConvError, match="dtype"):
            call(rand(*X, dtype=torch.float16))


@pytest.mark.parametrize("call, argument", [
    (lambda: tnconv.conv(rand(*X), rand(6, 2, 3, 3), groups=2.0), "groups"),
    (lambda: tnconv.conv(rand(*X), rand(5, 2, 3, 3), groups=2), "weight"),
    (lambda: tnconv.conv_weight_vjp(rand(*X), (5, 2, 3, 3), rand(*G), groups=2),
     "weight_size"),
    (lambda: tnconv.conv_weight_vjp(rand(*X), (6, 3, 3, 3), rand(*G)), "weight_size"),
    (lambda: tnconv.conv_transpose_weight_vjp(rand(*G), (5, 4, 3, 3), rand(*X)),
     "weight_size"),
    (lambda: tnconv.conv_input_vjp(X, rand(6, 2, 3, 3), rand(*G), groups=0), "groups"),
    (lambda: tnconv.conv(rand(*X), rand(*W), stride=(1,)), "stride"),
    (lambda: tnconv.nn.functional.kfc(rand(*X), 3, groups=0), "groups"),
    (lambda: tnconv.nn.functional.kfac_reduce(rand(*X), 3, groups=True), "groups"),
])
def test_errors_name_the_argument_the_caller_passed(call, argument):
    with pytest.raises(TNConvError, match=f"argument '{argument}'"):
        call()


def test_module_hyper_parameters_set_to_ints_are_read_as_torch_reads_them():
    conv, reference = torch.nn.Conv2d(4, 6, 3), torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)
    conv.stride, conv.padding, conv.kernel_size = 2, 1, 3
    x = rand(3, 4, 9, 9)
    torch.testing.assert_close(tnconv.kfc(conv, x), tnconv.kfc(reference, x))
    assert ConvSpec.from_module(conv, x) == ConvSpec.from_module(reference, x)


def test_module_whose_weight_disagrees_with_its_hyper_parameters():
    conv = torch.nn.Conv2d(4, 6, 3)
    conv.kernel_size = (5, 5)  # torch's forward would still use the 3x3 weight
    with pytest.raises(TNConvError, match="'conv'.*weight has shape"):
        tnconv.kfc(conv, rand(2, 4, 9, 9))
    with pytest.raises(TNConvError, match="'conv'.*uninitialised"):
        tnconv.kfac_reduce(torch.nn.LazyConv2d(6, 3), rand(2, 4, 9, 9))


@pytest.mark.parametrize("factor", [tnconv.kfc, tnconv.kfac_reduce])
def test_a_cached_module_factor_still_checks_a_replaced_weight(factor):
    """A cache hit never skips the validation a miss does (the weight is in the key)."""
    conv, x = torch.nn.Conv2d(3, 3, 2, groups=3), rand(2, 3, 4, 4)
    factor(conv, x)
    conv.weight = torch.nn.Parameter(torch.rand(2, 2, 2, 2))
    with pytest.raises(TNConvError, match="'conv'.*weight has shape"):
        factor(conv, x)


def test_small_api_entry_points_reject_bad_arguments(tmp_path):
    pattern = dict(kernel_size=3, stride=1, dilation=1, padding=(1, 1), input_size=4,
                   output_size=4, mode="zeros")
    for name, value in [("mode", "bogus"), ("stride", 0), ("padding", (1,)),
                        ("kernel_size", True)]:
        with pytest.raises(TNConvError, match=f"IndexPattern: argument '{name}'"):
            tnconv.IndexPattern(**{**pattern, name: value})
    with pytest.raises(TNConvError, match="ConvSpec.replace: argument 'bogus'"):
        spec().replace(bogus=1)
    net = tnconv.compile("forward", spec()).network()
    with pytest.raises(TNConvError, match="Network.tensor: argument 'name' got 'Z'"):
        net.tensor("Z")
    with pytest.raises(TNConvError, match="load_einsum: argument 'path' got None"):
        tnconv.load_einsum(None)
    exported = tnconv.compile("forward", spec()).to_einsum()
    with pytest.raises(TNConvError, match="save: argument 'path' got 3"):
        exported.save(3)
    from tnconv.render.dot import render
    with pytest.raises(TNConvError, match="render: argument 'net'"):
        render(None, tmp_path / "a.dot")
    with pytest.raises(TNConvError, match="render: argument 'path' got None"):
        render(net, None)


@pytest.mark.parametrize("call, fragment", [
    (lambda: tnconv.fold(rand(2, 0, 16), (6, 6), 3), "tnconv.fold: argument 'x'"),
    (lambda: tnconv.fold(rand(2, 9, 16), (6, 0), 3), "tnconv.fold: argument 'output_size'"),
    (lambda: tnconv.fold(rand(2, 9, 16), (6, 6), 3, strategy="x"),
     "tnconv.fold: .*'strategy'"),
    (lambda: tnconv.unfold_transpose(rand(2, 3, 4, 4), 3, strategy="x"),
     "tnconv.unfold_transpose: .*'strategy'"),
    (lambda: tnconv.conv_transpose_weight_vjp(rand(2, 4, 5, 5), (0, 3, 3, 3), rand(2, 3, 7, 7)),
     "'weight_size'.*positive"),
    (lambda: tnconv.compile("forward", spec())(rand(1)[0], rand(*W)), r"shape \(N, 4, 8, 8\)"),
    (lambda: tnconv.compile("forward", spec())(rand(*X), rand(*W, dtype=torch.float32)),
     "'weight'.*dtype"),
    (lambda: tnconv.compile("forward", spec()).program_for(0), "'batch_size' got 0"),
    (lambda: tnconv.conv(rand(*X), rand(*W), padding=-1), "'padding' got -1;"),
    (lambda: tnconv.conv(rand(1, 1, 2), rand(1, 1, 1), padding=10 ** 30), "'padding'.*at most"),
    (lambda: tnconv.conv_transpose(rand(1, 1, 2), rand(1, 1, 1), stride=2 ** 40),
     "'stride'.*at most"),
    (lambda: tnconv.fold(rand(1, 1, 1), (2 ** 40,), 1, stride=2 ** 40), "'output_size'"),
])
def test_messages_show_what_the_caller_passed(call, fragment):
    with pytest.raises(TNConvError, match=fragment):
        call()
