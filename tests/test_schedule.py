"""The `Schedule` as a value: hashable and equal for equal programs, described step by
step, reached through the public entry points; pure views and aliasing results."""

from __future__ import annotations

import pytest
import torch

import tnconv
from tests.helpers import DEVICE, assert_close, rand, run_step, schedule_of
from tests.references import unfold_nd
from tnconv.ir.network import Network, Tensor
from tnconv.lower import build_schedule as schedule, lower
from tnconv.lower.program import lower_program
from tnconv.lower.schedule import build_steps, run_passes
from tnconv.lower.schedule.einsum import Einsum, einsum_rule
from tnconv.lower.schedule.model import Schedule, register_name
from tnconv.lower.schedule.site import Operand, Site
from tnconv.runtime import bound, runner

Spec = tnconv.ConvSpec

#: Schedules with steps of every family (and a constant-only prepare step or two).
EXAMPLES = [
    ("forward", Spec(4, 6, 3, input_size=(7, 6), padding=1), {}),
    ("forward", Spec(8, 8, 3, input_size=(9, 9), padding=1, groups=8), {}),
    ("forward", Spec(8, 8, 3, input_size=(9, 9), stride=2, padding=1, groups=8), {}),
    ("forward", Spec(6, 9, 3, input_size=(8, 7), padding=1, groups=3), {}),
    ("forward", Spec(16, 2, (4, 3), input_size=(6, 5), stride=(2, 3), transposed=True), {}),
    ("weight_vjp", Spec(6, 6, 3, input_size=(8, 7), padding=1, groups=6), {}),
    ("weight_vjp", Spec(6, 6, 3, input_size=(9, 9), stride=2, padding=1, groups=6), {}),
    ("input_vjp", Spec(1, 16, 10, input_size=(400,), stride=5, padding=3), {}),
    ("kfc", Spec(3, 3, 3, input_size=(8, 8), padding=1, groups=3), {}),
    ("kfac_reduce", Spec(8, 8, (3, 2, 3), input_size=(6, 7, 9), padding=1), {}),
    ("kfac_reduce", Spec(6, 4, 1, input_size=(11, 10), stride=2), {}),
    ("unfold", Spec(3, 3, (4, 2), input_size=(9, 7), stride=(2, 1)), {}),
    ("fold", Spec(2, 2, 3, input_size=(8, 7), stride=2, padding=1), {}),
    ("patches", Spec(4, 4, 3, input_size=(6, 5), padding=1, groups=2), {}),
    ("kfc", Spec(4, 6, 3, input_size=(7, 6), padding=1), {"rewrite": False}),
    ("kfac_reduce", Spec(4, 6, 3, input_size=(7, 6), padding=1), {"rewrite": False}),
    ("weight_vjp", Spec(8, 16, 3, input_size=(9, 10), padding=1), {"per_sample": True}),
]
IDS = [f"{op}-{n}" for n, (op, _, _) in enumerate(EXAMPLES)]


def _program(op: str, spec: Spec, options: dict, batch: int = 2):
    return tnconv.compile(op, spec, strategy="tn", **options).program_for(batch)


def test_the_examples_cover_every_family_and_prepare_steps():
    schedules = [schedule_of(op, spec, 2, **options) for op, spec, options in EXAMPLES]
    families = {family for s in schedules for family in s.families}
    assert families == {"einsum", "reduce", "product", "windows", "scatter", "select", "conv"}
    assert any(s.prepare for s in schedules)


@pytest.mark.parametrize("op, spec, options", EXAMPLES, ids=IDS)
def test_schedules_of_equal_programs_are_equal_and_hash_alike(op, spec, options):
    """Programs lowered twice from the same network (no cache in between) are equal, and so
    are their schedules, built afresh each time: one key in a dict or set."""
    compiled = tnconv.compile(op, spec, strategy="tn", **options)
    result_shape = compiled.program_for(2).result_shape
    first, second = (lower(compiled.network(2), compiled.operation.arguments, result_shape)
                     for _ in range(2))
    assert first == second and first is not second
    one, other = run_passes(build_steps(first)), run_passes(build_steps(second))
    assert one == other and hash(one) == hash(other) and one is not other
    assert len({one, other}) == 1 and {one: "x"}[other] == "x"
    assert build_steps(first) == build_steps(second)
    assert one == schedule(compiled.program_for(2)) == compiled.schedule(2)


