"""The windows family: a window view of an argument contracted in place (shift-GEMMs,
shift taps, tap loops), with the einsum as fallback."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tnconv.lower.schedule import windows as window_rules
import tnconv.runtime.windows as window_runtime
from tests.helpers import assert_close, rand, run_step, schedule_of, step_types
from tests.references import conv_nd, torch_conv
from tests.strategies import conv_params
from tnconv.ir.views import View, Window
from tnconv.lower.schedule.site import Operand, Site
from tnconv.lower.schedule.windows import (ShiftGemm, ShiftGemmOutput, ShiftTap, TapLoop,
                                           TapOutput, reads_in_place, window_rule)

#: The windows family alone: torch's convolution kernels (`conv_rule`) would take the
#: depthwise and dense layers these tests build (tests/test_schedule_conv.py).
pytestmark = pytest.mark.usefixtures("without_conv_kernels")


def _site(view: View, legs, other, out, sizes, swap: bool = False) -> Site:
    windowed = Operand(0, tuple(legs), False, view=view, argument=True)
    taken = (windowed, Operand(1, tuple(other), False))
    return Site(taken[::-1] if swap else taken, tuple(out), 2, sizes)


def _einsum(site: Site, windows: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    by_register = {0: windows, 1: other}
    return torch.einsum(site.equation(), *(by_register[op.register] for op in site.taken))


# ------------------------------------------------------------------ which step
@pytest.mark.parametrize("stride, dilation", [(1, 1), (1, (2, 1)), (2, 1), (3, 2)])
def test_depthwise_forward_runs_tap_by_tap(stride, dilation):
    """Stride 1: one multiply-add per tap over runs of the padded input (row blocks);
    strided windows: over each tap's grid of positions (row blocks too)."""
    step = ShiftTap
    spec = tnconv.ConvSpec(8, 8, kernel_size=3, input_size=(32, 33), padding=1, groups=8,
                           stride=stride, dilation=dilation)
    assert step in step_types(schedule_of("forward", spec, 2))
    x, w = rand(2, 8, 32, 33), rand(8, 1, 3, 3)
    expected = conv_nd(x, w, spec.stride, [(1, 1), (1, 1)], spec.dilation, 8)
    assert_close(tnconv.conv(x, w, stride=stride, padding=1, dilation=dilation, groups=8,
                             strategy="tn"), expected)


def test_shift_tap_blocks_of_rows_cover_every_row(monkeypatch):
    """Blocks smaller than the rows (and a last partial block) give the same result."""
    run = 31 * 35 + 33  # output rows at the padded width 35, the last one 33 wide
    monkeypatch.setattr(window_runtime, "_BLOCK_BYTES", 5 * 2 * run * 8)  # 5, 5, 5, 5, 4 rows
    spec = tnconv.ConvSpec(8, 8, kernel_size=3, input_size=(32, 33), padding=1, groups=8)
    assert ShiftTap in step_types(schedule_of("forward", spec, 3))
    x, w = rand(3, 8, 32, 33), rand(8, 1, 3, 3)
    expected = conv_nd(x, w, (1, 1), [(1, 1), (1, 1)], (1, 1), 8)
    assert_close(tnconv.conv(x, w, padding=1, groups=8, strategy="tn"), expected)


def test_strided_shift_tap_blocks_of_rows_cover_every_row(monkeypatch):
    """On strided windows the blocks hold whole grids: 24 rows of 16 x 17 positions in
    blocks of 5 (the last one partial), the same result."""
    monkeypatch.setattr(window_runtime, "_BLOCK_BYTES", 5 * 2 * 16 * 17 * 8)
    spec = tnconv.ConvSpec(8, 8, kernel_size=3, input_size=(32, 33), padding=1, groups=8,
                           stride=2)
    assert ShiftTap in step_types(schedule_of("forward", spec, 3))
    x, w = rand(3, 8, 32, 33), rand(8, 1, 3, 3)
    expected = conv_nd(x, w, (2, 2), [(1, 1), (1, 1)], (1, 1), 8)
    assert_close(tnconv.conv(x, w, stride=2, padding=1, groups=8, strategy="tn"), expected)


@given(ndim=st.integers(1, 3), kernel=st.integers(2, 5), stride=st.integers(2, 3),
       dilation=st.integers(1, 2), extra=st.integers(0, 3), padding=st.integers(0, 2),
       block=st.sampled_from([None, 1]))
