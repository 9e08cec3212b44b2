"""Sum steps: legs summed one at a time, and before a view's merging reshapes."""

from __future__ import annotations

import pytest
import torch

import tnconv
from tests.helpers import DEVICE, assert_close, rand
from tnconv.execute import plan_for
from tnconv.sum_steps import SumStep, _merged_from, sum_step, unmerged
from tnconv.views import Reshape, Slice, View


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


@pytest.mark.parametrize("stride", [2, 3])
def test_strided_pointwise_kfac_reduce_reads_its_view_in_place(stride):
    spec = tnconv.ConvSpec(6, 4, kernel_size=1, input_size=(11, 11), stride=stride)
    program = tnconv.compile("kfac_reduce", spec, strategy="tn").program_for(3)
    plan = plan_for(program, DEVICE, torch.float64)
    assert not isinstance(plan.argument_views[0].steps[-1], Reshape)  # no copy before the sum
    x = rand(3, 6, 11, 11)
    conv = torch.nn.Conv2d(6, 4, 1, stride=stride, bias=False)
    ubar = x[:, :, ::stride, ::stride].mean((2, 3))
    assert_close(tnconv.kfac_reduce(conv, x, strategy="tn")[0], ubar.T @ ubar / 3)
