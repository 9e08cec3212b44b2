"""The schedule passes: each is idempotent, none changes a value, and the scale moves only
where it then scales the result exactly once."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

import tnconv
from tests.helpers import DEVICE, assert_close, rand, schedule_of
from tnconv.ir.constants import Scaled, register_constant
from tnconv.ir.views import Reshape, Slice, View
from tnconv.lower.schedule.builder import build_steps
import tnconv.lower.schedule.einsum as einsum_module
import tnconv.lower.schedule.passes as passes_module
from tnconv.lower.schedule.einsum import Einsum, SlicedSquares
from tnconv.lower.schedule.model import Argument, Constant, Schedule
from tnconv.lower.schedule.model import readers
from tnconv.lower.schedule.passes import (PASSES, fold_scale, merge_chains, multiplicity,
                                          run_passes, sum_arguments)
from tnconv.lower.schedule.product import Gram, MatrixChain, gram_rule, matrix_rule
from tnconv.lower.schedule.reduce import MaskedReduce, Reduce
from tnconv.lower.schedule.site import Operand, Site
from tnconv.runtime import bound

Spec = tnconv.ConvSpec

#: (operation, spec, options): every operation, 1d/2d/3d, groups, stride, dilation,
#: padding modes, transposed, scaled factors, pure views and masked sums.
CASES = [
    ("forward", Spec(4, 6, 3, input_size=(7, 6), padding=1), {}),
    ("forward", Spec(6, 6, (3, 2), input_size=(9, 8), stride=(2, 1), padding=(1, 0),
                     groups=3, padding_mode="reflect"), {}),
    ("forward", Spec(4, 4, 3, input_size=(10, 9), stride=2, padding=1, groups=4), {}),
    ("forward", Spec(4, 4, 3, input_size=(8, 9), padding="same", groups=4,
                     padding_mode="circular"), {}),
    ("forward", Spec(4, 2, (3, 2), input_size=(5, 4), stride=(2, 1), padding=(1, 0),
                     dilation=(1, 2), transposed=True), {}),
    ("forward", Spec(2, 4, (2, 3, 2), input_size=(5, 6, 4), dilation=(1, 2, 1), padding=1),
     {}),
    ("input_vjp", Spec(6, 4, 3, input_size=(9, 8), stride=2, padding=1, groups=2,
                       padding_mode="replicate"), {}),
    ("input_vjp", Spec(4, 4, 3, input_size=(8, 8), padding=1, groups=4), {}),
    ("input_vjp", Spec(1, 4, 5, input_size=(40,), stride=3, padding=2), {}),
    ("weight_vjp", Spec(6, 9, 3, input_size=(8, 7), padding=((1, 2), (0, 1)), groups=3), {}),
    ("weight_vjp", Spec(4, 4, (3, 2), input_size=(9, 8), padding=1, dilation=(2, 1),
                        groups=4), {"per_sample": True}),
    ("weight_vjp", Spec(3, 4, 2, input_size=(6, 5, 4), stride=2), {}),
    ("unfold", Spec(3, 3, (4, 2), input_size=(9, 7), stride=(2, 1), dilation=(1, 2)), {}),
    ("unfold", Spec(2, 2, 1, input_size=(5,)), {}),
    ("unfold", Spec(2, 2, 3, input_size=(6,), padding=1, padding_mode="circular"), {}),
    ("fold", Spec(2, 2, (3, 2), input_size=(7, 6), stride=2, padding=1), {}),
    ("kfc", Spec(4, 4, 3, input_size=(7, 7), padding=1, groups=2), {}),
    ("kfc", Spec(3, 3, 3, input_size=(8, 8), padding=1, groups=3), {"reduction": "batch"}),
    ("kfc", Spec(2, 4, 3, input_size=(9,), stride=2), {"structure": "diagonal"}),
    ("kfac_reduce", Spec(8, 8, 3, input_size=(9, 9), padding=2, dilation=2), {}),
    ("kfac_reduce", Spec(4, 4, (3, 2, 3), input_size=(5, 6, 7), padding=1), {}),
    ("kfac_reduce", Spec(6, 4, 1, input_size=(11, 10), stride=2), {}),
    ("kfac_reduce", Spec(6, 4, 1, input_size=(11, 11), stride=3), {}),
    ("kfac_reduce", Spec(3, 8, 4, input_size=(12, 8), stride=4), {}),
    ("kfac_reduce", Spec(4, 4, 3, input_size=(7, 6), groups=2, padding_mode="reflect",
                         padding=1), {"group_average": True}),
    ("patches", Spec(4, 4, 3, input_size=(6, 5), padding=1, groups=2), {}),
    ("averaged_patches", Spec(6, 4, 1, input_size=(11, 10), stride=2), {}),
    ("averaged_patches", Spec(3, 3, 2, input_size=(7,), dilation=2), {}),
    # without the rewrites: constants contracted once per bind (prepare steps)
    ("kfc", Spec(4, 6, 3, input_size=(7, 6), padding=1), {"rewrite": False}),
    ("kfac_reduce", Spec(4, 6, 3, input_size=(7, 6), padding=1), {"rewrite": False}),
    ("averaged_patches", Spec(2, 2, 3, input_size=(6, 5), stride=2), {"rewrite": False}),
    # sums of squares of an einsum (a GGN diagonal): sliced along the batch, or along the
    # columns of a sliced einsum (`square_in_slices`, under `_small_thresholds`)
    ("ggn_diagonal", Spec(4, 4, (1, 3), input_size=(5, 6), padding=(0, 1), groups=2),
     {"classes": 2}),
    ("ggn_diagonal", Spec(1, 32, 3, input_size=(12,)), {"classes": 3}),
]
IDS = [f"{op}-{n}" for n, (op, _, _) in enumerate(CASES)]


@pytest.fixture(autouse=True)
def _small_thresholds(monkeypatch):
    """The cases are small: the sizes from which slicing an einsum pays on real layers are
    lowered, so that the passes meet sliced einsums (caches emptied on both sides)."""
    monkeypatch.setattr(passes_module, "SQUARES_MIN_ELEMENTS", 1)
    monkeypatch.setattr(einsum_module, "SLICED_MIN_ELEMENTS", 1)
    tnconv.clear_caches()
    yield
    tnconv.clear_caches()


def _built(op: str, spec: Spec, options: dict, batch: int = 3):
    compiled = tnconv.compile(op, spec, strategy="tn", **options)
    shapes = compiled.operation.argument_shapes(spec, batch, **compiled.options)
    return build_steps(compiled.program_for(batch)), shapes


def _call(schedule: Schedule, arguments: list[torch.Tensor]) -> torch.Tensor:
    before = [a.clone() for a in arguments]
    result = bound(schedule, DEVICE, torch.float64)(*arguments)
    for argument, copy in zip(arguments, before):  # the arguments are never written
        assert torch.equal(argument, copy)
    return result


@pytest.mark.parametrize("op, spec, options", CASES, ids=IDS)
def test_every_pass_is_idempotent(op, spec, options):
    """On the schedule as the rules built it and as the pipeline hands it over."""
    built, _ = _built(op, spec, options)
    state = built
    for schedule_pass in PASSES:
        once = schedule_pass(built)
        assert schedule_pass(once) == once, schedule_pass.__name__
        state = schedule_pass(state)
        assert schedule_pass(state) == state, schedule_pass.__name__
    assert state == schedule_of(op, spec, 3, **options) == run_passes(state)


@pytest.mark.parametrize("op, spec, options", CASES, ids=IDS)
def test_no_subset_of_the_passes_changes_the_value(op, spec, options):
    """The built schedule run as it is, and after every subset of the passes (in their
    order), on contiguous and on strided arguments: one value."""
    built, shapes = _built(op, spec, options)
    arguments = [rand(*shape) for shape in shapes]
    strided = [a.transpose(0, -1).contiguous().transpose(0, -1) for a in arguments]
    expected = _call(built, arguments)
    distinct: dict[Schedule, list[str]] = {}  # equal schedules run once
    for size in range(1, len(PASSES) + 1):
        for subset in itertools.combinations(PASSES, size):
            schedule = built
            for schedule_pass in subset:
                schedule = schedule_pass(schedule)
            distinct.setdefault(schedule, [p.__name__ for p in subset])
    for schedule, names in distinct.items():
        for given in (arguments, strided):
            actual = _call(schedule, given)
            assert actual.shape == expected.shape and actual.is_contiguous(), names
            assert_close(actual, expected)


def test_every_pass_changes_some_schedule_of_the_cases():
    """The two tests above are not vacuous: each pass does something on some case."""
    built = [_built(op, spec, options)[0] for op, spec, options in CASES]
    # gather_arguments acts on selections, which only sampled operations hold, of window
    # starts (a channel draw is taken before the view as the schedule is built)
    built.append(_built("sampled_weight_vjp", CASES[0][1], dict(leg="spatial"))[0])
    for schedule_pass in PASSES:
        assert any(schedule_pass(b) != b for b in built), schedule_pass.__name__


# ------------------------------------------------------------------ readers, multiplicity
def test_readers_and_multiplicity_of_a_kfac_reduce_schedule():
    """The averaged input is computed once and read by both sides of the Gram product:
    two reads, and every factor of it enters the result twice."""
    spec = Spec(8, 8, 3, input_size=(20, 20), padding=2, dilation=2)
    schedule = schedule_of("kfac_reduce", spec, 3)
    chain, gram = schedule.steps
    (argument,) = schedule.arguments
    count, times = readers(schedule), multiplicity(schedule)
    assert count[chain.output] == 2 and count[argument.register] == 1
    assert times[schedule.result] == 1 and times[gram.output] == 1
    assert times[chain.output] == 2 and times[argument.register] == 2
    assert all(times[matrix] == 2 for matrix in chain.inputs[1:])


def test_merge_chains_joins_one_chain_per_dimension():
    spec = Spec(8, 8, (3, 2, 3), input_size=(6, 7, 9), padding=1, dilation=(1, 2, 1))
    built, _ = _built("kfac_reduce", spec, {})
    assert [type(s) for s in built.steps] == [MatrixChain] * 3 + [Gram]
    merged = merge_chains(built)
    assert [type(s) for s in merged.steps] == [MatrixChain, Gram]
    chain, gram = merged.steps
    assert len(chain.matrices) == 3 and gram.inputs == (chain.output,)


def test_sum_arguments_sums_before_the_merge_or_as_a_masked_product():
    patch = Spec(4, 8, 4, input_size=(12, 8), stride=4, groups=2)
    built, _ = _built("averaged_patches", patch, {})
    assert isinstance(built.arguments[0].view.steps[-1], Reshape)
    moved = sum_arguments(built)
    assert not isinstance(moved.arguments[0].view.steps[-1], Reshape)
    assert isinstance(moved.steps[0], Reduce) and moved.steps[0].kept_shape
    pointwise = Spec(6, 4, 1, input_size=(11, 10), stride=2)
    built, _ = _built("kfac_reduce", pointwise, {})
    masked = sum_arguments(built)
    assert isinstance(masked.steps[0], MaskedReduce) and masked.arguments[0].view is None
    assert len(masked.constants) == len(built.constants) + 1  # the counts


# ------------------------------------------------------------------ where the scale goes
@dataclass(frozen=True)
class Ramp:
    """A dense test constant: 1 + offset + 0.1 · (0, 1, 2, …), in `shape`."""

    shape: tuple[int, ...]
    offset: float = 0.0

    def to_numpy(self) -> np.ndarray:
        size = int(np.prod(self.shape))
        return (1 + self.offset + 0.1 * np.arange(size, dtype=np.float64)).reshape(self.shape)


register_constant(Ramp, Ramp.to_numpy)


def _ramp(shape, offset: float = 0.0) -> torch.Tensor:
    return torch.as_tensor(Ramp(shape, offset).to_numpy(), device=DEVICE)


def _schedule(argument_shape, constants, steps, result, result_shape, shapes, scale,
              prepare=()) -> Schedule:
    return Schedule((Argument(0, 0, argument_shape),),
                    tuple(Constant(r, v, v.shape) for r, v in constants), tuple(prepare),
                    tuple(steps), result, result_shape, tuple(shapes), scale=scale)


def _value(schedule: Schedule, x: torch.Tensor) -> torch.Tensor:
    return bound(schedule, DEVICE, torch.float64)(x)


def _scaled_registers(schedule: Schedule) -> set[int]:
    return {c.register for c in schedule.constants if isinstance(c.value, Scaled)}


def test_the_scale_goes_on_a_constant_read_once_never_on_a_shared_one():
    """c1 enters the result twice (read by two steps), c2 once: only c2 may carry it."""
    p, q = Ramp((2, 3)), Ramp((2, 3), 0.5)
    steps = (Einsum((0, 1), 3, "ab,ab->ab"), Einsum((3, 1), 4, "ab,ab->ab"),
             Einsum((4, 2), 5, "ab,ab->ab"))
    built = _schedule((2, 3), ((1, p), (2, q)), steps, 5, (2, 3), [(2, 3)] * 6, 3.0)
    assert multiplicity(built)[1] == 2 and multiplicity(built)[2] == 1
    folded = fold_scale(built)
    assert folded.scale == 1 and _scaled_registers(folded) == {2}
    x = rand(2, 3)
    assert_close(_value(folded, x), 3.0 * _value(built, x) / built.scale)


@pytest.mark.parametrize("argument_shape, equation, scaled_argument", [
    ((2, 3), "ab,ab->ab", None),  # the result is no larger than the argument: as it is
    ((2,), "a,ab->ab", 0),  # a smaller argument read once carries it
])
def test_a_scale_with_only_shared_constants_stays_off_them(argument_shape, equation,
                                                             scaled_argument):
    p = Ramp((2, 3))
    steps = (Einsum((0, 1), 2, equation), Einsum((2, 1), 3, "ab,ab->ab"))
    built = _schedule(argument_shape, ((1, p),), steps, 3, (2, 3),
                      [argument_shape, (2, 3), (2, 3), (2, 3)], 3.0)
    folded = fold_scale(built)
    assert _scaled_registers(folded) == set() and folded.prepare == ()
    assert folded.scaled_argument == scaled_argument
    x = rand(*argument_shape)
    unscaled = replace(built, scale=1.0)
    assert_close(_value(folded, x), 3.0 * _value(unscaled, x))


def test_the_scale_goes_on_a_result_of_constants_as_a_copy():
    """A prepare step's result read once per call carries the scale (a scaled copy made
    once per bind); its inputs, read by the prepare step only, stay as they are."""
    p, q = Ramp((2, 3)), Ramp((3, 4), 0.5)
    prepare = (Einsum((1, 2), 3, "ab,bc->ac"),)
    steps = (Einsum((0, 3), 4, "a,bc->abc"),)
    built = _schedule((2,), ((1, p), (2, q)), steps, 4, (2, 2, 4),
                      [(2,), (2, 3), (3, 4), (2, 4), (2, 2, 4)], 3.0, prepare)
    folded = fold_scale(built)
    assert folded.scale == 1 and _scaled_registers(folded) == set()
    (copy,) = folded.prepare[1:]
    assert isinstance(copy, Reduce) and copy.inputs == (3,) and copy.scale == 3.0
    assert folded.steps[0].inputs == (0, copy.output)
    x = rand(2)
    assert_close(_value(folded, x), 3.0 * _value(replace(built, scale=1.0), x))


def _gram_after_a_sum(scale: float, dead_reader: bool) -> Schedule:
    """a0 [2, 3, 4] -> t1 = Σ over the last leg -> t2 = t1 t1ᵀ (+ a step that also reads
    t1 but feeds nothing)."""
    steps = [Reduce((0,), 1, (2,), ())]
    if dead_reader:
        steps.append(Reduce((1,), 3, (), (1, 0)))
    steps.append(Gram((1,), 2, (0, 1), (1, 2, 3), (2, 2), ()))
    shapes = [(2, 3, 4), (2, 3), (2, 2)] + ([(3, 2)] if dead_reader else [])
    return Schedule((Argument(0, 0, (2, 3, 4)),), (), (), tuple(steps), 2, (2, 2),
                    tuple(shapes), scale=scale)


def test_a_gram_product_takes_the_root_of_the_scale_on_a_sum_it_alone_reads():
    built = _gram_after_a_sum(4.0, dead_reader=False)
    folded = fold_scale(built)
    first, gram = folded.steps
    assert first.scale == 2.0 and gram.alpha == 1 and folded.scale == 1
    x = rand(2, 3, 4)
    u = x.sum(2)
    assert_close(_value(folded, x), 4.0 * u @ u.T)


@pytest.mark.parametrize("scale, dead_reader", [(4.0, True), (-4.0, False)])
def test_a_gram_product_takes_the_scale_as_alpha_where_its_source_is_shared(scale,
                                                                         dead_reader):
    """A source read by another step too (its √scale would leak there), or a negative
    scale (no real root): the Gram product's alpha carries the scale."""
    folded = fold_scale(_gram_after_a_sum(scale, dead_reader))
    assert all(s.scale == 1 for s in folded.steps if isinstance(s, Reduce))
    assert folded.steps[-1].alpha == scale and folded.scale == 1
    x = rand(2, 3, 4)
    u = x.sum(2)
    assert_close(_value(folded, x), scale * u @ u.T)