def test_strided_depthwise_phases_match_the_convolution(ndim, kernel, stride, dilation,
                                                        extra, padding, block):
    """Strided depthwise taps split by phase (stride and dilation sharing a factor too,
    several phases of unequal extent, one row per block) give torch's convolution."""
    size = (kernel - 1) * dilation + 1 + extra
    spec = tnconv.ConvSpec(3, 3, kernel_size=kernel, input_size=(size,) * ndim, groups=3,
                           stride=stride, dilation=dilation, padding=padding)
    x, w = rand(2, 3, *spec.input_size), rand(3, 1, *spec.kernel_size)
    with pytest.MonkeyPatch.context() as patch:
        if block is not None:
            patch.setattr(window_runtime, "_BLOCK_BYTES", 1)
        actual = tnconv.conv(x, w, stride=stride, dilation=dilation, padding=padding,
                             groups=3, strategy="tn")
    assert_close(actual, conv_nd(x, w, spec.stride, spec.padding, spec.dilation, 3))


def test_strided_depthwise_phases_are_used_where_taps_share_them(monkeypatch):
    """A 5x5 kernel at stride 2 has 4 phases for 25 taps: the phase split runs (and the
    grid does not); a 2x2 kernel dilated by 2 at stride 3 (one tap per phase) stays on
    the grid."""
    calls = []
    for name in ("_shift_tap_phases", "_shift_tap_grid"):
        original = getattr(window_runtime, name)
        monkeypatch.setattr(window_runtime, name,
                            lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    for kernel, stride, dilation, expected in ((5, 2, 1, "_shift_tap_phases"),
                                               (2, 3, 2, "_shift_tap_grid")):
        calls.clear()
        x, w = rand(2, 4, 12, 11), rand(4, 1, kernel, kernel)
        actual = tnconv.conv(x, w, stride=stride, padding=1, dilation=dilation, groups=4,
                             strategy="tn")
        assert calls == [expected]
        assert_close(actual, conv_nd(x, w, (stride,) * 2, [(1, 1), (1, 1)], (dilation,) * 2,
                                     4))


def test_depthwise_weight_vjp_runs_one_product_per_tap(monkeypatch):
    """One batched dot product per tap and block of rows (18 rows in blocks of 7, the
    last one partial), the cotangent laid out once at the padded width."""
    run = 14 * 18 + 17  # 15 x 17 outputs at the padded width 18
    monkeypatch.setattr(window_runtime, "_BLOCK_BYTES", 7 * 2 * run * 8)
    spec = tnconv.ConvSpec(6, 6, kernel_size=(3, 2), input_size=(17, 16), padding=1,
                           dilation=(2, 1), groups=6)
    assert ShiftGemmOutput in step_types(schedule_of("weight_vjp", spec, 3))
    x, w = rand(3, 6, 17, 16).requires_grad_(), rand(6, 1, 3, 2).requires_grad_()
    y = torch.nn.functional.conv2d(x, w, padding=1, dilation=(2, 1), groups=6)
    gy = rand(*y.shape)
    (expected,) = torch.autograd.grad(y, w, gy)
    actual = tnconv.conv_weight_vjp(x.detach(), tuple(w.shape), gy, padding=1,
                                    dilation=(2, 1), groups=6, strategy="tn")
    assert_close(actual, expected)


def test_thin_channel_contractions_stay_one_product():
    spec = tnconv.ConvSpec(3, 8, kernel_size=3, input_size=(32, 32), padding=1)
    types = step_types(schedule_of("forward", spec, 2))
    assert not any(issubclass(t, (TapLoop, ShiftGemm, ShiftTap)) for t in types)
    x, w = rand(2, 3, 32, 32), rand(8, 3, 3, 3)
    assert_close(tnconv.conv(x, w, padding=1, strategy="tn"),
                 conv_nd(x, w, (1, 1), [(1, 1), (1, 1)], (1, 1), 1))


def _pairs(spec: tnconv.ConvSpec) -> list:
    return list(spec.padding)


def _weight_grad(x, w, spec, g):
    w = w.clone().requires_grad_(True)
    y = torch_conv(x, w, spec.stride, _pairs(spec), spec.dilation, spec.groups,
                   spec.padding_mode)
    return torch.autograd.grad(y, w, g)[0]


@given(conv_params(modes=("zeros", "reflect", "circular")), st.data())
def test_grouped_forward_and_weight_vjp_match_torch(params, data):
    """Any grouped stride-1 convolution (1-3d, dilation, asymmetric or 'same' padding,
    padding modes) and its weight VJP are exact on the TN route, shift-GEMM or not."""
    groups = data.draw(st.sampled_from([2, 3]))
    ndim = params["ndim"]
    per_in, per_out = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    spec = tnconv.ConvSpec(groups * per_in, groups * per_out, params["kernel_size"],
                           params["input_shape"][2:], stride=1,
                           padding=params["padding"], dilation=params["dilation"],
                           groups=groups, padding_mode=params["padding_mode"])
    batch = params["input_shape"][0]
    x = rand(batch, spec.in_channels, *spec.input_size)
    w = rand(*spec.weight_shape)
    expected = torch_conv(x, w, (1,) * ndim, _pairs(spec), spec.dilation, groups,
                          spec.padding_mode)
    kw = dict(padding=params["padding"], dilation=spec.dilation, groups=groups,
              padding_mode=spec.padding_mode, strategy="tn")
    assert_close(tnconv.conv(x, w, **kw), expected)
    g = rand(*expected.shape)
    assert_close(tnconv.conv_weight_vjp(x, w.shape, g, **kw), _weight_grad(x, w, spec, g))


@pytest.mark.parametrize("kernel, size, padding, dilation, mode", [
    ((5,), (40,), 2, 1, "zeros"),
    ((3, 3), (20, 17), ((1, 2), (0, 1)), (2, 1), "zeros"),
    ((4, 4), (16, 16), "same", 1, "reflect"),
    ((3,), (30,), ((0, 2),), 3, "replicate"),
    ((3, 3), (12, 12), 1, 1, "circular"),
])
def test_grouped_layers_and_weight_vjps_run_one_product_per_tap(kernel, size, padding,
                                                                dilation, mode):
    spec = tnconv.ConvSpec(6, 9, kernel, size, padding=padding, dilation=dilation, groups=3,
                           padding_mode=mode)
    assert ShiftGemm in step_types(schedule_of("forward", spec, 2))
    assert ShiftGemmOutput in step_types(schedule_of("weight_vjp", spec, 2))
    assert ShiftGemmOutput in step_types(schedule_of("weight_vjp", spec, 2, per_sample=True))
    x, w = rand(2, 6, *size), rand(*spec.weight_shape)
    expected = torch_conv(x, w, (1,) * len(size), _pairs(spec), spec.dilation, 3, mode)
    kw = dict(padding=padding, dilation=dilation, groups=3, padding_mode=mode, strategy="tn")
    assert_close(tnconv.conv(x, w, **kw), expected)
    g = rand(*expected.shape)
    assert_close(tnconv.conv_weight_vjp(x, w.shape, g, **kw), _weight_grad(x, w, spec, g))
    per_sample = torch.stack([_weight_grad(x[i:i + 1], w, spec, g[i:i + 1]) for i in range(2)])
    assert_close(tnconv.conv_weight_vjp(x, w.shape, g, per_sample=True, **kw), per_sample)


def test_dense_and_strided_convolutions_keep_their_products():
    dense = tnconv.ConvSpec(4, 4, kernel_size=3, input_size=(9, 9), padding=1)
    strided = tnconv.ConvSpec(4, 4, kernel_size=3, input_size=(9, 9), stride=2, groups=2)
    for spec in (dense, strided):
        schedule = schedule_of("forward", spec, 2)
        assert "windows" not in schedule.families, schedule.describe()


# ------------------------------------------------------------------ rules on sites
_GEMM_SIZES = {"n": 2, "g": 2, "c": 3, "o": 5, "k": 3, "p": 4, "j": 2, "f": 2}
_GEMM_VIEW = View((2, 2, 3, 7, 5), (Window(3, 3, 1), Window(5, 2, 1)))  # [n, g, c, o, k, p, j]
_GEMM_LEGS = ("n", "g", "c", "o", "k", "p", "j")


def _windows_of(x: torch.Tensor) -> torch.Tensor:
    """[n, g, c, o, k, p, j] windows of a [n, g, c, 7, 5] tensor laid out in any way."""
    return x.unfold(3, 3, 1).unfold(4, 2, 1).permute(0, 1, 2, 3, 5, 4, 6)


def _inputs(layout: str) -> torch.Tensor:
    """[2, 2, 3, 7, 5] values: contiguous, transposed (window starts of strides 1 and 7),
    or every other column (no unit stride at all)."""
    if layout == "contiguous":
        return rand(2, 2, 3, 7, 5)
    if layout == "transposed":
        return rand(2, 2, 3, 5, 7).transpose(3, 4)
    return rand(2, 2, 3, 7, 10)[..., ::2]


def _count_einsums(monkeypatch) -> list:
    calls = []
    real = torch.einsum
    monkeypatch.setattr(torch, "einsum", lambda *a: calls.append(a[0]) or real(*a))
    return calls


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "strided"])
@pytest.mark.parametrize("kind, other, out", [
    (ShiftGemm, ("g", "f", "c", "k", "j"), ("n", "g", "f", "o", "p")),
    (ShiftGemmOutput, ("n", "g", "f", "o", "p"), ("g", "f", "c", "k", "j")),
])
def test_shift_gemms_run_on_any_layout_and_fall_back_without_a_unit_stride(
        monkeypatch, layout, kind, other, out):
    """Runs are found from the windows' actual strides; windows whose starts have no unit
    stride have no contiguous run: the step runs its einsum."""
    site = _site(_GEMM_VIEW, _GEMM_LEGS, other, out, _GEMM_SIZES)
    step = window_rule(site)
    assert isinstance(step, kind) and reads_in_place(step)
    windows, w = _windows_of(_inputs(layout)), rand(*site.shape(other))
    expected = _einsum(site, windows, w)
    calls = _count_einsums(monkeypatch)
    assert_close(run_step(step, windows, w), expected)
    assert (calls == [step.equation]) == (layout == "strided")


