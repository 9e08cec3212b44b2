"""The conv step family: a window view contracted by torch's own convolution kernels.

The rule fires where a windowed argument meets an operand in a convolution's roles and
one group's weight block is large enough; the bound step equals torch's convolution,
its weight gradient and vmap's per-sample gradients in float64, and falls back to the
plain einsum where autograd records or the strides do not say where the pixels are."""

from __future__ import annotations

import dataclasses
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tests.curvature_references import layer, per_sample_gradients
from tests.helpers import assert_close, rand, run_step, schedule_of
from tests.strategies import conv_params
from tests.test_transposed import transpose_reference, transposed_specs
from tnconv.ir.views import Dilate, Flip, Pad, View, Window
from tnconv.lower.schedule.conv import MAX_WEIGHT_OUT, MIN_BLOCK, ConvKernel, conv_rule
from tnconv.lower.schedule.conv_views import split_windows, transposed_arguments
from tnconv.lower.schedule.site import Operand, Site

CASES = {  # large enough channel blocks for the kernels
    "1d strided": tnconv.ConvSpec(8, 16, 5, input_size=(40,), stride=3),
    "2d padded": tnconv.ConvSpec(8, 16, 3, input_size=(9, 10), padding=1),
    "2d dilated": tnconv.ConvSpec(16, 8, 3, input_size=(12, 11), dilation=2, padding=2),
    "2d groups": tnconv.ConvSpec(16, 32, 3, input_size=(8, 8), groups=2, stride=2),
    "2d reflect": tnconv.ConvSpec(8, 8, 3, input_size=(7, 7), padding=1,
                                  padding_mode="reflect"),
    "2d same even": tnconv.ConvSpec(8, 8, 4, input_size=(9, 9), padding="same"),
    "3d": tnconv.ConvSpec(8, 8, (3, 3, 2), input_size=(5, 6, 7), stride=(1, 2, 1), padding=1),
}


def kernels(schedule) -> list[ConvKernel]:
    return [step for step in schedule.steps if isinstance(step, ConvKernel)]


