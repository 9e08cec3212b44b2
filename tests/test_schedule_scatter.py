"""The scatter family: a scattering index pattern applied as a scatter-add (a fold),
never built dense."""

from __future__ import annotations

from math import prod

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
from tests.helpers import DEVICE, assert_close, rand, run_step, schedule_of, step_types
from tnconv.lower import lower
from tnconv.lower.paths import is_fold
from tnconv.lower.schedule.scatter import Fold, fold_rule
from tnconv.lower.schedule.site import Operand, Site
from tnconv.rewrite.driver import REWRITE_ORDERS, SCATTER, best_rewrite
from tnconv.spec.index_pattern import PADDING_MODES, IndexPattern


@st.composite
def patterns(draw):
    kernel, stride, dilation = draw(st.integers(1, 4)), draw(st.integers(1, 3)), \
        draw(st.integers(1, 2))
    mode = draw(st.sampled_from(PADDING_MODES))
    left, right = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    size = draw(st.integers(max(left, right) + 1, 9)) if mode == "reflect" \
        else draw(st.integers(1, 9))
    reach = dilation * (kernel - 1) + 1
    if size + left + right < reach:
        size = reach
    output = (size + left + right - reach) // stride + 1
    return IndexPattern(kernel, stride, dilation, (left, right), input_size=size,
                        output_size=output, mode=mode)


def _fold_site(pattern: IndexPattern, legs, out, pattern_first: bool = False,
               register: int = -1) -> Site:
    sizes = {"n": 2, "c": 3, "o": pattern.output_size, "k": pattern.kernel_size,
             "i": pattern.input_size}
    data = Operand(0, tuple(legs), False)
    symbolic = Operand(register, ("k", "o", "i"), True, pattern)
    return Site((symbolic, data) if pattern_first else (data, symbolic), tuple(out), 1, sizes)


@settings(max_examples=60)
@given(pattern=patterns(), order=st.permutations(["n", "o", "k", "c"]),
       out=st.permutations(["n", "i", "c"]), pattern_first=st.booleans())
def test_a_fold_equals_the_dense_contraction(pattern, order, out, pattern_first):
    """Any pattern (every padding mode), the data's and the result's legs in any order."""
    site = _fold_site(pattern, order, out, pattern_first)
    step = fold_rule(site)
    assert isinstance(step, Fold) and step.inputs == (0,)
    y = rand(*site.shape(tuple(order)))
    dense = torch.as_tensor(pattern.to_numpy(), device=DEVICE)
    expected = torch.einsum(f"{''.join(order)},koi->{''.join(out)}", y, dense)
    assert_close(run_step(step, y), expected)


@settings(max_examples=40)
@given(kernel=st.integers(2, 4), left=st.integers(0, 4), right=st.integers(0, 4),
       size=st.integers(1, 12), order=st.permutations(["n", "o", "k", "c"]),
       out=st.permutations(["n", "i", "c"]))
def test_a_fold_of_non_overlapping_patches_is_one_copy_per_tap(kernel, left, right, size,
                                                                order, out):
    """K = S, D = 1, zero padding (the phases of a strided scatter): strided copies into
    memory laid out as the data's, then a crop (or zeros where the patches fall short)."""
    output = (size + left + right - kernel) // kernel + 1
    if output < 1:
        return
    pattern = IndexPattern(kernel, kernel, 1, (left, right), input_size=size,
                           output_size=output)
    site = _fold_site(pattern, order, out)
    step = fold_rule(site)
    y = rand(*site.shape(tuple(order)))
    dense = torch.as_tensor(pattern.to_numpy(), device=DEVICE)
    expected = torch.einsum(f"{''.join(order)},koi->{''.join(out)}", y, dense)
    assert_close(run_step(step, y), expected)


def test_is_fold_needs_both_legs_summed_and_i_kept():
    p = IndexPattern(3, 2, 1, (1, 1), input_size=7, output_size=4)
    legs = ("k", "o", "i")
    assert not is_fold(legs, p, p.shape, ("n", "o", "k"), ("n", "i", "k"))  # k kept
    assert not is_fold(legs, p, p.shape, ("n", "o"), ("n", "i", "k"))  # k not on the data
    assert not is_fold(legs, p, p.shape, ("n", "o", "k", "i"), ("n", "i"))  # i on the data
    assert not is_fold(legs, "not a pattern", p.shape, ("n", "o", "k"), ("n", "i"))
    assert is_fold(legs, p, p.shape, ("n", "o", "k"), ("n", "i"))


@pytest.mark.parametrize("legs, out, register", [
    (("n", "o", "k"), ("n", "i", "k"), -1),  # k kept
    (("n", "o", "k", "i"), ("n", "i"), -1),  # i on the data
    (("n", "o", "k"), ("n", "i"), 3),  # a materialised pattern (it has a register)
])
def test_the_fold_rule_declines_what_is_no_fold(legs, out, register):
    p = IndexPattern(3, 2, 1, (1, 1), input_size=7, output_size=4)
    assert fold_rule(_fold_site(p, legs, out, register=register)) is None