def test_shift_tap_falls_back_where_the_rows_do_not_merge(monkeypatch):
    view = View((2, 3, 9), (Window(2, 3, 1),))  # [n, c, o, k]
    site = _site(view, ("n", "c", "o", "k"), ("c", "k"), ("n", "c", "o"), dict(n=2, c=3, o=7, k=3))
    step = window_rule(site)
    assert isinstance(step, ShiftTap)
    x = rand(3, 2, 9).transpose(0, 1)  # rows n, c of strides 9, 18: not one row leg
    windows, w = view.apply_torch(x), rand(3, 3)
    contiguous = view.apply_torch(rand(2, 3, 9))
    expected = _einsum(site, windows, w), _einsum(site, contiguous, w)
    calls = _count_einsums(monkeypatch)
    assert_close(run_step(step, windows, w), expected[0])
    assert calls == [step.equation]
    assert_close(run_step(step, contiguous, w), expected[1])
    assert calls == [step.equation]  # no fallback on rows that merge


_SHIFT_CASES = {  # windowed [n, g, c, o, k, p, j]; other's legs; output legs
    ShiftGemm: (("g", "f", "c", "k", "j"), ("n", "g", "f", "o", "p")),
    ShiftGemmOutput: (("n", "g", "f", "o", "p"), ("g", "f", "c", "k", "j")),
}


