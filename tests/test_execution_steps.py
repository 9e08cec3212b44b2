"""The execution plan's special steps: Gram products (KFC) and tap loops (window views)."""

from __future__ import annotations

import pytest
import torch

import tnconv
from tests.helpers import DEVICE, assert_close, rand
from tests.references import conv_nd
from tnconv.runtime.execute import plan_for
from tnconv.runtime.gram import GramStep
from tnconv.runtime.shift_gemm import ShiftGemmOutputStep, ShiftTapStep
from tnconv.runtime.tap_loop import TapLoopStep, TapOutputStep, tap_loop_step


def _steps(op: str, spec: tnconv.ConvSpec, batch: int) -> list:
    program = tnconv.compile(op, spec, strategy="tn").program_for(batch)
    return [type(s) for s in plan_for(program, DEVICE, torch.float64)._steps]


def test_kfc_runs_as_one_gram_product():
    spec = tnconv.ConvSpec(3, 3, kernel_size=3, input_size=(32, 32), padding=1, groups=3)
    assert _steps("kfc", spec, 5) == [GramStep]
    x = rand(5, 3, 32, 32)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
    u = torch.nn.functional.unfold(x, 3, padding=1).reshape(5, 3, 9, 1024)
    expected = torch.stack([torch.einsum("ndo,neo->de", u[:, g], u[:, g]) for g in range(3)])
    assert_close(tnconv.kfc(conv, x, strategy="tn"), expected / (5 * 1024))


@pytest.mark.parametrize("stride, dilation, step", [
    (1, 1, ShiftTapStep), (1, (2, 1), ShiftTapStep), (2, 1, TapLoopStep)])
def test_depthwise_forward_runs_tap_by_tap(stride, dilation, step):
    """Stride 1: one multiply-add per tap over runs of the padded input (row blocks);
    strided windows: over the window view's slices."""
    spec = tnconv.ConvSpec(8, 8, kernel_size=3, input_size=(32, 33), padding=1, groups=8,
                           stride=stride, dilation=dilation)
    assert step in _steps("forward", spec, 2)
    x, w = rand(2, 8, 32, 33), rand(8, 1, 3, 3)
    expected = conv_nd(x, w, spec.stride, [(1, 1), (1, 1)], spec.dilation, 8)
    assert_close(tnconv.conv(x, w, stride=stride, padding=1, dilation=dilation, groups=8,
                             strategy="tn"), expected)


def test_shift_tap_blocks_of_rows_cover_every_row(monkeypatch):
    """Blocks smaller than the rows (and a last partial block) give the same result."""
    import tnconv.runtime.shift_gemm as shift_gemm

    run = 31 * 35 + 33  # output rows at the padded width 35, the last one 33 wide
    monkeypatch.setattr(shift_gemm, "_BLOCK_BYTES", 5 * 2 * run * 8)  # 5, 5, 5, 5, 4 rows
    spec = tnconv.ConvSpec(8, 8, kernel_size=3, input_size=(32, 33), padding=1, groups=8)
    x, w = rand(3, 8, 32, 33), rand(8, 1, 3, 3)
    expected = conv_nd(x, w, (1, 1), [(1, 1), (1, 1)], (1, 1), 8)
    assert_close(tnconv.conv(x, w, padding=1, groups=8, strategy="tn"), expected)
    assert ShiftTapStep in _steps("forward", spec, 3)


def test_depthwise_weight_vjp_runs_one_product_per_tap(monkeypatch):
    """One batched dot product per tap and block of rows (18 rows in blocks of 7, the
    last one partial), the cotangent laid out once at the padded width."""
    import tnconv.runtime.shift_gemm as shift_gemm

    run = 14 * 18 + 17  # 15 x 17 outputs at the padded width 18
    monkeypatch.setattr(shift_gemm, "_BLOCK_BYTES", 7 * 2 * run * 8)
    stride = 1
    spec = tnconv.ConvSpec(6, 6, kernel_size=(3, 2), input_size=(17, 16), padding=1,
                           dilation=(2, 1), groups=6)
    assert ShiftGemmOutputStep in _steps("weight_vjp", spec, 3)
    x = rand(3, 6, 17, 16).requires_grad_()
    w = rand(6, 1, 3, 2)
    y = torch.nn.functional.conv2d(x, w, stride=stride, padding=1, dilation=(2, 1), groups=6)
    gy = rand(*y.shape)
    (expected,) = torch.autograd.grad(
        torch.nn.functional.conv2d(x, w.requires_grad_(), stride=stride, padding=1,
                                   dilation=(2, 1), groups=6), w, gy)
    actual = tnconv.conv_weight_vjp(x.detach(), tuple(w.shape), gy, stride=stride,
                                    padding=1, dilation=(2, 1), groups=6, strategy="tn")
    assert_close(actual, expected)


def test_tap_steps_match_the_einsum_for_any_leg_order():
    """Broadcast accumulation (taps summed) and per-tap products (taps kept), legs permuted."""
    windows = rand(2, 5, 7, 3)  # legs n, g, o, k
    sizes = {"n": 2, "g": 5, "o": 7, "k": 3}
    w = rand(3, 5)  # legs k, g
    summed = tap_loop_step(0, ("n", "g", "o", "k"), 1, ("k", "g"), ("o", "g", "n"), sizes, (3,))
    assert summed.broadcast is not None
    assert_close(summed([windows, w]), torch.einsum("ngok,kg->ogn", windows, w))
    gy = rand(7, 2, 5)  # legs o, n, g
    kept = tap_loop_step(0, ("n", "g", "o", "k"), 1, ("o", "n", "g"), ("k", "g"), sizes, (3,))
    assert isinstance(kept, TapOutputStep)
    assert_close(kept([windows, gy]), torch.einsum("ngok,ong->kg", windows, gy))


