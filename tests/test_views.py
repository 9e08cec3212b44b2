"""Data-tensor views (torch agrees with independent references, the symbolic layout with
torch's strides), their plumbing through Network / lower / execute, and sub-tensor slicing
(`slice_index`)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tests.helpers import assert_close, rand
from tests.references import pad as reference_pad
from tests.rewrite_helpers import case, value
from tnconv.lower import lower
from tnconv.ir.network import Network, Tensor
from tnconv.rewrite.rules import slice_index
from tnconv.rewrite.rules.slicing import SlicedConstant
from tnconv.ir.views import Dilate, Flip, Pad, Reshape, Slice, SplitLeg, Take, View, Window


def _step_by_step(view: View, x: torch.Tensor) -> torch.Tensor:
    x = x.reshape(view.base_shape)
    for step in view.steps:
        x = step.torch(x)
    return x


def _both(view: View, x: torch.Tensor) -> torch.Tensor:
    """The view on torch; the symbolic layout predicts its shape and, where no step
    copies, its strides and offset on a contiguous input."""
    out = view.apply_torch(x)
    assert tuple(out.shape) == view.shape
    assert torch.equal(_step_by_step(view, x), out)
    layout = view.layout()
    assert layout.shape == tuple(out.shape)
    if not layout.fresh and x.is_contiguous():
        assert (layout.strides, layout.offset) == (out.stride(),
                                                   out.storage_offset() - x.storage_offset())
    return out


@given(st.integers(3, 9), st.integers(0, 3), st.integers(0, 3),
       st.sampled_from(["zeros", "circular", "reflect", "replicate"]))
def test_pad_matches_reference(size, left, right, mode):
    if mode == "reflect":
        left, right = min(left, size - 1), min(right, size - 1)
    x = rand(2, size, 3)
    out = _both(View((2, size, 3), (Pad(1, left, right, mode),)), x)
    expected = reference_pad(x.transpose(1, 2), [(left, right)], mode).transpose(1, 2)
    assert_close(out, expected)


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(0, 6))
def test_window_reads_o_times_step_plus_k_times_dilation(size, step, dilation, extra):
    length = (size - 1) * dilation + 1 + extra
    x = rand(3, length)
    out = _both(View((3 * length,), (Reshape((3, length)), Window(1, size, step, dilation))), x)
    count = (length - (size - 1) * dilation - 1) // step + 1
    expected = torch.stack([torch.stack([x[:, o * step + k * dilation] for k in range(size)], -1)
                            for o in range(count)], 1)
    assert_close(out, expected)


def test_slice_take_split_and_copied_elements():
    x = rand(2, 12)
    view = View((2, 12), (Slice(1, 1, 12, 2), Take(1, (0, 2, 3, 5)), SplitLeg(1, (2, 2))))
    out = _both(view, x)
    assert_close(out.reshape(2, 4), x[:, [1, 5, 7, 11]])
    assert view.copied_elements() == 8 and view.shapes()[1] == (2, 6)
    with pytest.raises(ValueError):
        View((2, 12), (SplitLeg(1, (5, 2)),)).shape


def test_views_flow_through_network_lowering_and_execution():
    x = Tensor("X", ("a", "b"), "input", view=View((6,), (SplitLeg(0, (2, 3)),)))
    net = Network((x,), (("a", 2), ("b", 3)), ("b", "a")).validate()
    program = lower(net, ("input",), (3, 2))
    assert program.operands[0].view == x.view
    arg = rand(6)
    assert_close(value(net, "unfold", [arg]), arg.reshape(2, 3).T)
    with pytest.raises(tnconv.TNConvError, match="view"):
        Network((x,), (("a", 3), ("b", 2)), ("a",)).validate()
    assert "view: reshape(6,) -> split" in net.describe()


def test_slice_index_on_data_pattern_and_output():
    net, spec, args = case("unfold", batch=2, in_channels=2, out_channels=2, kernel_size=3,
                           input_size=(9,))
    full = value(net, "unfold", args)
    sliced = slice_index(net, "o1", [0, 3, 6])  # output index: tensor dropout's use
    assert_close(value(sliced, "unfold", args), full[..., [0, 3, 6]])
    assert sliced.tensor("Π1").value.stride == 3  # still an IndexPattern
    odd = slice_index(net, "o1", [0, 1, 4])
    assert isinstance(odd.tensor("Π1").value, SlicedConstant)
    assert odd.tensor("Π1").role == "constant"
    assert_close(value(odd, "unfold", args), full[..., [0, 1, 4]])


def test_slice_index_drops_unread_input_pixels_exactly():
    net, spec, args = case("forward", batch=2, in_channels=2, out_channels=3, kernel_size=2,
                           stride=4, input_size=(13,))
    read = [o * 4 + k for o in range(3) for k in range(2)]
    sliced = slice_index(net, "i1", read)
    assert sliced.tensor("X").view.steps == (Take(3, tuple(read)),)
    assert_close(value(sliced, "forward", args), value(net, "forward", args))
    strided = slice_index(net, "i1", range(0, 13, 2))
    assert strided.tensor("X").view.steps == (Slice(3, 0, 13, 2),)


@pytest.mark.parametrize("bad", [[], [3, 1], [0, 99], [-1, 2]])
def test_slice_index_rejects_bad_positions(bad):
    net, _, _ = case("unfold", batch=1, in_channels=1, out_channels=1, kernel_size=3,
                     input_size=(9,))
    with pytest.raises(tnconv.TNConvError, match="indices"):
        slice_index(net, "i1", bad)
    with pytest.raises(tnconv.TNConvError, match="index"):
        slice_index(net, "nope", [0])


def test_flip_and_dilate():
    x = torch.arange(6.0, dtype=torch.float64).reshape(2, 3)
    assert _both(View((2, 3), (Flip(1),)), x).tolist() == [[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]
    dilated = _both(View((2, 3), (Dilate(1, 3),)), x)
    assert dilated.tolist() == [[0, 0, 0, 1, 0, 0, 2], [3, 0, 0, 4, 0, 0, 5]]
    assert View((2, 3), (Flip(1), Dilate(0, 2))).copied_elements() == 6 + 9


def test_pads_move_ahead_of_windows_they_commute_with():
    view = View((4, 8, 9)).then(Pad(1, 1, 1), Window(1, 3, 1), Pad(3, 2, 0))
    assert view.steps == (Pad(2, 2, 0), Pad(1, 1, 1), Window(1, 3, 1))
    x = rand(4, 8, 9)
    naive = Window(1, 3, 1).torch(Pad(1, 1, 1).torch(x))
    assert_close(_both(view, x), Pad(3, 2, 0).torch(naive))


@pytest.mark.parametrize("steps, strided", [
    ((Slice(1, 0, 5, 2), Window(2, size=3, step=2, dilation=2), Reshape((2, 3, 3))), 3),
    ((SplitLeg(0, (2, 1)), Slice(1, 0, 1, 1), Take(2, (0, 3)), Window(3, size=2, step=1)), 2),
    ((Window(1, size=2, step=1), Reshape((8, 12)), Flip(1)), 0),  # the reshape copies
    ((Pad(1, 1, 0), Window(1, size=3, step=1)), 0),
])
def test_leading_view_steps_run_as_one_as_strided_call(steps, strided):
    """Steps that only view a contiguous input are one as_strided call, exactly; a
    non-contiguous input, a storage offset and a tensor that requires grad take the
    steps one by one (the same values)."""
    view = View((2, 5, 6), steps)
    done = view.strided_steps[0]
    assert (done if done >= 2 else 0) == strided  # a single view step runs as it is
    base = rand(3, 5, 6)
    for x in (base[1:], base[1:].transpose(1, 2).contiguous().transpose(1, 2),
              base[1:].clone().requires_grad_(True)):
        out = view.apply_torch(x)
        assert tuple(out.shape) == view.shape
        assert torch.equal(_step_by_step(view, x.detach()), out.detach())