@given(kind=st.sampled_from(sorted(_SHIFT_CASES, key=lambda k: k.__name__)),
       dilation=st.sampled_from([1, 2]), data=st.data())
def test_shift_gemm_steps_match_einsum_for_any_leg_order(kind, dilation, data):
    other_legs, out_legs = _SHIFT_CASES[kind]
    other = tuple(data.draw(st.permutations(other_legs)))
    out = tuple(data.draw(st.permutations(out_legs)))
    view = View((2, 2, 3, 8, 6), (Window(3, 3, 1, dilation), Window(5, 2, 1, dilation)))
    sizes = dict(zip(_GEMM_LEGS, view.shape), f=2)
    site = _site(view, _GEMM_LEGS, other, out, sizes, swap=data.draw(st.booleans()))
    step = window_rule(site)
    assert isinstance(step, kind)
    x = rand(2, 2, 3, 8, 6)
    if data.draw(st.booleans()):
        x = rand(2, 2, 3, 6, 8).transpose(3, 4)
    windows, w = view.apply_torch(x), rand(*site.shape(other))
    assert_close(run_step(step, windows, w), _einsum(site, windows, w))


@given(data=st.data())
def test_shift_taps_match_einsum_for_any_leg_order(data):
    """Depthwise stride-1 windows [n, g, o, k, p, j] against a weight of g and the taps."""
    view = View((2, 3, 7, 6), (Window(2, 3, 1, data.draw(st.sampled_from([1, 2]))),
                               Window(4, 2, 1)))
    legs = ("n", "g", "o", "k", "p", "j")
    sizes = dict(zip(legs, view.shape))
    other = tuple(data.draw(st.permutations(("g", "k", "j"))))
    out = tuple(data.draw(st.permutations(("n", "g", "o", "p"))))
    site = _site(view, legs, other, out, sizes, swap=data.draw(st.booleans()))
    step = window_rule(site)
    assert isinstance(step, ShiftTap)
    windows, w = view.apply_torch(rand(2, 3, 7, 6)), rand(*site.shape(other))
    assert_close(run_step(step, windows, w), _einsum(site, windows, w))