def _gram_after_two_chains(scale: float) -> Schedule:
    """a0 [n, i] -> t2 = c1 on i (k) -> t3 = c1 again, on k (j) -> t4 = t3ᵀ t3: the one
    constant enters both chains, so it enters the result four times."""
    sizes = dict(n=2, i=3, k=3, j=3)
    first = matrix_rule(Site((Operand(0, ("n", "i"), False), Operand(1, ("k", "i"), True)),
                             ("n", "k"), 2, sizes))
    second = matrix_rule(Site((Operand(2, ("n", "k"), False), Operand(1, ("j", "k"), True)),
                              ("n", "j"), 3, sizes))
    gram = gram_rule(Site((Operand(3, ("n", "j"), False, signature="t3"),
                           Operand(3, ("n", "J"), False, signature="t3")), ("j", "J"), 4,
                          dict(sizes, J=3)))
    return _schedule((2, 3), ((1, Ramp((3, 3))),), (first, second, gram), 4, (3, 3),
                     [(2, 3), (3, 3), (2, 3), (2, 3), (3, 3)], scale)


def test_a_gram_product_after_a_chain_leaves_a_shared_matrix_alone():
    """The chain feeding the Gram reads a matrix that another step reads too: its √scale
    would reach the result more than twice, so the Gram's alpha carries the scale."""
    built = _gram_after_two_chains(4.0)
    assert readers(built)[1] == 2 and multiplicity(built)[1] == 4
    folded = fold_scale(built)
    assert _scaled_registers(folded) == set() and folded.prepare == ()
    assert folded.steps[-1].alpha == 4.0 and folded.scale == 1
    x = rand(2, 3)
    assert_close(_value(folded, x), 4.0 * _value(replace(built, scale=1.0), x))


