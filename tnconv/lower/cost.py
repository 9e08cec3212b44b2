"""The cost model: per-call FLOPs, largest intermediate and bytes moved of a program as
its schedule runs it (pure: no torch).

The path is walked as the schedule executes it: contractions of constants run once
per bound schedule and cost nothing per call (with `shared=True`, neither does a step
the schedule reuses, a common sub-expression: `repeated_steps`); a fold costs one pass
over its data operand; a window view that its step reads in place (`reads_in_place`)
moves the data it views, not the windows; every other step costs the product of the
sizes of the indices it touches. Memory is the largest intermediate, dense constant or
materialised view; bytes moved count the operands and results of the per-call steps
plus what views copy (padding, gathers, overlapping windows), at `itemsize` bytes per
element. The rewrite driver minimises `Cost.total`.

>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.convolution import unfold_network
>>> from tnconv.lower import network_cost
>>> cost = network_cost(unfold_network(ConvSpec(1, 1, kernel_size=2, input_size=(4,)), 1))
>>> cost.flops, cost.largest_intermediate
(24, 24)
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

from tnconv.lower.paths import walk_path
from tnconv.lower.schedule.builder import repeated_steps
from tnconv.lower.schedule.model import Schedule
from tnconv.lower.schedule.windows import reads_in_place

__all__ = ["Cost", "program_cost"]


@dataclass(frozen=True)
class Cost:
    """Per-call cost of one network or program."""

    flops: int
    largest_intermediate: int
    bytes_moved: int
    #: Elements of the largest constant execution materialises.
    largest_constant: int = 0

    @property
    def total(self) -> int:
        """The quantity the rewrite driver minimises: FLOPs plus bytes moved."""
        return self.flops + self.bytes_moved

    def not_worse_than(self, other: "Cost") -> bool:
        """No more work than `other`; at equal work, no more memory."""
        return ((self.total, self.largest_intermediate)
                <= (other.total, other.largest_intermediate))

    def describe(self) -> str:
        return (f"{self.flops:,} flops (multiply-adds), largest "
                f"{self.largest_intermediate:,} elements, {self.bytes_moved:,} bytes moved")


def program_cost(program: Any, schedule: Schedule, registers: tuple[int, ...],
                 itemsize: int = 4, shared: bool = False) -> Cost:
    """The cost of `program` run by `schedule`; `registers[pos]` is the register of
    program operand `pos` (-1 for a pattern a fold applies). `shared`: a step the
    schedule reuses (a common sub-expression, `repeated_steps`) costs nothing."""
    operands = program.operands
    sizes = {i: n for op in operands for i, n in zip(op.indices, op.shape)}
    sizes.update(zip(program.output_indices, program.output_shape))
    in_place_registers = {s.inputs[0] for s in schedule.steps if reads_in_place(s)}
    in_place = {pos for pos, op in enumerate(operands)
                if op.view is not None and registers[pos] in in_place_registers}
    largest = dense = max((prod(op.shape) for pos, op in enumerate(operands)
                           if op.is_constant and registers[pos] >= 0), default=0)
    moved = 0
    for pos, op in enumerate(operands):
        if op.view is not None:
            copied = op.view.copied_elements(windows=pos not in in_place)
            moved += copied
            largest = max(largest, copied if pos in in_place else prod(op.shape) if copied else 0)
    folds = program.folds or (-1,) * len(program.path)
    flops = 0
    size = lambda legs: prod(sizes[i] for i in legs)  # noqa: E731
    repeated = repeated_steps(program) if shared else frozenset()
    for step in walk_path([op.indices for op in operands], [op.is_constant for op in operands],
                          program.path, program.output_indices):
        if step.constant or step.number in repeated:
            continue
        result = size(step.out)
        touched = size(tuple(dict.fromkeys(i for legs in step.legs for i in legs)))
        windowed = [t for t in step.taken if t in in_place]
        if windowed:  # the windows are read in place: the data once, the output once
            flops += touched
            moved += sum(prod(operands[t].view.base_shape) if t in in_place else size(legs)
                         for t, legs in zip(step.taken, step.legs)) + result
        elif folds[step.number] >= 0:  # a scatter-add: one pass over the data operand
            data = max(size(legs) for legs, c in zip(step.legs, step.constants) if not c)
            flops += data
            moved += data + result
        else:
            flops += touched
            moved += sum(size(legs) for legs in step.legs) + result
        largest = max(largest, result)
    return Cost(flops, largest, moved * itemsize, dense)