_TAP_VIEW = View((2, 3, 10, 10), (Window(2, 4, 2), Window(4, 4, 2)))  # [n, g, o, k, p, j]
_TAP_LEGS = ("n", "g", "o", "k", "p", "j")


@given(data=st.data())
def test_tap_loops_match_einsum_for_any_leg_order(data):
    """Strided depthwise windows, taps summed against a weight, legs permuted: every tap
    summed is one multiply-add per tap on its grid of positions (`ShiftTap`); with a tap
    kept in the result, a tap loop of multiply-adds."""
    sizes = dict(zip(_TAP_LEGS, _TAP_VIEW.shape))
    summed = [tap for tap in ("k", "j") if data.draw(st.booleans())] or ["k"]
    other = tuple(data.draw(st.permutations(["g"] + summed)))
    out_legs = [leg for leg in _TAP_LEGS if leg not in summed]
    out = tuple(data.draw(st.permutations(out_legs)))
    site = _site(_TAP_VIEW, _TAP_LEGS, other, out, sizes, swap=data.draw(st.booleans()))
    step = window_rule(site)
    if len(summed) == 2:
        assert isinstance(step, ShiftTap)
    else:
        assert isinstance(step, TapLoop) and step.broadcast is not None
    windows, w = _TAP_VIEW.apply_torch(rand(2, 3, 10, 10)), rand(*site.shape(other))
    assert_close(run_step(step, windows, w), _einsum(site, windows, w))


@given(data=st.data())
def test_tap_outputs_match_einsum_for_any_leg_order(data):
    """Strided depthwise windows met by a cotangent, taps kept (a depthwise weight VJP)."""
    sizes = dict(zip(_TAP_LEGS, _TAP_VIEW.shape))
    other = tuple(data.draw(st.permutations(("n", "g", "o", "p"))))
    out = tuple(data.draw(st.permutations(("g", "k", "j"))))
    site = _site(_TAP_VIEW, _TAP_LEGS, other, out, sizes, swap=data.draw(st.booleans()))
    step = window_rule(site)
    assert isinstance(step, TapOutput)
    windows, gy = _TAP_VIEW.apply_torch(rand(2, 3, 10, 10)), rand(*site.shape(other))
    assert_close(run_step(step, windows, gy), _einsum(site, windows, gy))


def test_a_tap_loop_over_a_huge_window_view_runs_one_einsum_per_tap(monkeypatch):
    """Not elementwise (a dense strided layer): only past MAX_WINDOW_ELEMENTS, as a loop of
    einsums over the taps."""
    legs, other, out = ("n", "c", "o", "k", "p", "j"), ("f", "c", "k", "j"), ("n", "f", "o", "p")
    sizes = dict(zip(legs, _TAP_VIEW.shape), f=4)
    site = _site(_TAP_VIEW, legs, other, out, sizes)
    assert window_rule(site) is None  # below the limit: one einsum is the way
    monkeypatch.setattr(window_rules, "MAX_WINDOW_ELEMENTS", 100)
    step = window_rule(site)
    assert isinstance(step, TapLoop) and step.broadcast is None and len(step.selections) == 16
    windows, w = _TAP_VIEW.apply_torch(rand(2, 3, 10, 10)), rand(4, 3, 4, 4)
    assert_close(run_step(step, windows, w), _einsum(site, windows, w))