def test_a_fold_never_reads_a_pattern_from_data():
    p = IndexPattern(3, 2, 1, (1, 1), input_size=7, output_size=4)
    site = Site((Operand(0, ("n", "o", "k"), True), Operand(-1, ("k", "o", "i"), True, p)),
                ("n", "i"), 1, {"n": 2, "o": 4, "k": 3, "i": 7})
    assert fold_rule(site) is None  # both operands known without data: a constant step


@pytest.mark.parametrize("mode", PADDING_MODES)
def test_long_1d_input_vjp_folds_without_a_dense_pattern(mode):
    """Few input channels, many output channels: contract the weight first, then fold."""
    spec = tnconv.ConvSpec(1, 16, kernel_size=10, stride=5, padding=3, padding_mode=mode,
                           input_size=(4000,))
    compiled = tnconv.compile("input_vjp", spec, strategy="tn")
    assert compiled.program_for(2).dense_constants == ()  # the 10×800×4000 pattern
    schedule = compiled.schedule(2)
    assert schedule.constants == ()  # is never built
    folds = [s for s in schedule.steps if isinstance(s, Fold)]
    assert len(folds) == 1 and folds[0].pattern.mode == mode
    x = rand(2, 1, 4000).requires_grad_()
    w, gy = rand(16, 1, 10), rand(2, 16, spec.output_size[0])
    padded = F.pad(x, (3, 3), mode="constant" if mode == "zeros" else mode)
    (expected,) = torch.autograd.grad(F.conv1d(padded, w, stride=5), x, gy)
    assert_close(compiled(w, gy), expected)


def test_strided_2d_transposed_conv_folds_each_dimension():
    spec = tnconv.ConvSpec(16, 2, kernel_size=(4, 3), stride=(2, 3), padding=(1, 0),
                           dilation=(1, 2), input_size=(12, 10), transposed=True)
    assert step_types(schedule_of("forward", spec, 3)).count(Fold) == 2
    x, w = rand(3, 16, 12, 10), rand(16, 2, 4, 3)
    expected = F.conv_transpose2d(x, w, stride=(2, 3), padding=(1, 0), dilation=(1, 2))
    assert_close(tnconv.conv_transpose(x, w, stride=(2, 3), padding=(1, 0), dilation=(1, 2),
                                       strategy="tn"), expected)


def test_fold_first_path_is_not_taken_where_the_folded_tensor_grows():
    """Depthwise 3×3 with both patterns still dense (the phase orders without gathering):
    folding first would expand the cotangent 9×, so lowering keeps the dense path."""
    spec = tnconv.ConvSpec(8, 8, kernel_size=3, padding=1, groups=8, input_size=(16, 16))
    compiled = tnconv.compile("input_vjp", spec, strategy="tn")
    orders = [order for order in REWRITE_ORDERS if SCATTER not in order]
    net = best_rewrite(compiled.input_network(2), orders).network
    program = lower(net, compiled.operation.arguments, compiled.program_for(2).result_shape)
    assert all(f < 0 for f in program.folds) and program.dense_constants
    assert prod(program.dense_constants[0].shape) < 2 ** 24
    assert "scatter" not in tnconv.lower.build_schedule(program).families


def test_input_vjps_gather_from_the_padded_cotangent_where_that_is_cheaper():
    """The third phase order turns a scattering pattern into a window view of the padded
    cotangent with the flipped kernel."""
    spec = tnconv.ConvSpec(8, 8, kernel_size=3, padding=1, groups=8, input_size=(16, 16))
    compiled = tnconv.compile("input_vjp", spec, strategy="tn")
    schedule = compiled.schedule(2)
    assert any(a.view is not None and "flip" in a.view.describe() for a in schedule.arguments)
    assert "scatter" not in schedule.families
    w, g = rand(8, 1, 3, 3), rand(2, 8, 16, 16)
    expected = torch.nn.grad.conv2d_input((2, 8, 16, 16), w, g, padding=1, groups=8)
    assert_close(compiled(w, g), expected)


def test_a_fold_records_the_gradient_of_the_dense_contraction():
    p = IndexPattern(3, 2, 2, (1, 2), input_size=9, output_size=4, mode="reflect")
    site = _fold_site(p, ("o", "n", "k"), ("i", "n"))
    y = rand(4, 2, 3).requires_grad_(True)
    g = rand(9, 2)
    (actual,) = torch.autograd.grad((run_step(fold_rule(site), y) * g).sum(), y)
    dense = torch.as_tensor(p.to_numpy(), device=DEVICE)
    (expected,) = torch.autograd.grad((torch.einsum("onk,koi->in", y, dense) * g).sum(), y)
    assert_close(actual, expected)
