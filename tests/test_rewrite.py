"""The rewrite driver, the cost model, the compiler hook and explain(), and the cases the
rules exist for (ViT patches, 1×1 stride 2 on 7×7, full-extent kernels, 'same' 4×4, mixed
cases, 16,000-sample audio without a dense K×O×I pattern)."""

from __future__ import annotations

from math import prod

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tests.helpers import DEVICE, assert_close, rand
from tests.references import conv_nd, unfold_nd
from tests.rewrite_helpers import case, reference, same_value, value
from tests.strategies import conv_params
from tnconv.lower import network_cost
from tnconv.ops import OPERATIONS
from tnconv.rewrite.driver import DEFAULT_RULES, EXPORT_RULES, SELECTION, RuleSet, rewrite

C = dict(in_channels=3, out_channels=4)


def _rules(spec: dict, op: str = "forward") -> list[str]:
    net, _, _ = case(op, batch=2, **{**C, **spec})
    return [s.rule for s in rewrite(net).steps]  # channels matter: they weigh FLOPs vs bytes


@pytest.mark.parametrize("spec, expected", [
    (dict(kernel_size=16, stride=16, input_size=(224, 224)), ["non_overlapping_patches"] * 2),
    (dict(kernel_size=1, stride=2, input_size=(7, 7)), ["one_by_one_kernel"] * 2),
    (dict(kernel_size=(5, 4), stride=2, input_size=(5, 4)), ["full_extent_kernel"] * 2),
    (dict(kernel_size=4, padding="same", input_size=(24, 24), in_channels=4, out_channels=64),
     ["selection_lowering"] * 2),
    (dict(kernel_size=(2, 3), stride=(2, 1), padding=(0, 1), input_size=(16, 16)),
     ["non_overlapping_patches", "selection_lowering"]),
    (dict(kernel_size=(2, 3), stride=(4, 1), padding=(0, 1), input_size=(64, 9)),
     ["selection_lowering", "selection_lowering"]),
])
def test_rules_fire_on_real_cases(spec, expected):
    fired = [r for r in _rules(spec) if r not in ("squeeze_size_one", "merge_parallel_legs")]
    assert fired == expected


@pytest.mark.parametrize("op", ["forward", "unfold"])
@pytest.mark.parametrize("spec", [
    dict(kernel_size=16, stride=16, input_size=(32, 48)),
    dict(kernel_size=1, stride=2, input_size=(7, 7)),
    dict(kernel_size=(5, 4), stride=(3, 1), input_size=(5, 4)),
    dict(kernel_size=4, padding="same", input_size=(7, 6)),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=(0, 1), input_size=(9, 8)),
    dict(kernel_size=(3, 2), stride=(5, 2), padding=((1, 0), (0, 1)), input_size=(17, 7),
         padding_mode="replicate"),
])
def test_compiled_rewrite_matches_reference_and_unrewritten(op, spec, device):
    conv = tnconv.ConvSpec(**C, **spec)
    on = tnconv.compile(op, conv, strategy="tn")
    off = tnconv.compile(op, conv, strategy="tn", rewrite=False)
    args = [rand(2, 3, *conv.input_size)] + ([rand(*conv.weight_shape)] if op == "forward" else [])
    expected = reference(op, conv, args)
    assert_close(on(*args), expected)
    assert_close(off(*args), expected)
    assert on.network(2) != off.network(2)


def assert_steps_pay_off(steps) -> None:
    """A step may cost more only inside a look-ahead chain that ends no costlier than it began."""
    for i, step in enumerate(steps):
        if not step.after.not_worse_than(step.before):
            assert any(later.after.not_worse_than(step.before) for later in steps[i + 1:]), (
                f"step {i} ({step.rule}) raised the cost and nothing later paid it back")


@given(conv_params(ndims=(1, 2)), st.sampled_from(["forward", "unfold"]))
def test_rewrite_is_exact_cheaper_and_a_fixed_point(params, op):
    """Any spec: same value as the reference, no costlier result, rewriting again does nothing."""
    shape = params.pop("input_shape")
    params.pop("ndim")
    conv = tnconv.ConvSpec(input_size=shape[2:], **params)
    net, _, _ = case(op, batch=shape[0], input_size=shape[2:], **params)
    x, w = rand(*shape), rand(*conv.weight_shape)
    args = [x, w] if op == "forward" else [x]
    result = rewrite(net)
    assert_steps_pay_off(result.steps)
    assert network_cost(result.network).not_worse_than(network_cost(net))
    assert rewrite(result.network).steps == ()
    expected = reference(op, conv, args).reshape(-1)
    assert_close(value(result.network, op, args).reshape(-1), expected)


@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_every_registered_operation_keeps_its_value(op):
    """Rules are written against the IR, so VJPs, JVPs, fold, transposed and KFAC networks
    rewrite too (and stay exact)."""
    for spec in (dict(kernel_size=3, stride=2, padding=1, input_size=(9, 8)),
                 dict(kernel_size=2, stride=2, input_size=(8, 6), groups=1),
                 dict(kernel_size=1, stride=2, input_size=(7,)),
                 dict(kernel_size=3, stride=2, input_size=(4, 5), transposed=True)):
        net, _, args = case(op, batch=3, **C, **spec)
        result = rewrite(net)
        assert rewrite(result.network).steps == ()
        same_value(net, result.network, op, args)


def _dense_patterns(program) -> list:
    return [op for op in program.operands if op.role == "pattern" and len(op.shape) == 3]


AUDIO = dict(in_channels=1, out_channels=4, kernel_size=10, stride=5, input_size=(16000,))