def test_windows_that_copy_too_little_are_left_to_the_einsum():
    """Strided windows that hardly overlap (less than twice the data) and are not depthwise
    (a tap kept in the result): no tap loop; depthwise ones run in place on their grid."""
    view = View((2, 3, 9), (Window(2, 3, 2),))  # 4 windows of 3 over 9
    sizes = dict(n=2, c=3, o=4, k=3, f=2)
    assert window_rule(_site(view, ("n", "c", "o", "k"), ("c", "f"), ("n", "f", "o", "k"),
                             sizes)) is None
    site = _site(view, ("n", "c", "o", "k"), ("c", "k"), ("n", "c", "o"), sizes)
    assert isinstance(window_rule(site), ShiftTap)


def test_legs_out_of_the_expected_order_are_declined():
    sizes = {"n": 2, "g": 2, "c": 3, "o": 5, "k": 3, "f": 2}
    # contracted leg before the shared one, a tap kept in the result, no shared leg
    view = View((2, 3, 2, 7), (Window(3, 3, 1),))
    assert window_rule(_site(view, ("n", "c", "g", "o", "k"), ("g", "f", "c", "k"),
                             ("n", "g", "f", "o"), sizes)) is None
    view = View((2, 2, 3, 7), (Window(3, 3, 1),))
    assert window_rule(_site(view, ("n", "g", "c", "o", "k"), ("g", "f", "c"),
                             ("n", "g", "f", "o", "k"), sizes)) is None
    view = View((2, 3, 7), (Window(2, 3, 1),))
    assert window_rule(_site(view, ("n", "c", "o", "k"), ("f", "c", "k"), ("n", "f", "o"),
                             sizes)) is None


def test_a_window_view_that_is_no_argument_is_declined():
    view = View((2, 3, 9), (Window(2, 3, 1),))
    legs, sizes = ("n", "c", "o", "k"), dict(n=2, c=3, o=7, k=3)
    site = Site((Operand(0, legs, False, view=view, argument=False), Operand(1, ("c", "k"), False)),
                ("n", "c", "o"), 2, sizes)
    assert window_rule(site) is None
    no_view = Site((Operand(0, legs, False, argument=True), Operand(1, ("c", "k"), False)),
                   ("n", "c", "o"), 2, sizes)
    assert window_rule(no_view) is None


# ------------------------------------------------------------------ autograd
_AUTOGRAD_CASES = [  # the second ShiftTap: strided windows, on the grid
    (_GEMM_VIEW, _GEMM_LEGS, ("g", "f", "c", "k", "j"), ("n", "g", "f", "o", "p"), ShiftGemm),
    (_GEMM_VIEW, _GEMM_LEGS, ("n", "g", "f", "o", "p"), ("g", "f", "c", "k", "j"),
     ShiftGemmOutput),
    (View((2, 3, 7, 6), (Window(2, 3, 1), Window(4, 2, 1))), ("n", "g", "o", "k", "p", "j"),
     ("g", "k", "j"), ("n", "g", "o", "p"), ShiftTap),
    (_TAP_VIEW, _TAP_LEGS, ("g", "k"), ("n", "g", "o", "p", "j"), TapLoop),
    (_TAP_VIEW, _TAP_LEGS, ("g", "k", "j"), ("n", "g", "o", "p"), ShiftTap),
    (_TAP_VIEW, _TAP_LEGS, ("n", "g", "o", "p"), ("g", "k", "j"), TapOutput),
]


@pytest.mark.parametrize("view, legs, other, out, kind", _AUTOGRAD_CASES,
                         ids=[case[-1].__name__ for case in _AUTOGRAD_CASES])
def test_steps_that_autograd_records_have_the_einsums_gradient(view, legs, other, out, kind):
    """A double backward differentiates the schedule itself: the shift steps fall back to
    the einsum (no accumulation into out= buffers), the tap loops are recorded as they run."""
    sizes = dict(zip(legs, view.shape), f=2)
    site = _site(view, legs, other, out, sizes)
    step = window_rule(site)
    assert isinstance(step, kind)
    x = rand(*view.base_shape).requires_grad_(True)
    w = rand(*site.shape(other)).requires_grad_(True)
    g = rand(*site.shape(out))
    grads = torch.autograd.grad((run_step(step, view.apply_torch(x), w) * g).sum(), (x, w))
    expected = torch.autograd.grad((_einsum(site, view.apply_torch(x), w) * g).sum(), (x, w))
    for actual, reference in zip(grads, expected):
        assert_close(actual, reference)


