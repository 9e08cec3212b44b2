"""Sum steps: legs summed one at a time, before a view's merging reshapes, or as a masked
product; where the scale goes."""

from __future__ import annotations

import pytest
import torch

import tnconv
from tests.helpers import DEVICE, assert_close, rand
from tnconv.runtime.execute import plan_for
from tnconv.runtime.sum_steps import MaskedSumStep, SumStep, _merged_from, masked, sum_step, unmerged
from tnconv.ir.views import Pad, Reshape, Slice, SplitLeg, View, Window


def test_several_legs_of_a_large_tensor_are_summed_one_at_a_time(monkeypatch):
    t = rand(2, 3, 14, 16, 14, 16)
    calls = []
    real_sum = torch.Tensor.sum
    monkeypatch.setattr(torch.Tensor, "sum", lambda self, *a, **k: calls.append(a)
                        or real_sum(self, *a, **k))
    out = sum_step(0, ("n", "c", "o1", "k1", "o2", "k2"), ("c", "k1", "k2", "n"))([t])
    assert calls == [(2,), (3,)]  # o1 first, then o2 (shifted by one)
    assert_close(out, t.sum((2, 4)).permute(1, 2, 3, 0))


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
    view, step = _strided_view(), sum_step(0, ("n", "c", "o"), ("c", "n"))
    shorter, moved = unmerged(view, step)
    assert not isinstance(shorter.steps[-1], Reshape)
    assert moved.summed == (3, 4) and moved.kept_shape == (2, 3)
    x = rand(2, 3, 8, 8)
    assert_close(moved([shorter.apply_torch(x)]), step([view.apply_torch(x)]))
    assert unmerged(shorter, moved) is None  # nothing left to move


def test_unmerged_leaves_a_step_that_sums_nothing():
    assert unmerged(_strided_view(), SumStep((0,), (), (1, 0, 2))) is None


def test_a_sparse_strided_pointwise_kfac_reduce_reads_its_view_in_place():
    """Stride 3 keeps 1/9 of the pixels: a sum of the view beats a product over all of x."""
    spec = tnconv.ConvSpec(6, 4, kernel_size=1, input_size=(11, 11), stride=3)
    program = tnconv.compile("kfac_reduce", spec, strategy="tn").program_for(3)
    plan = plan_for(program, DEVICE, torch.float64)
    assert not isinstance(plan.argument_views[0].steps[-1], Reshape)  # no copy before the sum
    assert isinstance(plan._steps[0], SumStep) and plan._steps[-1].alpha == 1
    x = rand(3, 6, 11, 11)
    conv = torch.nn.Conv2d(6, 4, 1, stride=3, bias=False)
    ubar = x[:, :, ::3, ::3].mean((2, 3))
    assert_close(tnconv.kfac_reduce(conv, x, strategy="tn")[0], ubar.T @ ubar / 3)


def test_a_stride_two_pointwise_kfac_reduce_is_one_masked_product_carrying_the_scale():
    spec = tnconv.ConvSpec(6, 4, kernel_size=1, input_size=(11, 10), stride=2)
    program = tnconv.compile("kfac_reduce", spec, strategy="tn").program_for(3)
    plan = plan_for(program, DEVICE, torch.float64)
    assert isinstance(plan._steps[0], MaskedSumStep) and plan.argument_views[0] is None
    # √scale on the mask: the Gram step is a plain product, and nothing scales per call
    assert program.scale != 1 and plan._steps[-1].alpha == 1 and plan.scale == 1
    assert plan._scaled_argument is None
    x = rand(3, 6, 11, 10)
    ubar = x[:, :, ::2, ::2].mean((2, 3))
    assert_close(plan(x)[0], ubar.T @ ubar / 3)
    strided = x.transpose(2, 3).contiguous().transpose(2, 3)  # the same values, laid out apart
    assert_close(plan(strided)[0], ubar.T @ ubar / 3)
    conv = torch.nn.Conv2d(6, 4, 1, stride=2, bias=False)
    assert_close(tnconv.averaged_patches(conv, x, strategy="tn")[:, 0], ubar)


def test_a_masked_sum_counts_every_read_of_overlapping_windows():
    view = View((2, 3, 11), (Window(2, size=3, step=2, dilation=2),))  # windows overlap
    step = sum_step(0, ("n", "c", "o", "k"), ("n", "c"))
    shape, lowered = masked(view, step, DEVICE, torch.float64)
    assert shape == (1, 6, 11) and lowered.mask.max() > 1
    x = rand(2, 3, 11)
    assert_close(lowered([x.reshape(shape)]), step([view.apply_torch(x)]))
    assert_close(lowered.scaled(0.5)([x.reshape(shape)]), 0.5 * step([view.apply_torch(x)]))


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
    assert masked(view, sum_step(0, legs, out), DEVICE, torch.float64) is None


def test_a_sum_of_nothing_takes_no_scale_in_place():
    assert SumStep((0,), (), (1, 0)).scaled(2.0) is None
    step = SumStep((0,), (1,), ()).scaled(2.0)
    x = rand(3, 4)
    assert_close(step([x]), 2 * x.sum(1))


def test_a_gram_step_after_a_plain_sum_takes_the_scale_on_the_sums():
    """A patch embedding's position sums are a plain sum of a split view: √scale on the
    sums (in place), not `baddbmm`'s alpha in the Gram product."""
    spec = tnconv.ConvSpec(3, 8, kernel_size=4, input_size=(12, 8), stride=4)
    program = tnconv.compile("kfac_reduce", spec, strategy="tn").program_for(2)
    plan = plan_for(program, DEVICE, torch.float64)
    assert isinstance(plan._steps[0], SumStep) and plan._steps[0].scale != 1
    assert plan._steps[-1].alpha == 1 and plan.scale == 1
    x = rand(2, 3, 12, 8)
    ubar = torch.nn.functional.unfold(x, 4, stride=4).mean(2)
    assert_close(plan(x)[0], ubar.T @ ubar / 2)
