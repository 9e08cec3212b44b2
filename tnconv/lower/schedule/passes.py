"""Passes over a built schedule, each a named function `Schedule -> Schedule`, run in order.

- `merge_chains`: consecutive matrix chains on one tensor become one chain;
- `sum_arguments`: a sum of an argument's view reads the view before its merging
  reshapes, and a strided selection's sum becomes one product with counts;
- `fold_scale`: the program's scale moves where it costs nothing per call (a constant,
  a product's alpha, a sum), and only where it then scales the result exactly once;
- `gather_arguments` (`tnconv.lower.schedule.gather_views`): a selection gathering alone
  from an argument's view takes its rows inside the view, before the windows;
- `conv_arguments` (`tnconv.lower.schedule.conv_views`): torch's convolution kernel
  reading alone an argument's zero-padded (or dilated) window view pads (or strides,
  as a transposed convolution) as it reads, the padded or dilated copy never made;
- `square_in_slices`: a large einsum whose result only a sum of its squares reads, over
  a batch leg among others, runs one slice of that leg at a time (`SlicedSquares`);
- `mark_views`: whether the result is only a view of the argument (one `as_strided`
  and a copy per call) or may share its memory;
- `prune`: what nothing reads is dropped (copies' constants, merged chain results, an
  argument's view once its rows are taken before the view).

Each pass leaves a schedule it has already processed unchanged (tested).

>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.kfac import kfac_reduce_network
>>> from tnconv.lower.program import lower_program
>>> from tnconv.lower.schedule.builder import build_steps
>>> program = lower_program(kfac_reduce_network(ConvSpec(2, 2, 3, input_size=(6, 6)), 4),
...                         ("input",), (1, 18, 18))
>>> run_passes(build_steps(program)).scale
1.0
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from math import prod
from typing import Any, Callable, Optional

from tnconv.ir.constants import Scaled
from tnconv.ir.layout import Layout
from tnconv.lower.schedule.conv_views import conv_arguments
from tnconv.lower.schedule.einsum import SLICED_MAX_SLICES, Einsum, SlicedEinsum, SlicedSquares
from tnconv.lower.schedule.gather_views import gather_arguments
from tnconv.lower.schedule.model import Argument, Constant, Schedule, readers
from tnconv.lower.schedule.product import Gram, MatrixChain, with_alpha
from tnconv.lower.schedule.reduce import HadamardSum, MaskedReduce, Reduce, masked, unmerged

__all__ = ["PASSES", "run_passes", "merge_chains", "sum_arguments", "fold_scale",
           "square_in_slices", "mark_views", "prune", "multiplicity", "SQUARES_MIN_ELEMENTS"]

#: An einsum's result from this many elements (32 MiB in fp32, above which every
#: allocation is fresh pages from the system) is summed a slice at a time where only the
#: sum of its squares reads it. On GGN diagonals (C = 10, AMD EPYC, 2 threads), against the
#: whole product: 0.78-0.83x on Inception's 1×7 (37 MiB), 0.88x on AlexNet's grouped 5×5
#: (49 MiB), 0.70x on ViT's patch embedding (a sliced einsum, 47 MiB); 1.14x on ResNet's
#: 3×3 (6 MiB), hence the bound.
SQUARES_MIN_ELEMENTS = 1 << 23


def multiplicity(schedule: Schedule) -> Counter:
    """How many times each register enters the result as a factor (every step is
    multilinear in what it reads): scaling a register of multiplicity 1 scales the
    result once."""
    found: Counter = Counter({schedule.result: 1})
    for step in reversed(schedule.prepare + schedule.steps):
        times = found[step.output]
        for register in step.reads:
            found[register] += times
    return found


def merge_chains(schedule: Schedule) -> Schedule:
    """A matrix chain reading only the previous chain's result (read by nothing else)
    joins it."""
    count = readers(schedule)
    steps: list = []
    for step in schedule.steps:
        last = steps[-1] if steps else None
        if (isinstance(step, MatrixChain) and isinstance(last, MatrixChain)
                and step.inputs[0] == last.output and count[last.output] == 1):
            merged = last.then(step)
            if merged is not None:
                steps[-1] = merged
                continue
        steps.append(step)
    return replace(schedule, steps=tuple(steps))


def sum_arguments(schedule: Schedule) -> Schedule:
    """Sums of an argument's view read by nothing else: before the view's trailing
    merging reshapes (`unmerged`), and a strided selection as a masked product."""
    count = readers(schedule)
    arguments = {a.register: a for a in schedule.arguments}
    constants, steps = list(schedule.constants), list(schedule.steps)
    shapes = list(schedule.shapes)
    for n, step in enumerate(steps):
        argument = arguments.get(step.inputs[0])
        if (not isinstance(step, Reduce) or argument is None or argument.view is None
                or count[argument.register] != 1):
            continue
        found = unmerged(argument.view, step)
        if found is not None:
            view, step = found
            argument = arguments[argument.register] = replace(argument, view=view,
                                                              shape=view.shape)
            steps[n] = step
        found = masked(argument.view, step, len(shapes))
        if found is not None:
            shape, counts, steps[n] = found
            arguments[argument.register] = Argument(argument.register, argument.argument, shape)
            shapes[argument.register] = shape
            constants.append(Constant(len(shapes), counts, counts.shape))
            shapes.append(counts.shape)
    return replace(schedule, arguments=tuple(arguments.values()), constants=tuple(constants),
                   steps=tuple(steps), shapes=tuple(shapes))


def _scale_register(schedule: Schedule, register: int, factor: float) -> Schedule:
    """`register` (a constant, or a result of constants) times `factor`, once per bind."""
    constants = list(schedule.constants)
    for n, c in enumerate(constants):
        if c.register == register:
            constants[n] = Constant(register, Scaled(c.value, factor), c.shape)
            return replace(schedule, constants=tuple(constants))
    new = schedule.registers
    prepare = schedule.prepare + (Reduce((register,), new, (), (), scale=factor),)
    steps = tuple(replace(s, inputs=tuple(new if r == register else r for r in s.inputs))
                  for s in schedule.steps)
    return replace(schedule, prepare=prepare, steps=steps,
                   shapes=schedule.shapes + (schedule.shapes[register],))


def _known(schedule: Schedule) -> set[int]:
    """Registers known without the call's data: constants and results of constants."""
    return {c.register for c in schedule.constants} | {s.output for s in schedule.prepare}


