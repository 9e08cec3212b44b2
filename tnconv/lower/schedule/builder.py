"""From an `EinsumProgram` to a `Schedule`: walk the path, pick each step by rules.

Registers come first for the call's arguments (one per distinct view of an argument),
then the symbolic constants (index patterns that a fold applies are never
materialised: they get no register). The path is walked once (`walk_path`); a
contraction of constants only becomes a `prepare` step (run once per device and
dtype), any other one is either a common sub-expression of an earlier step (its
result register is reused) or the step of the first rule in `RULES` that matches. A
gather that only takes legs an argument's view leaves alone reads the argument as it
lies, and its result stays a view the next rules see as they see an argument's
(`tnconv.lower.schedule.gather_views.taken_before_view`).
The schedule passes (`tnconv.lower.schedule.passes`) then merge, move and fold.

>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> from tnconv.lower.program import lower_program
>>> program = lower_program(forward_network(ConvSpec(2, 3, 3, input_size=(6,)), 1),
...                         ("input", "weight"), (1, 3, 4))
>>> [type(step).__name__ for step in build_steps(program).steps]
['PatternGather', 'Einsum']
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Hashable, Optional

from tnconv.cache import LRUCache
from tnconv.ir.constants import signature as constant_signature
from tnconv.ir.equation import canonical
from tnconv.ir.views import read_as
from tnconv.lower.paths import walk_path
from tnconv.lower.schedule.conv import conv_rule
from tnconv.lower.schedule.einsum import einsum_rule, sliced_einsum_rule
from tnconv.lower.schedule.gather import Gather, gather_rule
from tnconv.lower.schedule.gather_views import taken_before_view
from tnconv.lower.schedule.model import Argument, Constant, Schedule
from tnconv.lower.schedule.product import gram_rule, matmul_rule, matrix_rule
from tnconv.lower.schedule.reduce import hadamard_rule, reduce_rule
from tnconv.lower.schedule.scatter import fold_rule
from tnconv.lower.schedule.select import pattern_gather_rule
from tnconv.lower.schedule.site import Operand, Site
from tnconv.lower.schedule.windows import window_rule

__all__ = ["RULES", "build_steps", "operand_registers", "repeated_steps"]

#: The step rules, tried in this order; the first that returns a step is taken.
RULES: tuple[Callable[[Site], Any], ...] = (
    gather_rule,   # selections (their registers hold indices): index_select / index_add_
    reduce_rule,   # one operand: a sum / permutation
    fold_rule,     # a scattering pattern: a scatter-add, the pattern never built
    pattern_gather_rule,  # a pattern over one leg: a selection, no multiplication
    gram_rule,     # two copies of one tensor: a symmetric product
    conv_rule,     # a window view in a convolution's roles: torch's convolution kernels
    window_rule,   # window views read in place (shift-GEMMs, tap loops)
    matrix_rule,   # constant matrices on legs of data: a chain of products
    matmul_rule,   # the last step, in the result's own layout
    hadamard_rule,  # two operands on the same legs: multiply, then sum
    sliced_einsum_rule,  # a large operand led by a leg of its own: one einsum per slice
    einsum_rule,   # anything else
)


@dataclass
class _Registers:
    """The register file as the builder fills it."""

    operands: dict  # path id -> Operand (the rules' view of it)
    arguments: list
    constants: list
    shapes: list

    def new(self, shape: tuple[int, ...]) -> int:
        self.shapes.append(tuple(shape))
        return len(self.shapes) - 1

    def as_it_lies(self, register: int, shape: tuple[int, ...]) -> int:
        """A register holding the argument of viewed register `register` reshaped to
        `shape`, no view (one per argument and shape)."""
        which = next(a.argument for a in self.arguments if a.register == register)
        found = next((a.register for a in self.arguments
                      if a.argument == which and a.view is None and a.shape == shape), None)
        if found is None:
            found = self.new(shape)
            self.arguments.append(Argument(found, which, shape, None))
        return found


def _slots(program: Any) -> _Registers:
    """Registers for the arguments (copies of one view share one), then the constants."""
    regs = _Registers({}, [], [], [])
    roles, folded = program.roles, set(program.folds)
    shared: dict[Hashable, int] = {}
    for pos, op in enumerate(program.operands):
        if op.is_constant:
            continue
        key = (roles.index(op.role), op.shape, read_as(op.view))
        if key not in shared:
            shared[key] = regs.new(op.shape)
            regs.arguments.append(Argument(shared[key], key[0], op.shape, op.view))
        regs.operands[pos] = Operand(shared[key], op.indices, False, None, op.view,
                                     ("argument",) + key, argument=True)
    for pos, op in enumerate(program.operands):
        if not op.is_constant:
            continue
        sig = ("constant", constant_signature(op.value))
        if pos in folded:  # applied by a fold step: symbolic only, no register
            regs.operands[pos] = Operand(-1, op.indices, True, op.value, None, sig)
            continue
        register = regs.new(op.shape)
        regs.constants.append(Constant(register, op.value, op.shape))
        regs.operands[pos] = Operand(register, op.indices, True, op.value, None, sig)
    return regs


def build_steps(program: Any) -> Schedule:
    """The schedule of `program` as the rules pick its steps (before the passes)."""
    regs = _slots(program)
    sizes = {i: n for op in program.operands for i, n in zip(op.indices, op.shape)}
    prepare, steps = [], []
    earlier: dict[Hashable, tuple] = {}  # step signature -> (result operand, walk's legs)
    order = lambda taken: sorted(taken, key=lambda t: repr(regs.operands[t[0]].signature))  # noqa
    legs = [op.indices for op in program.operands]
    constant = [op.is_constant for op in program.operands]
    for step in walk_path(legs, constant, program.path, program.output_indices, order):
        taken = tuple(_with_legs(regs.operands[t], l) for t, l in zip(step.taken, step.legs))
        key = ("step", tuple(op.signature for op in taken), canonical(
            [op.legs for op in taken], step.out))
        if key in earlier:  # a common sub-expression: reuse its register
            regs.operands[step.result] = _renamed(*earlier[key], step.out)
            continue
        output = regs.new(tuple(sizes[i] for i in step.out))
        regs.operands[step.result] = Operand(output, step.out, step.constant, signature=key)
        site = Site(taken, step.out, output, sizes, final=step.final)
        if step.constant:
            prepare.append(reduce_rule(site) or einsum_rule(site))
        else:
            rule_step = next(s for s in (rule(site) for rule in RULES) if s is not None)
            taken_view = taken_before_view(rule_step, site) if isinstance(rule_step, Gather) \
                else None
            if taken_view is not None:  # the kept rows stay a view the next step reads
                rule_step = _read_as_it_lies(taken_view, regs, output)
                regs.operands[step.result] = Operand(output, taken_view.legs, False, None,
                                                     taken_view.view, key, argument=True)
            steps.append(rule_step)
        earlier[key] = (regs.operands[step.result], step.out)
    result = regs.operands[len(program.operands) + len(program.path) - 1].register
    return Schedule(tuple(regs.arguments), tuple(regs.constants), tuple(prepare), tuple(steps),
                    result, tuple(program.result_shape), tuple(regs.shapes), scale=program.scale)


def _read_as_it_lies(taken: Any, regs: _Registers, output: int) -> Gather:
    """The gather of `taken` (`TakenView`) reading its argument as it lies; its result
    register gets the shape of the rows taken, seen through the view."""
    data = regs.as_it_lies(taken.argument, taken.base_shape)
    regs.shapes[output] = tuple(taken.view.shape)
    return replace(taken.step, inputs=(data,) + taken.step.inputs[1:], output=output)


def _renamed(earlier: Operand, walked: tuple[str, ...], out: tuple[str, ...]) -> Operand:
    """The result operand of an earlier step met again (the walk gave it legs `walked`,
    now `out`): its register and view, its legs renamed."""
    rename = dict(zip(walked, out))
    return Operand(earlier.register, tuple(rename[leg] for leg in earlier.legs),
                   earlier.constant, earlier.value, earlier.view, earlier.signature,
                   earlier.argument)


def _with_legs(op: Operand, legs: tuple[str, ...]) -> Operand:
    """`op` as the walk sees it now (a result's legs are those the walk gave it; rows
    taken before a view keep the view's order of the same legs)."""
    if op.legs == legs or (op.view is not None and sorted(op.legs) == sorted(legs)):
        return op
    return Operand(op.register, legs, op.constant, op.value, op.view, op.signature, op.argument)


def operand_registers(program: Any) -> tuple[int, ...]:
    """The register of each program operand (-1: a pattern a fold applies, not built)."""
    regs = _slots(program)
    return tuple(regs.operands[pos].register for pos in range(len(program.operands)))


_REPEATED = LRUCache(name="repeated steps")


def repeated_steps(program: Any) -> frozenset[int]:
    """The path steps the schedule does not run: common sub-expressions of an earlier step
    (the same operands met the same way, e.g. a copy's half of a network with two copies),
    keyed as `build_steps` keys them (cached: `tnconv.clear_caches` empties it)."""
    return _REPEATED.get_or_create(program, lambda: _repeated_steps(program))


def _repeated_steps(program: Any) -> frozenset[int]:
    regs = _slots(program)
    signature = {pos: op.signature for pos, op in regs.operands.items()}
    order = lambda taken: sorted(taken, key=lambda t: repr(signature[t[0]]))  # noqa: E731
    seen, repeated = set(), set()
    legs = [op.indices for op in program.operands]
    constant = [op.is_constant for op in program.operands]
    for step in walk_path(legs, constant, program.path, program.output_indices, order):
        key = ("step", tuple(signature[t] for t in step.taken), canonical(list(step.legs),
                                                                          step.out))
        signature[step.result] = key
        if key in seen:
            repeated.add(step.number)
        seen.add(key)
    return frozenset(repeated)