def test_thin_channel_contractions_stay_one_einsum():
    spec = tnconv.ConvSpec(3, 8, kernel_size=3, input_size=(32, 32), padding=1)
    assert TapLoopStep not in _steps("forward", spec, 2)
    x, w = rand(2, 3, 32, 32), rand(8, 3, 3, 3)
    assert_close(tnconv.conv(x, w, padding=1, strategy="tn"),
                 conv_nd(x, w, (1, 1), [(1, 1), (1, 1)], (1, 1), 1))


def test_gram_step_takes_either_copy_first_without_a_transposing_copy():
    from tnconv.runtime.gram import gram_step

    u = rand(3, 4, 5)  # legs n, c, o
    for output in (("c", "d"), ("d", "c")):
        step = gram_step(("n", "c", "o"), ("n", "d", "o"), (3, 4, 5), output, register=0)
        assert step.output_permutation == ()  # already in order
        expected = torch.einsum("nco,ndo->" + "".join(output), u, u)
        assert_close(step([u]), expected)


def test_a_thin_gram_step_reads_a_contracted_first_operand_as_it_lies(monkeypatch):
    """KFAC-reduce's [N, D] mean patch: ūᵀ ū without a transposing copy of ū."""
    from tnconv.runtime.gram import gram_step

    u = rand(4, 3, 5)  # legs n, c, k: contracted first
    step = gram_step(("n", "c", "k"), ("n", "d", "l"), (4, 3, 5), ("c", "k", "d", "l"),
                     register=0)
    assert step.contracted_first
    monkeypatch.setattr(torch.Tensor, "permute", None)  # the operand is never permuted
    assert_close(step([u]), torch.einsum("nck,ndl->ckdl", u, u))


def test_kfac_reduce_averages_the_input_once_and_meets_in_a_gram_step():
    from tnconv.runtime.execute import _Alias

    spec = tnconv.ConvSpec(8, 8, kernel_size=3, input_size=(20, 20), padding=2, dilation=2)
    steps = _steps("kfac_reduce", spec, 3)
    assert steps[-1] is GramStep and _Alias in steps
    program = tnconv.compile("kfac_reduce", spec, strategy="tn").program_for(3)
    plan = plan_for(program, DEVICE, torch.float64)
    # The normalisation rides as its square root on a matrix of counts: a plain product.
    assert program.scale != 1 and plan._steps[-1].alpha == 1 and plan.scale == 1
    conv = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False)
    x = rand(3, 8, 20, 20)
    ubar = torch.nn.functional.unfold(x, 3, padding=2, dilation=2).mean(2)
    assert_close(tnconv.kfac_reduce(conv, x, strategy="tn")[0], ubar.T @ ubar / 3)


def test_a_scaled_permutation_never_writes_into_the_argument():
    from tnconv.lower.program import lower
    from tnconv.ir.network import Network, Tensor

    net = Network(tensors=(Tensor("X", ("n", "i"), "input"),), sizes=(("n", 2), ("i", 3)),
                  output=("i", "n"), scale=2.0)
    plan = plan_for(lower(net, ("input",), (3, 2)), DEVICE, torch.float64)
    x = rand(2, 3)
    before = x.clone()
    assert_close(plan(x), 2 * before.T)
    assert torch.equal(x, before)


def _unfold_plan(spec: tnconv.ConvSpec, batch: int):
    program = tnconv.compile("unfold", spec, strategy="tn").program_for(batch)
    return plan_for(program, DEVICE, torch.float64)


def test_a_pure_view_runs_as_one_strided_copy():
    """An unpadded unfold is a strided view of x: one as_strided and a copy per call,
    exact for an input with a storage offset, a non-contiguous input and a 1×1 kernel
    (whose view is x itself: the result must still be a new tensor)."""
    from tests.references import unfold_nd

    spec = tnconv.ConvSpec(3, 3, kernel_size=(4, 2), input_size=(9, 7), stride=(2, 1),
                           dilation=(1, 2))
    plan = _unfold_plan(spec, 2)
    assert plan._strided is not None
    base = rand(3, 3, 9, 7)
    for x in (base[1:], base[1:].transpose(2, 3).contiguous().transpose(2, 3)):
        expected = unfold_nd(x, (4, 2), (2, 1), [(0, 0), (0, 0)], (1, 2))
        assert_close(plan(x), expected)
    pointwise = _unfold_plan(tnconv.ConvSpec(3, 3, kernel_size=1, input_size=(5,)), 2)
    x = rand(2, 3, 5)
    result = pointwise(x)
    assert_close(result, x)
    result.zero_()
    assert x.abs().sum() > 0


def test_a_padded_view_keeps_the_step_by_step_plan():
    spec = tnconv.ConvSpec(2, 2, kernel_size=3, input_size=(6,), padding=1)
    assert _unfold_plan(spec, 1)._strided is None
