"""Every rewrite rule: fires where its precondition holds and nowhere else; same value
(float64, against the unrewritten network and an independent reference); a fixed point
is reached (applying the rule again changes nothing); the cost does not grow."""

from __future__ import annotations

from math import prod

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv

from tests.helpers import assert_close, rand
from tests.rewrite_helpers import case, reference, same_value, value
from tnconv.lower import network_cost
from tnconv.rewrite.rules import (constant_fusion, full_extent_kernel, identity_pruning,
                           merge_parallel_legs, non_overlapping_patches, one_by_one_kernel,
                           scatter_to_gather, selection_lowering, squeeze_size_one,
                           stride_phases)
from tnconv.ir.constants import to_numpy
from tnconv.ir.network import Tensor
from tnconv.rewrite.rules.fusion import FusedConstant
from tnconv.rewrite.driver import SCATTER, rewrite
from tnconv.lower.schedule.scatter import Fold
from tnconv.spec import ConvSpec
from tnconv.spec.index_pattern import PADDING_MODES, IndexPattern

C = dict(in_channels=2, out_channels=4)

FIRES = [
    (non_overlapping_patches, "forward", dict(kernel_size=2, stride=2, input_size=(8,))),
    (non_overlapping_patches, "unfold", dict(kernel_size=16, stride=16, input_size=(32, 48))),
    (non_overlapping_patches, "forward", dict(kernel_size=3, stride=3, input_size=(11,))),
    (non_overlapping_patches, "unfold", dict(kernel_size=2, stride=2, input_size=(7,),
                                             padding=((1, 0),))),
    (non_overlapping_patches, "forward", dict(kernel_size=2, stride=2, input_size=(5,),
                                              transposed=True)),
    (non_overlapping_patches, "unfold", dict(kernel_size=(2, 3), stride=(2, 1),
                                             input_size=(8, 6))),
    (selection_lowering, "forward", dict(kernel_size=2, stride=4, input_size=(64,))),
    (selection_lowering, "unfold", dict(kernel_size=3, stride=5, input_size=(41, 40), padding=1)),
    (full_extent_kernel, "forward", dict(kernel_size=5, stride=3, input_size=(5,))),
    (full_extent_kernel, "unfold", dict(kernel_size=6, input_size=(5, 5), padding=((1, 0), (0, 1)),
                                        padding_mode="replicate")),
    (full_extent_kernel, "forward", dict(kernel_size=3, dilation=2, input_size=(5, 8))),
    (one_by_one_kernel, "forward", dict(kernel_size=1, stride=2, input_size=(7, 7))),
    (one_by_one_kernel, "unfold", dict(kernel_size=1, stride=3, padding=1, input_size=(8,))),
    (identity_pruning, "forward", dict(kernel_size=1, input_size=(5, 3))),
    (squeeze_size_one, "forward", dict(kernel_size=3, input_size=(6,))),
    (merge_parallel_legs, "unfold", dict(kernel_size=3, input_size=(6,), groups=2)),
    (selection_lowering, "forward", dict(kernel_size=3, padding=1, input_size=(9,))),
    (selection_lowering, "unfold", dict(kernel_size=4, padding="same", input_size=(9, 9))),
    (selection_lowering, "forward", dict(kernel_size=3, stride=2, dilation=2, padding=2,
                                         padding_mode="reflect", input_size=(11,))),
    (selection_lowering, "unfold", dict(kernel_size=3, padding=2, padding_mode="circular",
                                        input_size=(6,))),
    (selection_lowering, "forward", dict(kernel_size=10, stride=5, input_size=(16000,))),
]

NEVER = [
    (non_overlapping_patches, "forward", dict(kernel_size=3, stride=2, input_size=(9,))),
    (non_overlapping_patches, "forward", dict(kernel_size=2, stride=2, dilation=2,
                                              input_size=(9,))),
    (non_overlapping_patches, "forward", dict(kernel_size=4, stride=4, input_size=(4,))),
    (non_overlapping_patches, "forward", dict(kernel_size=2, stride=2, input_size=(5,),
                                              padding=1, transposed=True)),
    (full_extent_kernel, "forward", dict(kernel_size=5, input_size=(6,))),
    (full_extent_kernel, "forward", dict(kernel_size=1, input_size=(1,))),
    (one_by_one_kernel, "forward", dict(kernel_size=1, input_size=(7,))),
    (one_by_one_kernel, "forward", dict(kernel_size=3, stride=2, input_size=(7,))),
    (identity_pruning, "forward", dict(kernel_size=1, stride=2, input_size=(7,))),
    (identity_pruning, "forward", dict(kernel_size=1, padding=1, input_size=(7,))),
    (squeeze_size_one, "forward", dict(kernel_size=1, stride=2, input_size=(7,), groups=2,
                                       in_channels=4)),
    (merge_parallel_legs, "forward", dict(kernel_size=3, input_size=(6,), groups=2)),
    (selection_lowering, "forward", dict(kernel_size=3, stride=2, input_size=(5,),
                                         transposed=True)),
    (constant_fusion, "forward", dict(kernel_size=3, input_size=(6, 5))),
]