def _scale_source(schedule: Schedule, register: int, factor: float) -> Optional[Schedule]:
    """`schedule` with `factor` put where it scales `register` exactly once: on the sums of
    the step producing it, or on a constant only that step reads; None where there is none."""
    count, known = readers(schedule), _known(schedule)
    producer = {s.output: n for n, s in enumerate(schedule.steps)}
    if register not in producer or count[register] != 2:  # the Gram's two reads
        return None
    n = producer[register]
    step = schedule.steps[n]
    if isinstance(step, Reduce):
        scaled = step.scaled(factor)
        if scaled is None:
            return None
        return replace(schedule, steps=schedule.steps[:n] + (scaled,) + schedule.steps[n + 1:])
    if isinstance(step, (MaskedReduce, MatrixChain)):
        only = [r for r in step.inputs[1:] if r in known and count[r] == 1]
        if only:
            return _scale_register(schedule, only[0], factor)
    return None


def fold_scale(schedule: Schedule) -> Schedule:
    """Move the scale off the per-call result (see the module docstring)."""
    scale = schedule.scale
    if scale == 1:
        return schedule
    last = schedule.steps[-1] if schedule.steps else None
    if isinstance(last, Gram) and last.output == schedule.result:
        # √scale on a source feeding both copies keeps the product a plain bmm (no alpha,
        # whose baddbmm path costs tens of µs more in a cold cache)
        moved = _scale_source(schedule, last.inputs[0], scale ** 0.5) if scale > 0 else None
        if moved is None:
            steps = schedule.steps[:-1] + (with_alpha(last, scale),)
            moved = replace(schedule, steps=steps)
        return replace(moved, scale=1.0)
    times, known = multiplicity(schedule), _known(schedule)
    once = [r for r in known if times[r] == 1 and any(r in s.inputs for s in schedule.steps)]
    if once:
        smallest = min(once, key=lambda r: (prod(schedule.shapes[r]), r))
        return replace(_scale_register(schedule, smallest, scale), scale=1.0)
    plain = [a for a in schedule.arguments if a.view is None and times[a.register] == 1]
    smallest = min(plain, key=lambda a: prod(a.shape), default=None)
    if smallest is not None and prod(smallest.shape) < prod(schedule.result_shape):
        return replace(schedule, scaled_argument=smallest.register)
    return schedule


