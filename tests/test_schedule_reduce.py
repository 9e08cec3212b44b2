"""The reduce family: sums one leg at a time, before a view's merging reshapes, or as one
masked product with a vector of counts; where the scale goes on them."""

from __future__ import annotations

import string
from dataclasses import replace

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tests.helpers import DEVICE, assert_close, rand, run_step, schedule_of
from tnconv.ir.constants import to_torch
from tnconv.ir.views import Pad, Reshape, Slice, SplitLeg, View, Window
from tnconv.lower.schedule.builder import build_steps
from tnconv.lower.schedule.product import Gram
from tnconv.lower.schedule.reduce import (MaskedReduce, Reduce, _merged_from, masked,
                                          reduce_rule, unmerged)
from tnconv.lower.schedule.site import Operand, Site
from tnconv.runtime import bound


def _reduce(legs: tuple[str, ...], out: tuple[str, ...], sizes: dict, output: int = 1):
    return reduce_rule(Site((Operand(0, legs, False),), out, output, sizes))


@given(st.data())
def test_a_reduce_matches_einsum_for_any_leg_order(data):
    """Random legs, a random subset summed, the rest in a random order; summed together
    or one leg at a time, the value is einsum's."""
    legs = tuple(data.draw(st.permutations(string.ascii_lowercase[:data.draw(st.integers(1, 5))])))
    sizes = {leg: data.draw(st.integers(1, 3)) for leg in legs}
    kept = [leg for leg in legs if data.draw(st.booleans())]
    out = tuple(data.draw(st.permutations(kept)))
    step = _reduce(legs, out, sizes)
    x = rand(*(sizes[leg] for leg in legs))
    expected = torch.einsum(f"{''.join(legs)}->{''.join(out)}", x)
    assert_close(run_step(step, x), expected)
    assert_close(run_step(replace(step, one_at_a_time=bool(step.summed)), x), expected)


def test_a_reduce_takes_no_rule_for_two_operands():
    site = Site((Operand(0, ("a",), False), Operand(1, ("a",), False)), (), 2, {"a": 2})
    assert reduce_rule(site) is None


def test_several_legs_of_a_large_tensor_are_summed_one_at_a_time(monkeypatch):
    t = rand(2, 3, 14, 16, 14, 16)
    step = _reduce(("n", "c", "o1", "k1", "o2", "k2"), ("c", "k1", "k2", "n"),
                   dict(n=2, c=3, o1=14, k1=16, o2=14, k2=16))
    assert step.one_at_a_time and step.summed == (2, 4)
    calls = []
    real_sum = torch.Tensor.sum
    monkeypatch.setattr(torch.Tensor, "sum", lambda self, *a, **k: calls.append(a)
                        or real_sum(self, *a, **k))
    out = run_step(step, t)
    assert calls == [(2,), (3,)]  # o1 first, then o2 (shifted by one)
    assert_close(out, t.sum((2, 4)).permute(1, 2, 3, 0))


def test_a_small_tensor_is_summed_in_one_call():
    step = _reduce(("n", "o1", "o2"), ("n",), dict(n=2, o1=3, o2=4))
    assert not step.one_at_a_time and step.summed == (1, 2)


def test_merge_groups():
    assert _merged_from((4, 1, 64, 28, 28), (4, 64, 784)) == [[0], [1, 2], [3, 4]]
    assert _merged_from((4, 64, 28, 28, 1), (4, 64, 784)) == [[0], [1], [2, 3, 4]]
    assert _merged_from((4, 6), (6, 4)) is None  # a reshape that is no merge
    assert _merged_from((4, 6), (2, 12)) is None


def _strided_view() -> View:
    """The view of a 1×1 stride-2 layer's positions: strided slices, then o1·o2 merged."""
    steps = (Slice(3, 0, 7, 2), Slice(4, 0, 7, 2), Reshape((2, 3, 4, 4)), Reshape((2, 3, 16)))
    return View((2, 1, 3, 8, 8), steps)


def test_unmerged_view_sums_the_same_value_and_applies_once():
    view, step = _strided_view(), _reduce(("n", "c", "o"), ("c", "n"), dict(n=2, c=3, o=16))
    shorter, moved = unmerged(view, step)
    assert not isinstance(shorter.steps[-1], Reshape)
    assert moved.summed == (3, 4) and moved.kept_shape == (2, 3)
    x = rand(2, 3, 8, 8)
    assert_close(run_step(moved, shorter.apply_torch(x)), run_step(step, view.apply_torch(x)))
    assert unmerged(shorter, moved) is None  # nothing left to move


def test_unmerged_leaves_a_step_that_sums_nothing():
    assert unmerged(_strided_view(), Reduce((0,), 1, (), (1, 0, 2))) is None


def test_unmerged_declines_a_reshape_that_is_no_merge():
    view = View((2, 3, 4), (Slice(2, 0, 4, 1), Reshape((3, 8))))
    assert unmerged(view, _reduce(("a", "b"), ("a",), dict(a=3, b=8))) is None