# ------------------------------------------------------------------ shared registers
def test_chains_whose_middle_result_is_read_elsewhere_stay_apart():
    """t2 = c1 on a0's leg i, t3 = c2 on t2's leg n, and t4 reads both t2 and t3: merging
    the chains would leave t2 unwritten."""
    sizes = dict(n=2, i=3, k=4, m=3)
    first = matrix_rule(Site((Operand(0, ("n", "i"), False), Operand(1, ("k", "i"), True)),
                             ("n", "k"), 3, sizes))
    second = matrix_rule(Site((Operand(3, ("n", "k"), False), Operand(2, ("m", "n"), True)),
                              ("m", "k"), 4, sizes))
    assert first.then(second) is not None  # they would merge if t2 were read once
    both = Einsum((3, 4), 5, "ab,cb->acb")
    built = _schedule((2, 3), ((1, Ramp((4, 3))), (2, Ramp((3, 2), 0.5))),
                      (first, second, both), 5, (2, 3, 4),
                      [(2, 3), (4, 3), (3, 2), (2, 4), (3, 4), (2, 3, 4)], 1.0)
    assert merge_chains(built) == built
    x = rand(2, 3)
    t2 = x @ _ramp((4, 3)).T
    t3 = _ramp((3, 2), 0.5) @ t2
    assert_close(_value(built, x), torch.einsum("ab,cb->acb", t2, t3))


