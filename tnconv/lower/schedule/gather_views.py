"""Selections moved inside an argument's view: rows taken before the windows are laid.

A gather from a window view X[…, o, k, …] of an argument, done on the view, reads
every kept window through strides no kernel likes (measured 25-35 ms for 1.8 M
elements of a ResNet 3×3 input on 2 threads). The same kept windows are
consecutive runs of rows of the (padded) argument: window o reads rows
o·S + t·D for its taps t. So the selection becomes one `index_select` of those
rows *before* the window step, and the window a plain split [m, K] of the rows
taken (1-2 ms for the same layer). A selection of a leg the view leaves alone
(input channels, the batch) is taken on the argument before any step: the pads
and windows then run on the smaller tensor.

`push_takes(view, picks)` plans that: the view's steps with `TakeRows` inserted,
or None where the view hides where a leg comes from (a reshape after the take).
It is applied twice:

- `taken_before_view`, while the schedule is built: a gather that only takes legs
  the view leaves alone (a channel or batch draw) returns the rest of the view on
  the smaller tensor, still a view: the step that reads it is chosen as for an
  argument's view (a shift-GEMM reading the kept channels' windows in place), not
  as an einsum over laid-out windows;
- `gather_arguments`, a schedule pass, for every other gather step that is the
  only reader of its argument's view: the argument register then holds the
  caller's tensor as it lies and the step runs the plan (its `source`).

>>> from tnconv.ir.views import Pad, View, Window
>>> view = View((2, 3, 10), (Pad(2, 1, 1), Window(2, size=3, step=2)))   # [n, c, o, k]
>>> for op in push_takes(view, {2: (0, 4)}):     # 4 of the 5 windows kept
...     print(op.describe())
reshape(2, 3, 10) -> pad(dim 2, 1, 1, zeros)
take rows of selection 0 along dim 2 (3 per index, step 2, dilation 1)
reshape(2, 3, 12) -> split(dim 2 -> (4, 3))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Optional

from tnconv.ir.selection import SelectionView, is_selection
from tnconv.ir.views import Dilate, Flip, Pad, Reshape, Slice, SplitLeg, Take, View, Window
from tnconv.lower.schedule.gather import Gather
from tnconv.lower.schedule.model import Argument, Schedule, readers
from tnconv.lower.schedule.product import Matmul
from tnconv.lower.schedule.site import Operand, Site

__all__ = ["TakeRows", "push_takes", "gather_arguments", "TakenView", "taken_before_view"]


@dataclass(frozen=True)
class TakeRows:
    """`index_select` along `dim` of the rows j·step + t·dilation (t < size) for each index j
    of selection `selection` (size 1, step 1: the indices themselves)."""

    dim: int
    selection: int
    size: int = 1
    step: int = 1
    dilation: int = 1

    def describe(self) -> str:
        return (f"take rows of selection {self.selection} along dim {self.dim} "
                f"({self.size} per index, step {self.step}, dilation {self.dilation})")


#: Where a dim of the view comes from: ("axis", position, dim) — a plain axis from step
#: `position` on; ("window", position, dim, size, step, dilation) — the starts of a window
#: (or split) step at `position`; None — not traceable.
Origin = Optional[tuple]


def _origins(view: View) -> list[Origin]:
    origin: list[Origin] = [("axis", 0, d) for d in range(len(view.base_shape))]
    for pos, step in enumerate(view.steps):
        if isinstance(step, (Pad, Slice, Flip, Dilate, Take)):
            origin[step.dim] = ("axis", pos + 1, step.dim)
        elif isinstance(step, Window):
            origin[step.dim:step.dim + 1] = [
                ("window", pos, step.dim, step.size, step.step, step.dilation), None]
        elif isinstance(step, SplitLeg) and len(step.sizes) == 2:
            size = step.sizes[1]
            origin[step.dim:step.dim + 1] = [("window", pos, step.dim, size, size, 1), None]
        elif isinstance(step, SplitLeg):
            origin[step.dim:step.dim + 1] = [None] * len(step.sizes)
        else:  # a reshape: where each dim comes from is not tracked through it
            origin = [None] * len(step.shape)
    return origin


def push_takes(view: View, picks: dict[int, tuple[int, int]]) -> Optional[tuple[Any, ...]]:
    """The view's steps as `View`s with a `TakeRows` inserted for each picked dim (view dim
    -> (selection number, its count)), a window whose starts are picked becoming a split of
    the rows taken; None where a picked dim is not traceable or a reshape follows a take."""
    origin = _origins(view)
    inserts: dict[int, list[TakeRows]] = {}
    splits: dict[int, SplitLeg] = {}
    counts = dict(picks.values())
    for dim, (selection, count) in picks.items():
        found = origin[dim]
        if found is None:
            return None
        if found[0] == "axis":
            inserts.setdefault(found[1], []).append(TakeRows(found[2], selection))
        else:
            _, pos, at, size, step, dilation = found
            inserts.setdefault(pos, []).append(TakeRows(at, selection, size, step, dilation))
            splits[pos] = SplitLeg(at, (count, size))
    if inserts and any(isinstance(s, Reshape) for s in view.steps[min(inserts):]):
        return None
    ops: list[Any] = []
    shape = start = tuple(view.base_shape)
    pending: list[Any] = []
    for pos in range(len(view.steps) + 1):
        for take in inserts.get(pos, ()):
            if pending:
                ops.append(View(start, tuple(pending)))
                pending = []
            ops.append(take)
            shape = shape[:take.dim] + (counts[take.selection] * take.size,) + shape[take.dim + 1:]
        if pos < len(view.steps):
            if not pending:
                start = shape
            pending.append(splits.get(pos, view.steps[pos]))
            shape = pending[-1].out_shape(shape)
    if pending:
        ops.append(View(start, tuple(pending)))
    return tuple(ops)


@dataclass(frozen=True)
class TakenView:
    """A gather whose selections all act before its argument's windows: `step` reads the
    argument as it lies (`base_shape`, register to be given by the builder) and writes
    the kept rows seen through `view`, its legs `legs` (the data's, each L its s)."""

    step: Gather
    argument: int  # the data operand's register (its view's argument)
    base_shape: tuple[int, ...]
    legs: tuple[str, ...]
    view: View


def taken_before_view(step: Gather, site: Site) -> Optional[TakenView]:
    """`step`, a gather from an argument's window view, with its rows taken before the
    view's steps, where every selection picks a leg the view leaves alone (channels, the
    batch) and windows remain after the last take; None otherwise (the window starts are
    picked, or no windows remain: `gather_arguments` may still take rows inside)."""
    data = next(op for op in site.taken if op.register == step.inputs[0] and not is_selection(op))
    view = data.view
    if (not data.argument or not isinstance(view, View) or step.source is not None
            or -1 in step.weight_of):
        return None
    origin = _origins(view)
    if any(origin[d] is None or origin[d][0] != "axis" for d in step.dims):
        return None
    selections = {op.register: op for op in site.taken if is_selection(op)}
    picks = {dim: (j, selections[r].view.count)
             for j, (dim, r) in enumerate(zip(step.dims, step.inputs[1:]))}
    plan = push_takes(view, picks)
    if plan is None or not isinstance(plan[-1], View) or not plan[-1].tap_dims():
        return None
    placed = {selections[r].legs[1]: selections[r].legs[0] for r in step.inputs[1:1 + len(picks)]}
    legs = tuple(placed.get(leg, leg) for leg in data.legs)
    gathered = replace(step, permutation=tuple(range(len(legs))), source=plan, final=-1,
                       layout=())
    return TakenView(gathered, data.register, tuple(view.base_shape), legs, plan[-1])


def _last_window(view: View, dims: tuple[int, ...]) -> int:
    """The selection (position in `dims`) of the window started last in the view, or -1."""
    origin = _origins(view)
    windows = [(origin[d][1], j) for j, d in enumerate(dims)
               if origin[d] is not None and origin[d][0] == "window"]
    return max(windows)[1] if windows else -1


def _layout(schedule: Schedule, step: Gather) -> tuple[int, ...]:
    """The memory order of the gathered dims that the step reading the result wants: a final
    `Matmul`'s order for that operand (its reshape is then free), else the data's order."""
    natural = tuple(range(len(step.permutation)))
    readers = [s for s in schedule.steps if step.output in s.inputs]
    if len(readers) != 1 or not isinstance(readers[0], Matmul):
        return natural
    matmul = readers[0]
    if matmul.inputs.count(step.output) != 1:
        return natural
    order = matmul.left_order if matmul.inputs[0] == step.output else matmul.right_order
    return tuple(step.permutation[o] for o in order)


def gather_arguments(schedule: Schedule) -> Schedule:
    """Gathers that alone read an argument's view take their rows inside it (`push_takes`);
    the selection of the window laid last is applied on the final view, in the layout the
    next product reads (`_layout`)."""
    count, arguments = readers(schedule), {a.register: a for a in schedule.arguments}
    steps, shapes = list(schedule.steps), list(schedule.shapes)
    for n, step in enumerate(steps):
        argument = arguments.get(step.inputs[0]) if isinstance(step, Gather) else None
        if (argument is None or step.source is not None or argument.view is None
                or isinstance(argument.view, SelectionView) or count[argument.register] != 1
                or -1 in step.weight_of):
            continue
        counts = [arguments[r].view.count for r in step.inputs[1:1 + len(step.dims)]]
        final = _last_window(argument.view, step.dims)
        picks = {dim: (j, c) for j, (dim, c) in enumerate(zip(step.dims, counts)) if j != final}
        plan = push_takes(argument.view, picks)
        if plan is None:
            continue
        base = tuple(argument.view.base_shape)
        arguments[argument.register] = Argument(argument.register, argument.argument, base)
        shapes[argument.register] = base
        steps[n] = replace(step, source=plan, final=final, layout=_layout(schedule, step))
    return replace(schedule, arguments=tuple(arguments.values()), steps=tuple(steps),
                   shapes=tuple(shapes))