def test_a_sparse_strided_pointwise_kfac_reduce_reads_its_view_in_place():
    """Stride 3 keeps 1/9 of the pixels: a sum of the view beats a product over all of x."""
    spec = tnconv.ConvSpec(6, 4, kernel_size=1, input_size=(11, 11), stride=3)
    schedule = schedule_of("kfac_reduce", spec, 3)
    assert not isinstance(schedule.arguments[0].view.steps[-1], Reshape)  # no copy first
    first, last = schedule.steps[0], schedule.steps[-1]
    assert isinstance(first, Reduce) and first.scale != 1
    assert isinstance(last, Gram) and last.alpha == 1 and schedule.scale == 1
    x = rand(3, 6, 11, 11)
    conv = torch.nn.Conv2d(6, 4, 1, stride=3, bias=False)
    ubar = x[:, :, ::3, ::3].mean((2, 3))
    assert_close(tnconv.kfac_reduce(conv, x, strategy="tn")[0], ubar.T @ ubar / 3)


def test_a_stride_two_pointwise_kfac_reduce_is_one_masked_product_carrying_the_scale():
    spec = tnconv.ConvSpec(6, 4, kernel_size=1, input_size=(11, 10), stride=2)
    compiled = tnconv.compile("kfac_reduce", spec, strategy="tn")
    schedule = compiled.schedule(3)
    assert isinstance(schedule.steps[0], MaskedReduce) and schedule.arguments[0].view is None
    # √scale on the counts: the Gram step is a plain product, and nothing scales per call
    assert build_steps(compiled.program_for(3)).scale != 1
    assert isinstance(schedule.steps[-1], Gram) and schedule.steps[-1].alpha == 1
    assert schedule.scale == 1 and schedule.scaled_argument is None
    run = bound(schedule, DEVICE, torch.float64)
    x = rand(3, 6, 11, 10)
    ubar = x[:, :, ::2, ::2].mean((2, 3))
    assert_close(run(x)[0], ubar.T @ ubar / 3)
    strided = x.transpose(2, 3).contiguous().transpose(2, 3)  # the same values, laid out apart
    assert_close(run(strided)[0], ubar.T @ ubar / 3)
    conv = torch.nn.Conv2d(6, 4, 1, stride=2, bias=False)
    assert_close(tnconv.averaged_patches(conv, x, strategy="tn")[:, 0], ubar)


def _masked_run(view: View, step: Reduce, x: torch.Tensor) -> torch.Tensor:
    shape, counts, lowered = masked(view, step, 1)
    assert isinstance(lowered, MaskedReduce) and lowered.inputs == (0, 1)
    return run_step(lowered, x.reshape(shape), to_torch(counts, DEVICE, torch.float64))


def test_a_masked_sum_counts_every_read_of_overlapping_windows():
    view = View((2, 3, 11), (Window(2, size=3, step=2, dilation=2),))  # windows overlap
    step = _reduce(("n", "c", "o", "k"), ("n", "c"), dict(n=2, c=3, o=4, k=3), output=2)
    shape, counts, _ = masked(view, step, 1)
    assert shape == (1, 6, 11) and counts.to_numpy().max() > 1
    x = rand(2, 3, 11)
    expected = run_step(step, view.apply_torch(x))
    assert_close(_masked_run(view, step, x), expected)
    assert_close(_masked_run(view, replace(step, scale=0.5), x), 0.5 * expected)


@pytest.mark.parametrize("view, legs, out", [
    (View((2, 3, 12), (Slice(2, 0, 12, 1),)), ("n", "c", "i"), ("n", "c")),  # contiguous
    (View((2, 3, 12), (Slice(2, 0, 12, 7),)), ("n", "c", "i"), ("n", "c")),  # 2 of 12 read
    (View((2, 3, 12), (Window(2, size=3, step=2, dilation=2),)), ("n", "c", "o", "k"),
     ("n", "c", "k")),  # a kept tap leg is no leading leg of x
    (View((2, 3, 12), (Pad(2, 1, 1, "zeros"), Slice(2, 0, 14, 2))), ("n", "c", "i"),
     ("n", "c")),  # padding is no selection
    (View((2, 3, 12), (SplitLeg(2, (12, 1, 1)), Slice(4, 0, 1, 2))),
     ("n", "c", "i", "a", "b"), ("n", "c", "i", "a")),  # more kept legs than x has
])
def test_a_masked_sum_is_only_chosen_for_a_dense_enough_strided_selection(view, legs, out):
    sizes = dict(zip(legs, view.shape))
    assert masked(view, _reduce(legs, out, sizes), 1) is None


def test_a_sum_of_nothing_takes_no_scale_in_place():
    assert Reduce((0,), 1, (), (1, 0)).scaled(2.0) is None
    step = Reduce((0,), 1, (1,), ()).scaled(2.0)
    x = rand(3, 4)
    assert_close(run_step(step, x), 2 * x.sum(1))


def test_a_scaled_permutation_never_writes_into_its_operand():
    x = rand(3, 4)
    before = x.clone()
    assert_close(run_step(Reduce((0,), 1, (), (1, 0), scale=2.0), x), 2 * before.T)
    assert torch.equal(x, before)


def test_a_gram_step_after_a_plain_sum_takes_the_scale_on_the_sums():
    """A patch embedding's position sums are a plain sum of a split view: √scale on the
    sums (in place), not the Gram product's alpha."""
    spec = tnconv.ConvSpec(3, 8, kernel_size=4, input_size=(12, 8), stride=4)
    schedule = schedule_of("kfac_reduce", spec, 2)
    first, last = schedule.steps
    assert isinstance(first, Reduce) and first.scale != 1
    assert isinstance(last, Gram) and last.alpha == 1 and schedule.scale == 1
    x = rand(2, 3, 12, 8)
    ubar = torch.nn.functional.unfold(x, 4, stride=4).mean(2)
    assert_close(bound(schedule, DEVICE, torch.float64)(x)[0], ubar.T @ ubar / 2)