@pytest.mark.parametrize("view", [
    View((2, 3, 12), (Slice(2, 0, 12, 2),)),  # a strided selection (a masked sum alone)
    View((2, 3, 4, 3), (Slice(3, 0, 3, 2), Reshape((2, 3, 8)))),  # a merge (summed before)
])
def test_a_sum_of_an_argument_read_elsewhere_keeps_the_view(view):
    """a0 is summed by t1 and read again by t2: moving the sum into a0's view would change
    what t2 reads."""
    shape = view.shape
    steps = (Reduce((0,), 1, (2,), ()), Einsum((0, 1), 2, "abc,ab->abc"))
    built = Schedule((Argument(0, 0, shape, view),), (), (), steps, 2, shape,
                     (shape, shape[:2], shape))
    assert sum_arguments(replace(built, steps=steps[:1], result=1)) != \
        replace(built, steps=steps[:1], result=1)  # read once, it would move
    assert sum_arguments(built) == built
    x = rand(*view.base_shape)
    windows = view.apply_torch(x)
    assert_close(_value(built, x), windows * windows.sum(2, keepdim=True))


def test_squares_of_an_einsum_are_summed_one_slice_at_a_time():
    """A GGN diagonal's einsum and the sum of its squares become one sliced step: along the
    batch (each slice reads a share of both operands), or along a sliced einsum's columns
    (the other operand laid out once); the product is never made whole."""
    sliced = []
    for op, spec, options in CASES[-2:]:
        built, _ = _built(op, spec, options)
        assert [type(s).__name__ for s in built.steps][-1] == "HadamardSum"
        (step,) = run_passes(built).steps
        assert isinstance(step, SlicedSquares)
        sliced.append(step)
    batch, columns = sliced
    assert batch.slices == 3 and not batch.layout and -1 not in batch.dims
    assert columns.slices == 3 and columns.layout and columns.dims == (-1, 0)