@pytest.mark.parametrize("op", ["forward", "unfold", "kfac_reduce"])
def test_long_audio_uses_no_dense_pattern(op):
    spec = tnconv.ConvSpec(**AUDIO)
    compiled = tnconv.compile(op, spec, strategy="tn")
    program = compiled.program_for(2)
    assert not _dense_patterns(program)
    assert max(prod(o.shape) for o in program.operands) < 10 ** 6
    unrewritten = tnconv.compile(op, spec, strategy="tn", rewrite=False).program_for(2)
    assert {o.shape for o in _dense_patterns(unrewritten)} == {(10, 3199, 16000)}
    if op in ("forward", "unfold"):
        x, w = rand(2, 1, 16000), rand(4, 1, 10)
        args = (x, w) if op == "forward" else (x,)
        expected = (conv_nd(x, w, (5,), ((0, 0),), (1,), 1) if op == "forward"
                    else unfold_nd(x, (10,), (5,), ((0, 0),), (1,)))
        assert_close(compiled(*args), expected)


def test_rewrite_false_gives_the_builders_network_and_program():
    spec = tnconv.ConvSpec(**C, kernel_size=3, padding=1, input_size=(6, 6))
    off = tnconv.compile("forward", spec, rewrite=False)
    assert off.network() == off.input_network()
    assert all(op.view is None for op in off.program.operands)
    on = tnconv.compile("forward", spec)
    assert on.input_network() == off.input_network() and on.network() != off.network()
    assert any(op.view is not None for op in on.program.operands)


def test_export_program_has_no_views_and_the_same_value(device):
    spec = tnconv.ConvSpec(**C, kernel_size=2, stride=2, input_size=(6, 5), groups=1)
    compiled = tnconv.compile("forward", spec, strategy="tn", batch_size=2)
    program = compiled.export_program()
    assert all(op.view is None for op in program.operands)
    from tnconv.runtime import runner

    x, w = rand(2, 3, 6, 5), rand(4, 3, 2, 2)
    assert_close(runner(program, DEVICE, torch.float64)(x, w), compiled(x, w))


def test_explain_lists_the_rules_with_costs():
    spec = tnconv.ConvSpec(**C, kernel_size=16, stride=16, input_size=(32, 32))
    text = tnconv.compile("unfold", spec).explain()
    assert "rewrites (" in text and "non_overlapping_patches" in text and "->" in text
    assert "cost" in text and "flops" in text
    assert "rewrites: off" in tnconv.compile("unfold", spec, rewrite=False).explain()


def test_driver_records_steps_and_accepts_rule_lists():
    net, _, _ = case("forward", batch=1, **C, kernel_size=3, padding=1, input_size=(8,))
    result = rewrite(net, rules=[*SELECTION.rules])
    [step] = [s for s in result.steps if s.rule == "selection_lowering"]
    assert "Π1" in step.tensors and "i1" in step.indices and "c_in" not in step.indices
    assert step.after.total < step.before.total
    assert result.original == net and "selection_lowering" in result.describe()
    assert rewrite(net, rules=RuleSet("none", ())).steps == ()
    assert len(DEFAULT_RULES) == 3 and len(EXPORT_RULES) == 2


def test_driver_refuses_a_costlier_rewrite():
    net, _, _ = case("forward", batch=1, **C, kernel_size=3, input_size=(8,))

    def costly(candidate):  # a "rewrite" that makes the batch five times larger
        return None if candidate.size("n") > 1 else candidate.replace(
            sizes=tuple((i, s * 5 if i == "n" else s) for i, s in candidate.sizes))

    assert costly(net) is not None
    assert rewrite(net, rules=[costly]).steps == ()


@pytest.mark.parametrize("op", ["unfold", "forward"])
def test_result_never_aliases_the_callers_tensor(op):
    """A rewrite may turn the whole operation into a view of the input: the result is still
    a fresh tensor, as torch's unfold returns."""
    spec = tnconv.ConvSpec(2, 2, kernel_size=1, input_size=(4, 4))
    x = rand(1, 2, 4, 4)
    args = (x, rand(2, 2, 1, 1)) if op == "forward" else (x,)
    y = tnconv.compile(op, spec, strategy="tn")(*args)
    assert y.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    before = y.clone()
    x.add_(1.0)
    assert torch.equal(y, before)


def test_lookahead_lowers_every_dimension_when_only_the_chain_pays():
    """3d, 3 channels: lowering one dimension alone costs more; all three together pay."""
    spec = tnconv.ConvSpec(3, 3, kernel_size=3, input_size=(8, 16, 16), padding=1)
    result = tnconv.compile("unfold", spec, strategy="tn", batch_size=2).rewrite_result()
    assert [t.role for t in result.network.tensors] == ["input"]
    assert [s.rule for s in result.steps].count("selection_lowering") == 3
    assert_steps_pay_off(result.steps)
    x = rand(2, 3, 8, 16, 16)
    assert_close(tnconv.unfold(x, 3, padding=1, strategy="tn"),
                 reference("unfold", spec, [x]))


def test_huge_dense_scatter_pattern_is_avoided():
    """The input VJP of a 16,000-sample 1d conv: the dense pattern would be 10×3199×16000."""
    spec = tnconv.ConvSpec(1, 8, kernel_size=10, stride=5, input_size=(16000,))
    compiled = tnconv.compile("input_vjp", spec, strategy="tn", batch_size=2)
    program = compiled.program
    assert all(prod(op.shape) < 2 ** 24 for op in program.dense_constants)
    assert [f >= 0 for f in program.folds].count(True) == 1  # applied as a scatter-add
    w, dy = rand(8, 1, 10), rand(2, 8, 3199)
    expected = torch.nn.grad.conv1d_input((2, 1, 16000), w, dy, stride=5)
    assert_close(compiled(w, dy), expected)
