"""The einsum family: one einsum, or one per slice of a large operand's own leading leg
(`SlicedEinsum`), where one einsum would copy that operand whole."""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tests.helpers import assert_close, rand, run_step, schedule_of, step_types
from tests.curvature_references import per_sample_gradients
import tnconv.lower.schedule.einsum as einsum_family
from tnconv.lower.schedule.einsum import (SLICED_MIN_COLUMNS, Einsum, SlicedEinsum,
                                          sliced_einsum_rule)
from tnconv.lower.schedule.reduce import HadamardSum
from tnconv.lower.schedule.site import Operand, Site


def _site(first, second, out, sizes, view=None) -> Site:
    return Site((Operand(0, tuple(first), False, view=view), Operand(1, tuple(second), False)),
                tuple(out), 2, sizes)


# a GGN sqrt factor S[c, n, m, o] against a small unfolded input U[n, d, o]
GGN = dict(first="ndo", second="cnmo", out="ndcm",
           sizes={"n": 2, "d": 3, "o": 1 << 14, "c": 4, "m": SLICED_MIN_COLUMNS})


def test_a_large_operand_led_by_its_own_leg_is_sliced_and_matches_einsum():
    site = _site(**GGN)
    step = sliced_einsum_rule(site)
    assert isinstance(step, SlicedEinsum)
    assert step.slices == 4 and step.position == 2 and step.inputs == (0, 1)
    assert "per slice (4)" in step.label()
    u, s = rand(*site.shape(site.taken[0].legs)), rand(*site.shape(site.taken[1].legs))
    assert_close(run_step(step, u, s), torch.einsum(site.equation(), u, s))


def test_the_other_operand_is_laid_out_batch_own_contracted_in_any_order():
    site = _site("odn", "cnmo", "cmnd", GGN["sizes"])
    step = sliced_einsum_rule(site)
    assert isinstance(step, SlicedEinsum) and step.position == 0
    u, s = rand(*site.shape(site.taken[0].legs)), rand(*site.shape(site.taken[1].legs))
    assert_close(run_step(step, u, s), torch.einsum(site.equation(), u, s))
    swapped = _site("cnmo", "odn", "ndcm", GGN["sizes"])  # the large operand first
    step = sliced_einsum_rule(swapped)
    assert isinstance(step, SlicedEinsum) and step.inputs == (1, 0)
    assert_close(run_step(step, s, u), torch.einsum(swapped.equation(), s, u))


@pytest.mark.parametrize("change, why", [
    (dict(out="ndm"), "the leading leg is summed"),
    (dict(second="ncmo"), "the leading leg is a batch leg: no copy to save"),
    (dict(first="ndoc", out="ndcm"), "the leading leg is shared"),
    (dict(first="do", second="cmo", out="dcm"), "no batch leg"),
    (dict(sizes={**GGN["sizes"], "m": SLICED_MIN_COLUMNS - 1}), "too few columns a slice"),
    (dict(sizes={**GGN["sizes"], "o": 64}), "too small to copy"),
    (dict(sizes={**GGN["sizes"], "d": 200}), "the other operand re-read per slice costs more"),
    (dict(second="", out="ndo"), "a scalar"),
])
def test_the_rule_stays_off(change, why):
    assert sliced_einsum_rule(_site(**{**GGN, **change})) is None, why


def test_an_operand_copied_into_fresh_pages_is_sliced_even_where_the_re_read_costs_more(
        monkeypatch):
    """From `SLICED_FRESH_ELEMENTS` the one einsum's copy of the large operand lands in
    fresh pages every call: it is sliced even where the loop re-reads the other more."""
    site = _site(**{**GGN, "sizes": {**GGN["sizes"], "d": 200}})
    assert sliced_einsum_rule(site) is None
    monkeypatch.setattr(einsum_family, "SLICED_FRESH_ELEMENTS", site.size(("c", "n", "m", "o")))
    step = sliced_einsum_rule(site)
    assert isinstance(step, SlicedEinsum) and step.slices == 4


def test_an_operand_read_through_a_view_is_never_sliced():
    assert sliced_einsum_rule(_site(GGN["second"], GGN["first"], GGN["out"], GGN["sizes"],
                                    view=None)) is not None
    site = Site((Operand(0, tuple(GGN["second"]), False, view="a view"),
                 Operand(1, tuple(GGN["first"]), False)), tuple(GGN["out"]), 2, GGN["sizes"])
    assert sliced_einsum_rule(site) is None


