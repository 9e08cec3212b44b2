"""The schedule's data model: registers, argument and constant slots, steps, the `Schedule`.

A `Schedule` is what the runtime interprets: a register file whose first
registers hold the caller's arguments (reshaped, or seen through a data view),
then the symbolic constants, then one register per step result. `prepare` steps
read only constants and run once when the schedule is bound to a device and
dtype; `steps` run on every call. Every field is a plain value, so a schedule is
frozen, hashable and free of torch.

>>> from tnconv.lower.schedule.einsum import Einsum
>>> s = Schedule(arguments=(Argument(0, 0, (2, 3), None),), constants=(), prepare=(),
...              steps=(Einsum((0,), 1, "ab->ba"),), result=1, result_shape=(3, 2),
...              shapes=((2, 3), (3, 2)))
>>> print(s.describe())
a0 = argument 0 as (2, 3)
t1 = einsum ab->ba (a0)
result t1 -> (3, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from collections import Counter
from typing import Any, ClassVar, Hashable, Optional

__all__ = ["Argument", "Constant", "Step", "Schedule", "register_name", "readers"]


@dataclass(frozen=True)
class Argument:
    """Register `register` holds call argument `argument`, reshaped to `shape` (no view) or
    reshaped to the view's base shape and seen through `view` (`tnconv.ir.views.View`)."""

    register: int
    argument: int
    shape: tuple[int, ...]
    view: Optional[Hashable] = None


@dataclass(frozen=True)
class Constant:
    """Register `register` holds the materialised symbolic constant `value`."""

    register: int
    value: Hashable
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Step:
    """Base of every step: the registers it reads and the register it writes.

    Subclasses are frozen dataclasses of one family ("einsum", "reduce", "product",
    "windows", "scatter"); `label` says what a step does, for `Schedule.describe`.
    """

    family: ClassVar[str] = ""
    inputs: tuple[int, ...]
    output: int

    def label(self) -> str:
        return type(self).__name__.lower()

    @property
    def reads(self) -> tuple[int, ...]:
        """The registers the step reads, once per read (a Gram product reads its input
        twice, as both factors)."""
        return self.inputs


def register_name(schedule: "Schedule", register: int) -> str:
    """a<n> for an argument register, c<n> for a constant, t<n> for a step result."""
    if any(a.register == register for a in schedule.arguments):
        return f"a{register}"
    if any(c.register == register for c in schedule.constants):
        return f"c{register}"
    return f"t{register}"


@dataclass(frozen=True)
class Schedule:
    """An ordered, typed list of steps over a register file (see the module docstring).

    `scale` is applied to the result on every call (1 when a pass moved it onto a
    constant or into a step); `scaled_argument`, when set, is the argument register
    multiplied by the program's scale instead. `view_result` is (size, stride,
    offset) where the result is one strided view of the (contiguous) first argument;
    `may_alias`: the result may share the argument's memory (copied before returning).
    """

    arguments: tuple[Argument, ...]
    constants: tuple[Constant, ...]
    prepare: tuple[Any, ...]
    steps: tuple[Any, ...]
    result: int
    result_shape: tuple[int, ...]
    #: The shape of every register, by register number.
    shapes: tuple[tuple[int, ...], ...] = ()
    scale: float = 1.0
    scaled_argument: Optional[int] = None
    may_alias: bool = False
    view_result: Optional[tuple] = None

    @property
    def registers(self) -> int:
        """Size of the register file."""
        return len(self.shapes)

    @property
    def families(self) -> tuple[str, ...]:
        """The family of each per-call step, in order."""
        return tuple(step.family for step in self.steps)

    def describe(self) -> str:
        """One line per register slot and step, then the result."""
        name = lambda r: register_name(self, r)  # noqa: E731
        lines = []
        for a in self.arguments:
            how = f"as {a.shape}" if a.view is None else f"through {a.view.describe()}"
            lines.append(f"{name(a.register)} = argument {a.argument} {how}")
        for c in self.constants:
            what = c.value.describe() if hasattr(c.value, "describe") else type(c.value).__name__
            lines.append(f"{name(c.register)} = constant {c.shape} [{what}]")
        for kind, steps in (("once", self.prepare), ("", self.steps)):
            for step in steps:
                reads = ", ".join(name(r) for r in step.inputs)
                prefix = f"{kind}: " if kind else ""
                lines.append(f"{name(step.output)} = {prefix}{step.label()} ({reads})")
        extra = f" × {self.scale!r}" if self.scale != 1 else ""
        if self.scaled_argument is not None:
            extra += f" (scale on {name(self.scaled_argument)})"
        if self.view_result is not None:
            extra += " (one strided view of the argument, copied)"
        lines.append(f"result {name(self.result)} -> {self.result_shape}{extra}")
        return "\n".join(lines)


def readers(schedule: Schedule) -> Counter:
    """How many times per-call steps read each register (`Step.reads`)."""
    return Counter(r for step in schedule.steps for r in step.reads)
