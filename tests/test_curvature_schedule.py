"""The compiler pieces the curvature networks brought: the per-copy path, a repeated
sub-expression priced once, sums of elementwise products, and taps-kept shift-GEMMs only
where they pay."""

from __future__ import annotations

import itertools

import pytest
import torch

import tnconv
from tnconv.lower import build_schedule, lower, price
from tnconv.lower.copies import copies_first, split_copies
from tnconv.lower.program import lower_program
from tnconv.lower.schedule.builder import repeated_steps
from tnconv.lower.schedule.reduce import HadamardSum, hadamard_rule
from tnconv.lower.schedule.site import Operand, Site
from tnconv.ops.hessian import hessian_diagonal_input_network
from tnconv.ops.kfac import kfc_network
from tnconv.ops.statistics import batch_l2_network
from tnconv.runtime import reduce as reduce_runtime
from tests.helpers import assert_close

SPEC = tnconv.ConvSpec(3, 4, 3, input_size=(7, 6), padding=1)
ARGUMENTS = ("input", "grad_output")


def test_copies_first_contracts_each_copy_then_their_results():
    net = batch_l2_network(SPEC, 2)
    program = lower_program(net, ARGUMENTS, (2,))
    copied = copies_first(net, program, ARGUMENTS)
    names = [op.name for op in program.operands]
    live, taken_names = list(names), []
    for step in copied.path:
        taken_names.append({live[p] for p in step})
        live = [n for p, n in enumerate(live) if p not in step] + [f"#{len(taken_names)}"]
    half = len(copied.path) // 2
    assert all("'" not in n for n in set().union(*taken_names[:half]))
    assert {n for n in set().union(*taken_names[half:-1]) if not n.startswith("#")} \
        == {n + "'" for n in set().union(*taken_names[:half]) if not n.startswith("#")}
    assert repeated_steps(copied) == frozenset(range(half, 2 * half))


def test_only_copied_products_get_the_path():
    """KFC's half is one unfold (nothing to share); the Hessian network's W' (W on the same
    legs, its square) is no copy."""
    assert split_copies(kfc_network(SPEC, 2)) is None
    assert split_copies(hessian_diagonal_input_network(SPEC, 2)) is None
    assert split_copies(batch_l2_network(SPEC, 2)) is not None


def test_a_repeated_sub_expression_is_priced_and_run_once():
    net = batch_l2_network(SPEC, 2)
    program = lower(net, ARGUMENTS, (2,))
    repeated = repeated_steps(program)
    assert repeated  # the copy's half
    schedule = build_schedule(program)
    runs = [s for s in program.path]
    assert len(schedule.steps) + len(schedule.prepare) <= len(runs) - len(repeated)
    assert price(program, shared=True).flops < price(program).flops


def _hadamard(a, b, summed, order=()):
    return reduce_runtime.bind(HadamardSum((0, 1), 2, summed, (), order), [])([a, b, None])


@pytest.mark.parametrize("chunk", [48, 200, 2 ** 21])
def test_hadamard_sums_in_blocks_and_rows(monkeypatch, chunk):
    monkeypatch.setattr(reduce_runtime, "CHUNK_BYTES", chunk)
    base, other = torch.randn(6, 2, 5, 3, dtype=torch.float64), torch.randn(6, 2, 5, 3,
                                                                            dtype=torch.float64)
    for perm in itertools.permutations(range(4)):
        a, b = base.permute(perm), other.permute(perm)
        for count in range(5):
            for summed in itertools.combinations(range(4), count):
                expected = (a * b).sum(summed) if summed else a * b
                assert_close(_hadamard(a, b, summed), expected)
                assert_close(_hadamard(a, a, summed), (a * a).sum(summed) if summed else a * a)
    flipped = other.permute(3, 2, 1, 0)
    assert_close(_hadamard(base, flipped, (0, 2), (3, 2, 1, 0)), (base * other).sum((0, 2)))


def test_hadamard_rule_takes_operands_on_the_same_legs():
    sizes = {"n": 2, "w": 3, "v": 4}
    same = Site((Operand(0, ("n", "w"), False), Operand(1, ("w", "n"), False)), ("n",), 2, sizes)
    step = hadamard_rule(same)
    assert step.summed == (1,) and step.other_order == (1, 0)
    other = Site((Operand(0, ("n", "w"), False), Operand(1, ("n", "v"), False)), ("n",), 2, sizes)
    assert hadamard_rule(other) is None


@pytest.mark.parametrize("channels, shift", [((3, 64), False), ((64, 64), True)])
def test_taps_kept_shift_gemm_only_where_it_pays(channels, shift, monkeypatch):
    """A 3-channel input under 64 output channels: laying the windows out once moves less
    than 9 thin products that each re-read the cotangent (the windows rule alone: with
    torch's kernels in the rules, both layers run as a weight-gradient kernel)."""
    from tnconv.lower.schedule import builder

    spec = tnconv.ConvSpec(*channels, 3, input_size=(32, 32), padding=1)
    program = tnconv.compile("batch_l2", spec, batch_size=2).program_for(2)
    kernel = [s.label() for s in builder.build_steps(program).steps]
    assert any("weight gradient kernel" in label for label in kernel)
    monkeypatch.setattr(builder, "RULES", tuple(r for r in builder.RULES
                                                 if r.__name__ != "conv_rule"))
    labels = [s.label() for s in builder.build_steps(program).steps]
    assert any("taps kept" in label for label in labels) is shift


@pytest.mark.parametrize("kernel, size, dilation, mode", [
    ((3, 3), (9, 8), (2, 1), "zeros"), ((5,), (17,), 3, "reflect"),
    ((2, 2, 2), (5, 4, 6), 1, "circular")])
@pytest.mark.parametrize("per_sample", [False, True])
def test_depthwise_taps_kept_are_one_grouped_correlation(kernel, size, dilation, mode,
                                                          per_sample, without_conv_kernels):
    """A depthwise weight VJP (per sample or summed) reads each row's taps by torch's
    grouped convolution of the data with the row's cotangent (dilation as its stride); the
    windows family alone (torch's weight-gradient kernel takes up to 3 x 3 taps)."""
    from tests.curvature_references import per_sample_gradients
    spec = tnconv.ConvSpec(6, 6, kernel, size, padding="same", dilation=dilation, groups=6,
                           padding_mode=mode)
    compiled = tnconv.compile("weight_vjp", spec, strategy="tn", per_sample=per_sample,
                              batch_size=3)
    assert any("taps kept" in s.label() for s in compiled.schedule().steps)
    x = torch.randn(3, 6, *size, dtype=torch.float64)
    v = torch.randn(3, 6, *spec.output_size, dtype=torch.float64)
    g = per_sample_gradients(spec, x, torch.randn(spec.weight_shape, dtype=torch.float64), v)
    assert_close(compiled(x, v), g if per_sample else g.sum(0))