def _sliced_squares(product: Any, squares: HadamardSum, shape: tuple[int, ...]
                    ) -> Optional[SlicedSquares]:
    """`squares` of `product` as one step sliced along the largest leg that both of the
    product's operands carry and the squares sum (each slice reads a share of each
    operand), of 2 to `SLICED_MAX_SLICES` entries, or along the slices of a `SlicedEinsum`
    where the squares sum them; None where there is none."""
    if isinstance(product, SlicedEinsum):
        d, equation, dims = product.position, product.equation, (-1, 0)
        slices, layout = product.slices, product.order
        if d not in squares.summed:
            return None
    else:
        terms, out = product.equation.split("->")
        terms = terms.split(",")
        if len(terms) != 2 or any(len(set(t)) != len(t) for t in terms):
            return None
        candidates = [d for d in squares.summed if out[d] in terms[0] and out[d] in terms[1]
                      and 2 <= shape[d] <= SLICED_MAX_SLICES]
        if not candidates:
            return None
        d = max(candidates, key=lambda c: shape[c])
        letter = out[d]
        equation = ",".join(t.replace(letter, "") for t in terms) + "->" + out.replace(letter, "")
        dims, slices, layout = tuple(t.index(letter) for t in terms), shape[d], ()
    summed = tuple(e - (e > d) for e in squares.summed if e != d)
    return SlicedSquares(product.inputs, squares.output, equation, dims, slices, summed,
                         squares.permutation, layout)


def square_in_slices(schedule: Schedule) -> Schedule:
    """An einsum of two operands (or a `SlicedEinsum`) read only by the sum of its squares
    (a `HadamardSum` of it with itself), its result at least `SQUARES_MIN_ELEMENTS`, runs
    a slice of a summed leg at a time (`SlicedSquares`), the product never made whole."""
    count = readers(schedule)
    producer = {s.output: n for n, s in enumerate(schedule.steps)}
    steps, dropped = list(schedule.steps), set()
    for n, step in enumerate(schedule.steps):
        source = producer.get(step.inputs[0]) if isinstance(step, HadamardSum) else None
        if (source is None or step.inputs[0] != step.inputs[1] or step.other_order
                or count[step.inputs[0]] != 2
                or not isinstance(steps[source], (Einsum, SlicedEinsum))
                or prod(schedule.shapes[step.inputs[0]]) < SQUARES_MIN_ELEMENTS):
            continue
        fused = _sliced_squares(steps[source], step, schedule.shapes[step.inputs[0]])
        if fused is not None:
            steps[n] = fused
            dropped.add(source)
    if not dropped:
        return schedule
    return replace(schedule, steps=tuple(s for n, s in enumerate(steps) if n not in dropped))


def mark_views(schedule: Schedule) -> Schedule:
    """`may_alias` where no step copies (only permutations: the result may be a view of
    the argument), and `view_result` where it is exactly one strided view of a contiguous
    single argument, found on symbolic layouts."""
    if not all(isinstance(s, Reduce) and not s.summed for s in schedule.steps):
        return replace(schedule, may_alias=False, view_result=None)
    view = None
    if schedule.scale == 1 and len(schedule.arguments) == 1:
        argument = schedule.arguments[0]
        layout = (argument.view.layout() if argument.view is not None
                  else Layout.contiguous(argument.shape))
        for step in schedule.steps:
            if step.kept_shape:
                layout = layout.reshape(step.kept_shape)
            if step.permutation:
                layout = layout.permute(step.permutation)
        if not layout.fresh:
            view = (layout.shape, layout.strides, layout.offset)
    return replace(schedule, may_alias=True, view_result=view)


def prune(schedule: Schedule) -> Schedule:
    """Drop steps, prepare steps and constants whose result nothing needs (the copies of
    a shared sub-expression's inputs, a chain's merged intermediate results)."""
    needed = {schedule.result}
    if schedule.scaled_argument is not None:
        needed.add(schedule.scaled_argument)
    steps, prepare = [], []
    for kept, group in ((steps, schedule.steps), (prepare, schedule.prepare)):
        for step in reversed(group):
            if step.output in needed:
                kept.append(step)
                needed.update(step.inputs)
    constants = tuple(c for c in schedule.constants if c.register in needed)
    arguments = tuple(a for a in schedule.arguments if a.register in needed)
    return replace(schedule, steps=tuple(reversed(steps)), prepare=tuple(reversed(prepare)),
                   constants=constants, arguments=arguments)


#: The passes, in the order they run.
PASSES: tuple[Callable[[Schedule], Schedule], ...] = (
    merge_chains, sum_arguments, fold_scale, gather_arguments, conv_arguments,
    square_in_slices, mark_views, prune)


def run_passes(schedule: Schedule) -> Schedule:
    for schedule_pass in PASSES:
        schedule = schedule_pass(schedule)
    return schedule