def _weight_grad(spec: tnconv.ConvSpec, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    w = rand(*spec.weight_shape).requires_grad_()
    (layer(spec)(x, w) * v).sum().backward()
    return w.grad


def _assert_equals_torch(op: str, spec: tnconv.ConvSpec, batch: int = 2) -> None:
    """The tensor-network route's forward or weight VJP on random tensors equals torch's."""
    x, w = rand(batch, spec.in_channels, *spec.input_size), rand(*spec.weight_shape)
    v = rand(batch, spec.out_channels, *spec.output_size)
    compiled = tnconv.compile(op, spec, strategy="tn")
    if op == "forward":
        assert_close(compiled(x, w), layer(spec)(x, w))
    else:
        assert_close(compiled(x, v), _weight_grad(spec, x, v))


@pytest.mark.parametrize("name", CASES)
def test_forward_and_weight_vjp_run_torch_kernels_and_equal_torch(name):
    spec = CASES[name]
    assert [k.weight for k in kernels(schedule_of("forward", spec, 2))] == [False]
    assert [k.weight for k in kernels(schedule_of("weight_vjp", spec, 2))] == [True]
    _assert_equals_torch("forward", spec)
    _assert_equals_torch("weight_vjp", spec)


@pytest.mark.parametrize("name", ["1d strided", "2d groups", "3d"])
def test_per_sample_gradients_are_the_kernels_batch_times_groups(name):
    """Per-sample weight gradients: one weight-gradient call with N·G groups."""
    spec, batch = CASES[name], 3
    x, w = rand(batch, spec.in_channels, *spec.input_size), rand(*spec.weight_shape)
    v = rand(batch, spec.out_channels, *spec.output_size)
    compiled = tnconv.compile("weight_vjp", spec, strategy="tn", per_sample=True)
    (step,) = kernels(compiled.schedule(batch))
    assert step.weight and step.sizes[1] == batch * spec.groups
    assert_close(compiled(x, v), per_sample_gradients(spec, x, w, v))


DEPTHWISE_3 = tnconv.ConvSpec(32, 32, 3, input_size=(8, 8), groups=32, padding=1)
DEPTHWISE_5 = tnconv.ConvSpec(32, 32, 5, input_size=(8, 8), groups=32, padding=2)


@pytest.mark.parametrize("op, spec, kernel", [
    ("forward", DEPTHWISE_3, True),       # torch's depthwise convolution
    ("weight_vjp", DEPTHWISE_3, True),    # and its weight gradient, up to 3 x 3 taps
    ("forward", DEPTHWISE_5, True),
    ("weight_vjp", DEPTHWISE_5, False),   # more taps: the shift steps
    ("forward", tnconv.ConvSpec(16, 16, 3, input_size=(8, 8), groups=4, padding=1), False),
    ("weight_vjp", tnconv.ConvSpec(16, 16, 3, input_size=(8, 8), groups=4, padding=1), False),
    ("forward", tnconv.ConvSpec(16, 32, 1, input_size=(8, 8), stride=2), False),  # no windows
    ("weight_vjp", tnconv.ConvSpec(16, 32, 1, input_size=(8, 8), stride=2), False),
    ("forward", tnconv.ConvSpec(8, 8, (2, 2, 1, 2), input_size=(3, 3, 2, 3)), False),  # 4d
    ("weight_vjp", tnconv.ConvSpec(8, 8, (2, 2, 1, 2), input_size=(3, 3, 2, 3)), False),
])
def test_where_the_kernels_run(op, spec, kernel):
    """Blocks of 64 weights or more, and depthwise blocks (weight gradients up to 3 x 3
    taps), run by torch's kernels; ResNeXt-like 4 x 4 blocks, layers without windows and
    4d layers keep their steps. The values equal torch's either way."""
    steps = kernels(schedule_of(op, spec, 2))
    assert bool(steps) is kernel
    if spec.ndim <= 3:  # torch has no 4d convolution to compare with
        _assert_equals_torch(op, spec)


def test_zero_padding_moves_into_the_kernel():
    """A zero-padded layer: the argument is not padded first, the kernel pads; reflect
    padding stays in the view."""
    zeros = kernels(schedule_of("forward", CASES["2d padded"], 2))
    assert [k.padding for k in zeros] == [(1, 1)]
    reflect = kernels(schedule_of("forward", CASES["2d reflect"], 2))
    assert [k.padding for k in reflect] == [None]


@pytest.mark.parametrize("op", ["forward", "weight_vjp"])
def test_a_trimmed_right_pad_moves_into_the_kernel(op):
    """A 3x3/2 depthwise layer on 12 pixels pads (1, 0): the windows never reach a right
    pad, so the kernel pads 1 on both sides and has the same starts."""
    spec = tnconv.ConvSpec(16, 16, 3, input_size=(12, 12), stride=2, padding=1, groups=16)
    (step,) = kernels(schedule_of(op, spec, 2))
    assert step.padding == (1, 1)
    _assert_equals_torch(op, spec)


def test_a_pad_the_windows_read_stays_in_the_view():
    """Padding (1, 2) ('same' with an even kernel): torch pads both sides alike, so the
    view keeps its pads."""
    (step,) = kernels(schedule_of("forward", CASES["2d same even"], 2))
    assert step.padding is None


def _site(other_legs: tuple[str, ...], out: tuple[str, ...], d: int = 64) -> Site:
    view = View((2, 3, 9), (Pad(2, 1, 1), Window(2, size=3, step=2)))   # [n, c, o, k]
    sizes = {"n": 2, "c": 3, "d": d, "o": 4, "k": 3}
    return Site((Operand(0, ("n", "c", "o", "k"), False, view=view, argument=True),
                 Operand(1, other_legs, False)), out, 2, sizes)


def test_the_rule_reads_the_roles_of_the_legs():
    forward = conv_rule(_site(("d", "c", "k"), ("n", "d", "o")))
    assert forward is not None and not forward.weight and forward.stride == (2,)
    weight = conv_rule(_site(("n", "d", "o"), ("d", "c", "k")))
    assert weight is not None and weight.weight
    per_sample = conv_rule(_site(("n", "d", "o"), ("n", "d", "c", "k")))
    assert per_sample is not None and per_sample.sizes[:2] == (1, 2)
    assert conv_rule(_site(("d", "k"), ("n", "d", "o"))) is None    # c summed by X alone
    assert conv_rule(_site(("d", "c", "k"), ("n", "d", "o", "k"))) is None   # k kept and summed
    assert conv_rule(_site(("d", "c", "k"), ("n", "d", "o"), d=MIN_BLOCK // 3 - 1)) is None
    wide = MAX_WEIGHT_OUT + 1  # a weight gradient with that many outputs: unfolded product
    assert conv_rule(_site(("d", "c", "k"), ("n", "d", "o"), d=wide)) is not None
    assert conv_rule(_site(("n", "d", "o"), ("d", "c", "k"), d=wide)) is None


def _bound_step_inputs():
    site = _site(("d", "c", "k"), ("n", "d", "o"))
    step = conv_rule(site)
    x = rand(2, 3, 9)
    windows = torch.nn.functional.pad(x, (1, 1)).unfold(2, 3, 2)
    return site, step, windows, rand(64, 3, 3)


def test_the_bound_step_equals_einsum_and_falls_back_where_it_must():
    site, step, windows, w = _bound_step_inputs()
    expected = torch.einsum(site.equation(), windows, w)
    assert_close(run_step(step, windows, w), expected)
    # A copy: its strides no longer say where the pixels are, the einsum runs.
    assert_close(run_step(step, windows.contiguous(), w), expected)
    # Autograd records: the einsum runs, and the gradient reaches the operands.
    w.requires_grad_()
    got = run_step(step, windows, w)
    assert got.grad_fn is not None
    assert_close(got.detach(), expected)
    (grad,) = torch.autograd.grad(got.sum(), w)
    assert_close(grad, windows.sum((0, 2)).unsqueeze(0).expand_as(w))


def test_a_step_that_pads_reads_the_unpadded_data_and_falls_back_alike():
    site, step, windows, w = _bound_step_inputs()
    x = rand(2, 3, 9)
    windows = torch.nn.functional.pad(x, (1, 1)).unfold(2, 3, 2)
    expected = torch.einsum(site.equation(), windows, w)
    padded = dataclasses.replace(step, padding=(1,),
                                 absorbed=(Pad(2, 1, 1), Window(2, size=3, step=2)))
    assert_close(run_step(padded, x, w), expected)
    x.requires_grad_()
    got = run_step(padded, x, w)
    (grad,) = torch.autograd.grad((got * expected).sum(), x)
    reference = x.detach().requires_grad_()
    (expected_grad,) = torch.autograd.grad(
        (torch.nn.functional.conv1d(reference, w, stride=2, padding=1) * expected).sum(),
        reference)
    assert_close(got.detach(), expected)
    assert_close(grad, expected_grad)


def test_the_kernel_not_the_fallback_computes_a_window_view(monkeypatch):
    """The comparisons above check torch's kernel: with einsum unavailable, the step still
    runs on a window view, and only the fallback (a copied view) needs einsum."""
    site, step, windows, w = _bound_step_inputs()
    expected = torch.einsum(site.equation(), windows, w)

    def no_einsum(*args, **kwargs):
        raise RuntimeError("einsum called")

    monkeypatch.setattr(torch, "einsum", no_einsum)
    assert_close(run_step(step, windows, w), expected)
    with pytest.raises(RuntimeError, match="einsum called"):
        run_step(step, windows.contiguous(), w)


def _kernel_sized_blocks(params: dict) -> tuple[int, tnconv.ConvSpec]:
    """The batch size and the spec of drawn `conv_params` with 8x the channels (blocks of
    at least 64, the size the conv step family runs as torch's kernels)."""
    params = dict(params)
    batch, _, *size = params.pop("input_shape")
    params.pop("ndim")
    params["in_channels"] *= 8
    params["out_channels"] *= 8
    return batch, tnconv.ConvSpec(input_size=tuple(size), **params)


@given(params=conv_params(), per_sample=st.booleans())
def test_any_hyper_parameters_with_kernel_sized_blocks(params, per_sample):
    """Random hyper-parameters with 8x the channels (blocks of at least 64): forward and
    (per-sample) weight VJPs on the tensor-network route equal torch."""
    batch, spec = _kernel_sized_blocks(params)
    x, w = rand(batch, spec.in_channels, *spec.input_size), rand(*spec.weight_shape)
    v = rand(batch, spec.out_channels, *spec.output_size)
    assert_close(tnconv.compile("forward", spec, strategy="tn")(x, w), layer(spec)(x, w))
    got = tnconv.compile("weight_vjp", spec, strategy="tn", per_sample=per_sample)(x, v)
    expected = per_sample_gradients(spec, x, w, v)
    assert_close(got, expected if per_sample else expected.sum(0))


TRANSPOSED = {  # (spec, operation): strided scatters whose blocks torch's kernels run
    "2d depthwise 5x5/2": (tnconv.ConvSpec(16, 16, 5, input_size=(14, 14), stride=2,
                                           padding=2, groups=16), "input_vjp"),
    "2d depthwise transposed": (tnconv.ConvSpec(16, 16, 3, input_size=(7, 7), stride=2,
                                                padding=1, output_padding=1, groups=16,
                                                transposed=True), "forward"),
    "3d 3x3x3/2": (tnconv.ConvSpec(8, 16, 3, input_size=(6, 8, 8), stride=2, padding=1),
                   "input_vjp"),
    "1d dilated": (tnconv.ConvSpec(8, 16, 3, input_size=(30,), stride=3, dilation=2,
                                   padding=2), "input_vjp"),
    "2d mixed strides": (tnconv.ConvSpec(16, 8, (3, 2), input_size=(11, 10), stride=(2, 1),
                                         padding=(1, 0)), "input_vjp"),
}


def _input_grad(spec: tnconv.ConvSpec, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    x = rand(v.shape[0], spec.in_channels, *spec.input_size).requires_grad_()
    (layer(spec)(x, w) * v).sum().backward()
    return x.grad


@pytest.mark.parametrize("name", TRANSPOSED)
def test_a_strided_scatter_runs_as_one_transposed_kernel(name):
    """Input VJPs and transposed convolutions: the cotangent is gathered (dilated and
    padded under stride-1 windows, the kernel flipped), and that whole network is one
    call of torch's transposed convolution reading the cotangent as it is, no dilated
    copy and no folds."""
    spec, op = TRANSPOSED[name]
    batch = 2
    compiled = tnconv.compile(op, spec, strategy="tn")
    schedule = compiled.schedule(batch)
    (step,) = schedule.steps
    assert isinstance(step, ConvKernel) and step.transposed == spec.stride
    assert "scatter_to_gather" in [s.rule for s in compiled.rewrite_result(batch).steps]
    assert not any(isinstance(s, (Dilate, Flip)) for a in schedule.arguments
                   if a.view is not None for s in a.view.steps)
    assert not step.kernel_flipped   # the weight read as given, no flipped copies
    w = rand(*spec.weight_shape)
    if op == "forward":
        x = rand(batch, spec.in_channels, *spec.input_size)
        assert_close(compiled(x, w), layer(spec)(x, w))
    else:
        v = rand(batch, spec.out_channels, *spec.output_size)
        assert_close(compiled(w, v), _input_grad(spec, w, v))


def test_the_transposed_kernel_falls_back_to_the_gathered_einsum_under_autograd():
    """Where autograd records, the step reads its view (dilation, pads, windows) and runs
    the einsum: the same value, and the gradient through it is torch's."""
    spec, _ = TRANSPOSED["2d depthwise 5x5/2"]
    compiled = tnconv.compile("input_vjp", spec, strategy="tn")
    w, v = rand(*spec.weight_shape), rand(2, spec.out_channels, *spec.output_size)
    expected = _input_grad(spec, w, v)
    v.requires_grad_()
    got = compiled(w, v)
    assert_close(got.detach(), expected)
    (grad,) = torch.autograd.grad((got * expected).sum(), v)
    reference = v.detach().requires_grad_()
    (expected_grad,) = torch.autograd.grad((_input_grad_graph(spec, w, reference)
                                            * expected).sum(), reference)
    assert_close(grad, expected_grad)


def _input_grad_graph(spec: tnconv.ConvSpec, w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The input gradient as a differentiable function of the cotangent `v`."""
    x = rand(v.shape[0], spec.in_channels, *spec.input_size).requires_grad_()
    (grad,) = torch.autograd.grad((layer(spec)(x, w) * v).sum(), x, create_graph=True)
    return grad


@pytest.mark.parametrize("spec", [
    tnconv.ConvSpec(8, 16, 5, input_size=(14, 14), stride=2, padding=2, groups=8),  # 1 -> 2
    tnconv.ConvSpec(8, 8, 3, input_size=(9, 9), stride=2, padding=1, groups=8,
                    padding_mode="reflect"),  # a padding that does not scatter by zeros
])
def test_a_scatter_the_kernels_cannot_run_keeps_its_steps(spec):
    """Small blocks (one channel in, two out per group) and reflect padding keep the
    cheapest rewrite by the network cost: no dilated copy is ever multiplied."""
    schedule = schedule_of("input_vjp", spec, 2)
    assert not any(step.transposed for step in kernels(schedule))
    assert not any(isinstance(s, Dilate) for a in schedule.arguments if a.view is not None
                   for s in a.view.steps)
    compiled = tnconv.compile("input_vjp", spec, strategy="tn")
    w, v = rand(*spec.weight_shape), rand(2, spec.out_channels, *spec.output_size)
    assert_close(compiled(w, v), _input_grad(spec, w, v))


@given(params=conv_params(modes=("zeros",)))
def test_any_strided_input_vjp_with_kernel_sized_blocks(params):
    """Random zero-padded hyper-parameters with 8x the channels: the input VJP on the
    tensor-network route equals torch's, whichever form the compiler picks."""
    batch, spec = _kernel_sized_blocks(params)
    w, v = rand(*spec.weight_shape), rand(batch, spec.out_channels, *spec.output_size)
    got = tnconv.compile("input_vjp", spec, strategy="tn")(w, v)
    assert_close(got, _input_grad(spec, w, v))


@pytest.mark.parametrize("steps, found", [
    ((Pad(2, 1, 1), Window(2, 3, 2)), ((1, 1),)),
    ((Dilate(2, 2), Pad(2, 2, 3), Window(2, 5, 1)), ((2, 3),)),
    ((Dilate(2, 2), Pad(2, 1, 2), Window(2, 3, 1), Pad(4, 1, 1), Window(4, 3, 1)),
     ((1, 2), (1, 1))),
    ((Pad(2, 1, 1), Dilate(2, 2), Window(2, 3, 1)), None),    # padded before dilated
    ((Pad(2, 1, 1, "reflect"), Window(2, 3, 1)), None),       # not zeros
    ((Pad(1, 1, 1), Window(2, 3, 1)), None),                  # a leading dim padded
    ((Window(3, 3, 1), Window(2, 3, 1)), None),               # windows out of order
])
def test_split_windows_reads_dilations_pads_and_windows_per_dimension(steps, found):
    base = (2, 3, 9, 9) if sum(isinstance(s, Window) for s in steps) == 2 else (2, 3, 9)
    tail = split_windows(View(base, steps), leading=2)
    assert (tail.pads if tail is not None else None) == found
    if tail is not None:
        assert tail.prefix.steps == () and tail.steps == steps


def test_transposed_arguments_only_where_torch_has_that_convolution():
    tail = split_windows(View((2, 4), (Dilate(1, 2), Pad(1, 2, 3), Window(1, 5, 1))), 1)
    assert transposed_arguments(tail, (5,), (1,), (1,)) == ((2,), (1,))
    assert transposed_arguments(tail, (5,), (2,), (1,)) is None   # strided windows
    assert transposed_arguments(tail, (2,), (1,), (1,)) is None   # pads beyond the taps
    wide = split_windows(View((2, 4), (Dilate(1, 2), Pad(1, 2, 6), Window(1, 5, 1))), 1)
    assert transposed_arguments(wide, (5,), (1,), (1,)) is None   # output padding >= stride


@given(data=st.data(), ndim=st.sampled_from([1, 2, 3]), depthwise=st.booleans())
def test_any_transposed_convolution_with_kernel_sized_blocks(data, ndim, depthwise):
    """Random transposed convolutions (output padding, dilation, groups) whose blocks
    torch's kernels run, depthwise or 8x the channels: the tensor-network route equals
    torch's transposed convolution, whichever form the compiler picks."""
    spec = data.draw(transposed_specs(ndim))
    if depthwise:
        channels = 8 * spec.groups
        spec = spec.replace(in_channels=channels, out_channels=channels, groups=channels)
    else:
        spec = spec.replace(in_channels=8 * spec.in_channels, out_channels=8 * spec.out_channels)
    x, w = rand(2, spec.in_channels, *spec.input_size), rand(*spec.weight_shape)
    got = tnconv.compile("forward", spec, strategy="tn")(x, w)
    assert_close(got, transpose_reference(x, w, spec))


def test_a_transposed_step_flips_a_kernel_it_reads_flipped():
    """Where the weight register holds the windows' (flipped) kernel, the step flips it
    back: the same result as on the kernel as given."""
    spec, _ = TRANSPOSED["1d dilated"]
    schedule = schedule_of("input_vjp", spec, 2)
    (step,) = schedule.steps
    w, v = rand(*spec.weight_shape), rand(2, spec.out_channels, *spec.output_size)
    laid = w.reshape(schedule.shapes[step.inputs[1]])
    taps = step.other_order[-len(step.kernel):]
    as_given = run_step(dataclasses.replace(step, inputs=(0, 1), output=2), v, laid)
    flipped = dataclasses.replace(step, inputs=(0, 1), output=2, kernel_flipped=True)
    assert_close(run_step(flipped, v, laid.flip(taps)), as_given)
    assert_close(as_given.reshape(2, spec.in_channels, *spec.input_size), _input_grad(spec, w, v))
