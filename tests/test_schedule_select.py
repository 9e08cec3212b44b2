"""The select family: an index pattern contracted over one leg runs as a selection (no
multiplication by its zeros), and a pattern left dense meets the data it selects from
first, so a non-finite value outside a window never reaches the result (issue 17, 12)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tests.helpers import assert_close, rand, run_step
from tnconv.lower.schedule.select import PatternGather, pattern_gather_rule
from tnconv.lower.schedule.site import Operand, Site
from tnconv.spec import IndexPattern

MODES = ("zeros", "reflect", "replicate", "circular")


def _dense(pattern: IndexPattern) -> torch.Tensor:
    return torch.as_tensor(pattern.to_numpy()).to(rand(1).device)


@given(data=st.data())
def test_a_pattern_over_one_leg_is_a_selection_that_equals_the_einsum(data):
    """Summed over k, o or i, any padding mode, the data's legs in any order."""
    mode = data.draw(st.sampled_from(MODES))
    kernel, stride = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3))
    size = data.draw(st.integers(kernel + 2, 9))
    left = data.draw(st.integers(0, min(2, size - 1))) if mode != "zeros" else 1
    pattern = IndexPattern(kernel, stride, 1, (left, left), size,
                           (size + 2 * left - kernel) // stride + 1, mode)
    legs, summed = ("k", "o", "i"), data.draw(st.sampled_from("koi"))
    data_legs = tuple(data.draw(st.permutations(["n", summed, "c"])))
    kept = tuple(leg for leg in legs if leg != summed)
    out = tuple(data.draw(st.permutations(["n", "c", *kept])))
    sizes = dict(zip(legs, pattern.shape), n=2, c=3)
    site = Site((Operand(0, data_legs, False), Operand(1, legs, True, pattern)), out, 2, sizes)
    step = pattern_gather_rule(site)
    assert isinstance(step, PatternGather) and step.summed == "koi".index(summed)
    x = rand(*site.shape(data_legs))
    expected = torch.einsum(site.equation(), x, _dense(pattern))
    assert_close(run_step(step, x, None), expected)


def test_patterns_that_are_not_one_selection_are_declined():
    p = IndexPattern(3, 1, 1, (1, 1), 5, 5)
    sizes = dict(k=3, o=5, i=5, n=2)
    two_legs = Site((Operand(0, ("n", "o", "k"), False), Operand(1, ("k", "o", "i"), True, p)),
                    ("n", "i"), 2, sizes)  # a fold (two legs summed)
    assert pattern_gather_rule(two_legs) is None
    kept_on_data = Site((Operand(0, ("n", "i", "k"), False),
                         Operand(1, ("k", "o", "i"), True, p)), ("n", "k", "o"), 2, sizes)
    assert pattern_gather_rule(kept_on_data) is None
    folded = Site((Operand(0, ("n", "i"), False), Operand(-1, ("k", "o", "i"), True, p)),
                  ("n", "k", "o"), 2, sizes)  # a pattern left symbolic for a fold
    assert pattern_gather_rule(folded) is None


def _counts(t: torch.Tensor) -> tuple[int, int]:
    return int(t.isnan().sum()), int(t.isinf().sum())


def test_a_non_finite_input_spreads_as_the_definition_says_in_four_dimensions():
    """The issue's reproducer: 16 Inf and no NaN, as the sum over each window gives."""
    x = torch.zeros(1, 1, 3, 3, 3, 3, device=rand(1).device)
    x[0, 0, 1, 1, 1, 1] = float("inf")
    w = torch.ones(1, 1, 2, 2, 2, 2, device=x.device)
    assert _counts(tnconv.conv(x, w, padding=1)) == (0, 16)
    assert _counts(tnconv.conv(x, w, padding=1, strategy="tn")) == (0, 16)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", ["auto", "tn"])
def test_non_finite_values_reach_exactly_the_windows_that_read_them(mode, strategy):
    """Forward, both VJPs and unfold on a small 2d layer, one Inf in the data: NaN and Inf
    land where torch's own (selecting) kernels put them."""
    x = rand(2, 2, 6, 5)
    x[1, 0, 2, 3] = float("inf")
    w, kw = rand(3, 2, 3, 2), dict(stride=(2, 1), padding=1, padding_mode=mode)
    torch_mode = "constant" if mode == "zeros" else mode
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode=torch_mode)
    expected = torch.nn.functional.conv2d(padded, w, stride=(2, 1))
    assert _counts(tnconv.conv(x, w, **kw, strategy=strategy)) == _counts(expected)
    unfolded = tnconv.unfold(x, (3, 2), **kw, strategy=strategy)
    assert _counts(unfolded) == _counts(
        torch.nn.functional.unfold(padded, (3, 2), stride=(2, 1)))
    gy = rand(*expected.shape)
    gy[0, 1, 1, 2] = float("inf")
    gw = tnconv.conv_weight_vjp(x.nan_to_num(posinf=0.0), w.shape, gy, **kw, strategy=strategy)
    reference = torch.nn.grad.conv2d_weight(padded.nan_to_num(posinf=0.0), w.shape, gy,
                                            stride=(2, 1))
    assert _counts(gw) == _counts(reference)