@given(st.data())
def test_a_sliced_step_matches_einsum_for_random_legs(data):
    """Random batch, own and contracted legs on both sides, in any order (the size
    thresholds lowered to 1: small tensors; a wide own leg keeps the re-read cheap)."""
    pool = iter(string.ascii_lowercase)
    lead = next(pool)
    roles = {"batch": [next(pool) for _ in range(data.draw(st.integers(1, 2)))],
             "other": [next(pool) for _ in range(data.draw(st.integers(0, 2)))],
             "own": [next(pool) for _ in range(data.draw(st.integers(0, 2)))],
             "contracted": [next(pool) for _ in range(data.draw(st.integers(0, 1)))]}
    big_leg, col_leg = next(pool), next(pool)
    sizes = {leg: data.draw(st.integers(1, 3)) for legs in roles.values() for leg in legs}
    sizes.update({lead: data.draw(st.integers(2, 4)), big_leg: 8, col_leg: 32})
    other = data.draw(st.permutations(roles["batch"] + roles["other"] + roles["contracted"]
                                      + [big_leg]))
    rest = data.draw(st.permutations(roles["batch"] + roles["own"] + roles["contracted"]
                                     + [big_leg, col_leg]))
    out = data.draw(st.permutations([lead] + roles["batch"] + roles["other"] + roles["own"]
                                    + [col_leg]))
    site = _site(other, [lead] + list(rest), out, sizes)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(einsum_family, "SLICED_MIN_ELEMENTS", 1)
        step = sliced_einsum_rule(site)
    assert isinstance(step, SlicedEinsum)
    u, s = rand(*site.shape(site.taken[0].legs)), rand(*site.shape(site.taken[1].legs))
    assert_close(run_step(step, u, s), torch.einsum(site.equation(), u, s))


@pytest.mark.parametrize("spec, sliced", [
    (tnconv.ConvSpec(3, 64, 3, input_size=(6, 24, 24), padding=1), True),  # a 3d RGB stem
    (tnconv.ConvSpec(1, 64, 10, input_size=(8000,), stride=5), True),  # an audio front end
    (tnconv.ConvSpec(64, 64, 3, input_size=(32, 32), padding=1), False),  # 9x unfolded
])
def test_the_ggn_of_a_layer_with_a_small_unfolded_input_is_sliced(spec, sliced):
    """On a layer whose unfolded input is small against the sqrt factor, the GGN's
    per-sample product runs one einsum per column; the value is the brute-force GGN."""
    columns, batch = 10, 2
    schedule = schedule_of("ggn_diagonal", spec, batch, classes=columns)
    assert step_types(schedule) == [SlicedEinsum if sliced else Einsum, HadamardSum]
    x = rand(batch, spec.in_channels, *spec.input_size)
    s = rand(columns, batch, spec.out_channels, *spec.output_size)
    got = tnconv.compile("ggn_diagonal", spec, classes=columns).run(x, s)
    w = rand(*spec.weight_shape)
    expected = sum(per_sample_gradients(spec, x, w, s[c]).square().sum(0) for c in range(columns))
    assert_close(got, expected)


def test_a_view_that_only_splits_is_sliced_in_place(monkeypatch):
    """A stride-2, size-2 transposed convolution's cotangent (the GGN's sqrt factor) is read
    through splits only, no copy: it is sliced per column in place, and the GGN diagonal
    equals Σ_{c,n} (J_nᵀ S[c, n])² by autograd."""
    monkeypatch.setattr(einsum_family, "SLICED_MIN_ELEMENTS", 1)
    monkeypatch.setattr(einsum_family, "SLICED_FRESH_ELEMENTS", 1)
    monkeypatch.setattr(einsum_family, "SLICED_MIN_COLUMNS", 1)
    tnconv.clear_caches()
    spec = tnconv.ConvSpec(4, 3, 2, (5, 5), stride=2, transposed=True)
    schedule = schedule_of("ggn_diagonal", spec, 2, classes=2)
    (sliced,) = [s for s in schedule.steps if isinstance(s, SlicedEinsum)]
    big = next(a for a in schedule.arguments if a.register == sliced.inputs[1])
    assert big.view is not None and "split" in big.view.describe()
    x, s = rand(2, 4, 5, 5), rand(2, 2, 3, 10, 10)
    got = tnconv.compile("ggn_diagonal", spec, strategy="tn", classes=2)(x, s)
    expected = torch.zeros(spec.weight_shape, dtype=torch.float64)
    for c in range(2):
        for n in range(2):
            w = torch.zeros(spec.weight_shape, dtype=torch.float64, requires_grad=True)
            y = torch.nn.functional.conv_transpose2d(x[n:n + 1], w, stride=2)
            (grad,) = torch.autograd.grad((y * s[c, n:n + 1]).sum(), w)
            expected += grad ** 2
    assert_close(got, expected)
    tnconv.clear_caches()