def test_schedules_of_different_programs_differ():
    spec = Spec(4, 6, 3, input_size=(7, 6), padding=1)
    batches = {schedule_of("forward", spec, batch) for batch in (1, 2, 3)}
    operations = {schedule_of(op, spec, 2) for op in ("forward", "unfold", "kfc")}
    assert len(batches) == 3 and len(operations) == 3


@pytest.mark.parametrize("op, spec, options", EXAMPLES, ids=IDS)
def test_describe_names_every_register_and_step(op, spec, options):
    s = schedule_of(op, spec, 2, **options)
    lines = s.describe().splitlines()
    assert len(lines) == len(s.arguments) + len(s.constants) + len(s.prepare) + len(s.steps) + 1
    steps = [line for line in lines if "=" in line and " argument " not in line
             and " constant " not in line]
    for step, line in zip(s.prepare + s.steps, steps):
        assert line.startswith(f"{register_name(s, step.output)} = ")
        assert step.label() in line
        assert all(register_name(s, r) in line.split(" (")[-1] for r in step.inputs)
    assert lines[-1].startswith(f"result {register_name(s, s.result)} -> {s.result_shape}")
    assert s.families == tuple(step.family for step in s.steps)


def test_register_names_tell_arguments_constants_and_results_apart():
    s = schedule_of("kfac_reduce", Spec(8, 8, 3, input_size=(9, 9), padding=1), 2)
    assert [register_name(s, a.register)[0] for a in s.arguments] == ["a"]
    assert {register_name(s, c.register)[0] for c in s.constants} == {"c"}
    assert {register_name(s, step.output)[0] for step in s.steps} == {"t"}
    assert s.registers == len(s.shapes) and s.registers > max(step.output for step in s.steps)


def test_the_public_entry_points_agree():
    """compile(...).schedule, lower.schedule and runtime.runner: one schedule, one value."""
    spec = Spec(4, 6, 3, input_size=(7, 6), padding=1, groups=2)
    compiled = tnconv.compile("forward", spec, strategy="tn")
    program = compiled.program_for(3)
    assert compiled.schedule(3) == schedule(program)
    run = runner(program, DEVICE, torch.float64)
    assert run.schedule == schedule(program)
    x, w = rand(3, 4, 7, 6), rand(6, 2, 3, 3)
    expected = torch.nn.functional.conv2d(x, w, padding=1, groups=2)
    assert_close(run(x, w), expected)
    assert_close(compiled(x, w), expected)


# ------------------------------------------------------------------ views and aliasing
def test_a_pure_view_runs_as_one_strided_copy():
    """An unpadded unfold is a strided view of x: exact for an input with a storage offset,
    a non-contiguous input and a 1×1 kernel (whose view is x itself: the result must
    still be a new tensor)."""
    spec = Spec(3, 3, kernel_size=(4, 2), input_size=(9, 7), stride=(2, 1), dilation=(1, 2))
    s = schedule_of("unfold", spec, 2)
    assert s.view_result is not None and s.may_alias
    run = bound(s, DEVICE, torch.float64)
    base = rand(3, 3, 9, 7)
    for x in (base[1:], base[1:].transpose(2, 3).contiguous().transpose(2, 3)):
        assert_close(run(x), unfold_nd(x, (4, 2), (2, 1), [(0, 0), (0, 0)], (1, 2)))
    pointwise = schedule_of("unfold", Spec(3, 3, kernel_size=1, input_size=(5,)), 2)
    assert pointwise.view_result is not None
    x = rand(2, 3, 5)
    result = bound(pointwise, DEVICE, torch.float64)(x)
    assert_close(result, x)
    result.zero_()
    assert x.abs().sum() > 0


def test_a_pure_view_differentiates_through_its_steps():
    spec = Spec(2, 2, kernel_size=3, input_size=(5, 6), stride=2)
    s = schedule_of("unfold", spec, 2)
    assert s.view_result is not None
    x = rand(2, 2, 5, 6).requires_grad_(True)
    g = rand(2, 18, 4)
    (actual,) = torch.autograd.grad((bound(s, DEVICE, torch.float64)(x) * g).sum(), x)
    (expected,) = torch.autograd.grad((torch.nn.functional.unfold(x, 3, stride=2) * g).sum(), x)
    assert_close(actual, expected)