@pytest.mark.parametrize("in_channels, out_channels, size, groups", [
    (6, 9, 12, 3), (6, 18, 16, 6)])
@pytest.mark.parametrize("taps, rows", [(9, 3), (2, 1), (9, 100)],
                         ids=["blocks-of-3-rows", "chunks-of-2-taps", "one-block"])
def test_taps_kept_against_a_larger_operand_lay_out_the_data_not_the_operand(
        monkeypatch, in_channels, out_channels, size, groups, taps, rows):
    """Groups of 2 channels in and 3 out, or 1 in and 3 out: in the weight VJP the
    cotangent is the larger operand, so it is read in place and the taps' data is laid
    out a block of rows at a time (all 9 taps of 3 rows, 2 taps of 1 row, or everything at
    once as the buffer's size allows), not the cotangent zero-padded; the value equals the
    zero-padded way's and torch's."""
    spec = tnconv.ConvSpec(in_channels, out_channels, 3, (size, size), padding=1,
                           groups=groups)
    assert ShiftGemmOutput in step_types(schedule_of("weight_vjp", spec, 2))
    per_tap = in_channels // groups * size * size * 8  # one row's data of one tap, float64
    monkeypatch.setattr(window_runtime, "_LAID_OUT_BYTES", taps * rows * per_tap)
    x, v = rand(2, in_channels, size, size), rand(2, out_channels, size, size)
    laid_out: list = []
    monkeypatch.setattr(window_runtime, "_taps_laid_out", _recording(
        window_runtime._taps_laid_out, laid_out))
    got = tnconv.compile("weight_vjp", spec, strategy="tn")(x, v)
    assert laid_out
    monkeypatch.setattr(window_runtime, "_rows_in_place", lambda *args: None)
    tnconv.clear_caches()
    assert_close(tnconv.compile("weight_vjp", spec, strategy="tn")(x, v), got)
    w = rand(*spec.weight_shape).requires_grad_()
    (torch.nn.functional.conv2d(x, w, padding=1, groups=groups) * v).sum().backward()
    assert_close(got, w.grad)


def _recording(function, calls: list):
    def recorded(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)
    return recorded


def test_a_ggn_on_small_groups_reads_the_sqrt_factor_in_place_a_column_at_a_time(monkeypatch):
    """A GGN diagonal of 4-in, 8-out groups: torch's kernel would copy the sqrt factor (its
    C columns outermost) into its own layout, so the shift step takes the product; the
    factor's rows do not merge across the columns, so each column's rows meet the laid-out
    windows in place, and the value equals Σ_{c,n} (J_nᵀ S[c, n])² by autograd."""
    from tnconv.lower.schedule.conv import ConvKernel

    spec = tnconv.ConvSpec(8, 16, 3, (10, 10), padding=1, groups=2)
    kinds = step_types(schedule_of("ggn_diagonal", spec, 2, classes=2))
    assert ShiftGemmOutput in kinds and ConvKernel not in kinds
    parts: list = []
    original = window_runtime._taps_laid_out

    def recording(step, v, laid, *rest):
        parts.append(len(laid))
        return original(step, v, laid, *rest)

    monkeypatch.setattr(window_runtime, "_taps_laid_out", recording)
    x, s = rand(2, 8, 10, 10), rand(2, 2, 16, 10, 10)
    got = tnconv.compile("ggn_diagonal", spec, strategy="tn", classes=2)(x, s)
    assert parts == [2]  # one [rows, 8, ∏O] view of the factor per column
    expected = torch.zeros(spec.weight_shape, dtype=torch.float64)
    for c in range(2):
        for n in range(2):
            w = torch.zeros(spec.weight_shape, dtype=torch.float64, requires_grad=True)
            y = torch.nn.functional.conv2d(x[n:n + 1], w, padding=1, groups=2)
            (grad,) = torch.autograd.grad((y * s[c, n:n + 1]).sum(), w)
            expected += grad ** 2
    assert_close(got, expected)