def _check_reference(op: str, spec, args, result) -> None:
    if not spec.transposed:
        assert_close(result.reshape(-1), reference(op, spec, args).reshape(-1))


@pytest.mark.parametrize("rule, op, spec", FIRES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_rule_fires_keeps_value_and_cost(rule, op, spec):
    batch = 1 if rule is squeeze_size_one else 2  # a batch of one is a size-1 index
    net, conv, args = case(op, batch=batch, **{**C, **spec})
    once = rule(net)
    assert once is not None and once != net
    assert network_cost(once).not_worse_than(network_cost(net))
    result = rewrite(net, rules=[rule])
    fixed = result.network
    assert result.steps and all(s.after.not_worse_than(s.before) for s in result.steps)
    assert rewrite(fixed, rules=[rule]).steps == ()
    if conv.input_size[0] < 1000:
        same_value(net, once, op, args)
        same_value(net, fixed, op, args)
        _check_reference(op, conv, args, value(fixed, op, args))


@pytest.mark.parametrize("rule, op, spec", NEVER, ids=lambda v: getattr(v, "__name__", str(v)))
def test_rule_does_not_fire_outside_its_precondition(rule, op, spec):
    net, _, _ = case(op, batch=2, **{**C, **spec})
    assert rule(net) is None


def test_constant_fusion_sums_a_private_leg():
    """Σ_o Π (as in KFAC-reduce) becomes one fused constant, built once."""
    net, _, args = case("unfold", batch=2, **C, kernel_size=3, stride=2, input_size=(9, 7))
    net = net.replace(output=("n", "g", "c_in", "k1", "k2")).pruned_sizes().validate()
    fused = constant_fusion(net)
    assert fused is not None
    assert sum(isinstance(t.value, FusedConstant) for t in fused.tensors) == 1
    assert network_cost(fused).not_worse_than(network_cost(net))
    same_value(net, fused, "unfold", args)
    fixed = rewrite(net, rules=[constant_fusion]).network
    assert constant_fusion(fixed) is None
    same_value(net, fixed, "unfold", args)


@settings(max_examples=60)
@given(kernel=st.integers(1, 4), stride=st.integers(1, 3), dilation=st.integers(1, 3),
       left=st.integers(0, 3), right=st.integers(0, 3), size=st.integers(4, 12),
       mode=st.sampled_from(PADDING_MODES), transposed_legs=st.booleans())
def test_a_pattern_summed_over_its_output_is_counted_from_its_taps(
        kernel, stride, dilation, left, right, size, mode, transposed_legs):
    """Σ_o Π[k, o, i] from the tap table equals the dense pattern summed (every padding
    mode, either leg order of the result)."""
    reach = dilation * (kernel - 1) + 1
    if size + left + right < reach or (mode == "reflect" and max(left, right) >= size):
        return
    output = (size + left + right - reach) // stride + 1
    pattern = IndexPattern(kernel, stride, dilation, (left, right), input_size=size,
                           output_size=output, mode=mode)
    legs = ("i", "k") if transposed_legs else ("k", "i")
    fused = FusedConstant(((pattern, ("k", "o", "i")),),
                          (("k", kernel), ("o", output), ("i", size)), legs)
    assert fused.sums_one_pattern()
    dense = pattern.to_numpy().sum(1)
    assert np.array_equal(fused.to_numpy(), dense.T if transposed_legs else dense)


def test_kfac_reduce_of_a_long_dilated_1d_layer_never_builds_its_dense_pattern():
    """Parallel WaveGAN's dilated conv1d over 16,000 samples: Σ_o Π is fused from the tap
    table (3 x 16,000) where the dense pattern is 3 x 16,000 x 16,000 (3 GiB)."""
    spec = ConvSpec(4, 4, 3, input_size=(16000,), padding=8, dilation=8)
    compiled = tnconv.compile("kfac_reduce", spec, strategy="tn", batch_size=2)
    constants = compiled.schedule().constants
    assert constants and all(prod(c.shape) <= 3 * 16000 for c in constants)
    x = rand(2, 4, 16000)
    patches = torch.nn.functional.unfold(x.unsqueeze(2), (1, 3), dilation=(1, 8),
                                         padding=(0, 8)).mean(-1)   # [n, c·k]
    assert_close(compiled(x)[0], patches.T @ patches / 2)


def test_constant_fusion_counts_a_huge_pattern_and_refuses_huge_products():
    """Σ_o Π of a 10 x 3199 x 16,000 pattern fuses (counted from its taps: 10 x 16,000);
    two such patterns joined by a private leg would need their dense product: refused."""
    net, _, _ = case("unfold", batch=1, in_channels=1, out_channels=1, kernel_size=10, stride=5,
                     input_size=(16000,))
    summed = net.replace(output=("n", "g", "c_in", "k1")).pruned_sizes().validate()
    fused = constant_fusion(summed)
    assert fused is not None
    (constant,) = [t for t in fused.tensors if isinstance(t.value, FusedConstant)]
    assert fused.shape_of(constant) == (10, 16000)
    assert to_numpy(constant.value).sum() == 10 * 3199  # each tap reads every window once
    pattern = net.tensor("Π1")
    twin = Tensor("Π1'", ("k1'", "o1", "i1'"), "pattern", pattern.value)
    sizes = dict(net.sizes, **{"k1'": 10, "i1'": 16000})
    joined = net.replace(tensors=(pattern, twin), output=("k1", "i1", "k1'", "i1'"),
                         sizes=tuple(sizes.items()))
    assert constant_fusion(joined) is None


def test_pattern_legs_are_read_by_position_for_transposed_specs():
    """Transposed patterns carry (k, i, o) by name: the rules must use the positions."""
    net, conv, args = case("forward", batch=2, **C, kernel_size=2, stride=2, input_size=(5, 3),
                           transposed=True)
    assert net.tensor("Π1").indices == ("k1", "i1", "o1")
    out = non_overlapping_patches(net)
    assert "Π1" not in [t.name for t in out.tensors] and ("i1", "k1") == out.output[3:5]
    same_value(net, out, "forward", args)


SCATTERS = [
    ("input_vjp", dict(kernel_size=3, stride=2, padding=1, input_size=(32,))),
    ("input_vjp", dict(kernel_size=(4, 3), stride=(2, 3), dilation=(1, 2),
                       padding=((1, 2), (0, 1)), input_size=(11, 10))),
    ("input_vjp", dict(kernel_size=2, padding=3, input_size=(5,))),  # padding past the reach
    ("forward", dict(kernel_size=4, stride=2, padding=1, input_size=(5, 6), transposed=True)),
    ("fold", dict(kernel_size=3, stride=2, padding=1, input_size=(8,), out_channels=2)),
]


@pytest.mark.parametrize("op, spec", SCATTERS)
def test_scatter_to_gather_keeps_value_and_reaches_a_fixed_point(op, spec):
    net, _, args = case(op, batch=2, **{**C, **spec})
    once = scatter_to_gather(net)
    assert once is not None and once != net
    same_value(net, once, op, args)
    fixed = rewrite(net, rules=[scatter_to_gather]).network
    assert rewrite(fixed, rules=[scatter_to_gather]).steps == ()
    same_value(net, fixed, op, args)
    lowered = rewrite(net, rules=[SCATTER])  # the chain is kept only where it pays
    assert network_cost(lowered.network).not_worse_than(network_cost(net))
    same_value(net, lowered.network, op, args)


@pytest.mark.parametrize("op, spec", [SCATTERS[0], SCATTERS[4]])
def test_folding_a_scatter_is_cheaper_than_gathering_from_the_dilated_data(op, spec):
    """The scattering pattern is applied as a fold (one pass, no dense pattern)."""
    net, _, _ = case(op, batch=2, **{**C, **spec})
    gathered = scatter_to_gather(net)
    while (lowered := selection_lowering(gathered)) is not None:
        gathered = lowered
    assert any(t.view is not None for t in gathered.data_tensors)
    assert network_cost(net).total < network_cost(gathered).total
    assert "scatter_to_gather" not in [s.rule for s in rewrite(net, rules=[SCATTER]).steps]


PHASED = [  # strided, zero-padded scatters with more taps than the stride (K > S, D = 1)
    ("input_vjp", dict(kernel_size=3, stride=2, padding=1, input_size=(32,))),
    ("input_vjp", dict(kernel_size=(4, 5), stride=(2, 3), padding=((1, 2), (0, 1)),
                       input_size=(11, 10))),
    ("input_vjp", dict(kernel_size=7, stride=3, padding=4, input_size=(20,))),
    ("forward", dict(kernel_size=4, stride=2, padding=1, input_size=(5, 6), transposed=True)),
    ("forward", dict(kernel_size=5, stride=2, padding=2, input_size=(7, 6), transposed=True,
                     groups=2)),
    ("forward", dict(kernel_size=(3, 5, 3), stride=2, padding=1, input_size=(3, 4, 3),
                     transposed=True, output_padding=1)),
]


@pytest.mark.parametrize("op, spec", PHASED)
def test_stride_phases_keeps_value_and_reaches_a_fixed_point(op, spec):
    """The split network has the value of the scatter (float64, to rounding); the
    rule applies at most once per strided dimension (never to what it made); with the
    rest of its rule set the result is no costlier than the scatter."""
    net, conv, args = case(op, batch=2, **{**C, **spec})
    once = stride_phases(net)
    assert once is not None and once != net
    same_value(net, once, op, args)
    fixed, applied = once, 1
    while (again := stride_phases(fixed)) is not None:  # one strided dimension at a time
        fixed, applied = again, applied + 1
    assert applied <= conv.ndim
    same_value(net, fixed, op, args)
    lowered = rewrite(net, rules=[SCATTER])
    assert network_cost(lowered.network).not_worse_than(network_cost(net))
    same_value(net, lowered.network, op, args)


@pytest.mark.parametrize("op, spec", [
    ("input_vjp", dict(kernel_size=2, stride=2, input_size=(8,))),  # K <= S: one tap a phase
    ("input_vjp", dict(kernel_size=3, stride=2, dilation=2, input_size=(9,))),  # dilated
    ("input_vjp", dict(kernel_size=3, stride=2, padding=1, padding_mode="reflect",
                       input_size=(9,))),
    ("input_vjp", dict(kernel_size=3, padding=1, input_size=(9,))),  # stride 1
    ("forward", dict(kernel_size=3, stride=2, padding=1, input_size=(9,))),  # gathers
])
def test_stride_phases_only_on_strided_zero_padded_scatters(op, spec):
    net, _, _ = case(op, batch=2, **{**C, **spec})
    assert stride_phases(net) is None


def test_a_strided_grouped_scatter_runs_per_phase():
    """A 5x5/2 transposed convolution with groups of one channel in and two out, blocks
    torch's kernels do not run (`conv._pays`): the rewrite keeps the phase split (the
    dilated form multiplies three zeros in four), and the schedule interleaves the phases
    with folds of non-overlapping patches."""
    spec = ConvSpec(8, 16, 5, input_size=(7, 7), stride=2, padding=2, groups=8,
                    transposed=True)
    compiled = tnconv.compile("forward", spec, strategy="tn", batch_size=2)
    assert "stride_phases" in [step.rule for step in compiled.rewrite_result().steps]
    folds = [step for step in compiled.schedule().steps if isinstance(step, Fold)]
    assert len(folds) == 2 and all(f.pattern.kernel_size == f.pattern.stride == 2
                                   for f in folds)
    x, w = rand(2, 8, 7, 7), rand(8, 2, 5, 5)
    expected = torch.nn.functional.conv_transpose2d(x, w, stride=2, padding=2, groups=8)
    assert_close(compiled(x, w), expected)


@pytest.mark.parametrize("op, spec", [
    ("input_vjp", dict(kernel_size=3, padding=1, padding_mode="circular", input_size=(9,))),
    ("forward", dict(kernel_size=3, stride=2, padding=1, input_size=(9,))),  # gathers
    ("weight_vjp", dict(kernel_size=3, stride=2, padding=1, input_size=(9,))),
])
def test_scatter_to_gather_only_on_zero_padded_scatters(op, spec):
    net, _, _ = case(op, batch=2, **{**C, **spec})
    assert scatter_to_gather(net) is None


def test_legs_of_a_window_view_merge_only_where_the_view_allows():
    """A 1x3x3 kernel in 3d: the frame leg and the window starts of the padded rows travel
    together, but the padded rows lie between them, so merging them would copy the windows
    whole. They stay apart, and the result is torch's."""
    spec = ConvSpec(3, 4, (1, 3, 3), input_size=(4, 6, 5), padding=(0, 1, 1))
    compiled = tnconv.compile("forward", spec, strategy="tn", batch_size=2)
    (argument, _) = compiled.schedule().arguments
    after_windows = argument.view.describe().split("window", 1)[1]
    assert "reshape" not in after_windows
    x, w = rand(2, 3, 4, 6, 5), rand(4, 3, 1, 3, 3)
    expected = torch.nn.functional.conv3d(x, w, padding=(0, 1, 1))
    assert_close(compiled(x, w), expected)