@pytest.mark.parametrize("padding, mode", [(1, "zeros"), (1, "circular")])
def test_a_padded_view_keeps_the_step_by_step_schedule(padding, mode):
    spec = Spec(2, 2, kernel_size=3, input_size=(6,), padding=padding, padding_mode=mode)
    s = schedule_of("unfold", spec, 1)
    assert s.view_result is None
    x = rand(1, 2, 6)
    assert_close(bound(s, DEVICE, torch.float64)(x),
                 unfold_nd(x, (3,), (1,), [(1, 1)], (1,), mode))


def _permutation(scale: float) -> Schedule:
    net = Network(tensors=(Tensor("X", ("n", "i"), "input"),), sizes=(("n", 2), ("i", 3)),
                  output=("i", "n"), scale=scale)
    return schedule(lower(net, ("input",), (3, 2)))


def test_a_scaled_permutation_never_writes_into_the_argument():
    s = _permutation(2.0)
    assert s.may_alias and s.view_result is None and s.scale == 2.0
    x = rand(2, 3)
    before = x.clone()
    assert_close(bound(s, DEVICE, torch.float64)(x), 2 * before.T)
    assert torch.equal(x, before)


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_an_unscaled_permutation_is_a_view_copied_out():
    """Contiguous: one strided copy; a transposed argument (whose permutation is already
    contiguous) or one autograd records: the permutation's view, copied out."""
    s = _permutation(1.0)
    assert s.view_result == ((3, 2), (1, 3), 0) and s.may_alias
    run = bound(s, DEVICE, torch.float64)
    for x in (rand(2, 3), rand(3, 2).T, rand(2, 3).requires_grad_(True)):
        result = run(x)
        assert_close(result, x.T)
        assert result.is_contiguous() and not _shares_storage(result, x)


def test_a_pointwise_unfold_that_autograd_records_is_still_a_new_tensor():
    s = schedule_of("unfold", Spec(3, 3, kernel_size=1, input_size=(5,)), 2)
    x = rand(2, 3, 5).requires_grad_(True)
    result = bound(s, DEVICE, torch.float64)(x)
    assert_close(result, x)
    assert not _shares_storage(result, x)


@pytest.mark.parametrize("stride, padding, dilation", [(2, 0, 1), (1, 1, 2), ((2, 1), 0, (1, 2))])
def test_unfold_and_fold_match_torch_end_to_end(stride, padding, dilation):
    """The pure view (unpadded) and the step-by-step schedule (padded) through the public
    functionals, and their adjoint fold."""
    x = rand(2, 3, 9, 8)
    expected = torch.nn.functional.unfold(x, (3, 2), dilation, padding, stride)
    actual = tnconv.unfold(x, (3, 2), stride=stride, padding=padding, dilation=dilation,
                           strategy="tn")
    assert_close(actual, expected)
    cols = rand(*expected.shape)
    assert_close(tnconv.fold(cols, (9, 8), (3, 2), dilation=dilation, padding=padding,
                             stride=stride, strategy="tn"),
                 torch.nn.functional.fold(cols, (9, 8), (3, 2), dilation, padding, stride))


@pytest.mark.parametrize("legs, out", [
    ((("a", "b"), ("b", "c")), ("c", "a")),
    ((("a", "b", "b"), ("b", "c")), ("a", "c")),  # a diagonal
    ((("a", "b"), ("b", "c"), ("c", "a", "d")), ("d",)),  # three operands
])
def test_the_einsum_fallback_runs_any_contraction(legs, out):
    sizes = dict(a=2, b=3, c=4, d=2)
    site = Site(tuple(Operand(n, l, False) for n, l in enumerate(legs)), out, len(legs), sizes)
    step = einsum_rule(site)
    assert isinstance(step, Einsum) and step.inputs == tuple(range(len(legs)))
    operands = [rand(*site.shape(l)) for l in legs]
    expected = torch.einsum(",".join("".join(l) for l in legs) + "->" + "".join(out), *operands)
    assert_close(run_step(step, *operands), expected)
