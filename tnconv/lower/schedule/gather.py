"""The gather family: selection tensors applied as index operations, never as one-hot products.

A selection R[s, L] (`tnconv.ir.selection`) holds the indices of the kept
positions of a leg L; its register holds those indices, not the one-hot [m, L]
tensor. Where it meets data:

- `Gather`: data carrying L (L summed, s kept): `index_select` along L (one
  advanced index for several selections of adjacent legs), on the data as it
  lies (a window view is read in place: only the kept patches are copied), then
  times the sample weights that came with it;
- `IndexAdd`: an output leg's selection meeting data carrying s (s summed, L
  kept): `index_add_` of the data into zeros along L;
- `OneHotEinsum`: anything else that reads a selection: the one-hot tensor is
  built and one einsum runs (correct whatever the path; the planner avoids it).

`gather_rule` is the first of the schedule's rules: a selection's register holds
integers, so no other family may read it.

>>> from tnconv.ir.selection import SelectionView
>>> from tnconv.lower.schedule.site import Operand, Site
>>> picks = SelectionView(0, 2, 5, 2)
>>> site = Site((Operand(0, ("n", "o"), False), Operand(1, ("s", "o"), False, view=picks),
...              Operand(2, ("s",), False)), ("n", "s"), 3, {"n": 3, "o": 5, "s": 2})
>>> gather_rule(site).label()
'gather 1 leg (index_select), × 1 weight vector(s)'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from tnconv.ir.equation import spell
from tnconv.ir.selection import is_selection
from tnconv.lower.schedule.model import Step
from tnconv.lower.schedule.site import Operand, Site

__all__ = ["Gather", "IndexAdd", "OneHotEinsum", "gather_rule"]

#: Per weight vector: the permutation of its legs into the result's order and the shape
#: that broadcasts it over the result (1 on the legs it lacks).
Broadcast = tuple[tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class Gather(Step):
    """inputs (data, selections…, weights…): the data indexed along `dims` (one per
    selection, in the data's own order, each L becoming its s), times each weight vector
    laid out as in `weights` (against the gathered legs), then permuted by `permutation`
    into the result's order. `source`, when set (`tnconv.lower.schedule.gather_views`), says
    how the data argument's view is applied with the selections inside it: the data
    register then holds the caller's argument as it lies (reshaped)."""

    family = "gather"
    dims: tuple[int, ...]
    permutation: tuple[int, ...]
    weights: tuple[Broadcast, ...] = ()
    #: Per weight vector, the selection whose s leg it carries (-1: another shape).
    weight_of: tuple[int, ...] = ()
    source: Optional[tuple] = None
    #: With a `source`: the selection applied last, on the final view (-1: none), by an
    #: `index_select` whose result is laid out in `layout` (an order of the gathered dims).
    final: int = -1
    layout: tuple[int, ...] = ()

    @property
    def adjacent(self) -> bool:
        """Whether the selected dims are consecutive (one advanced index does them all)."""
        return list(self.dims) == list(range(self.dims[0], self.dims[0] + len(self.dims)))

    def label(self) -> str:
        legs = f"{len(self.dims)} leg{'s' if len(self.dims) > 1 else ''}"
        if self.source is not None:
            how = "rows taken inside the argument's view, before its windows"
        else:
            how = "index_select" if len(self.dims) == 1 else (
                "one advanced index" if self.adjacent else "index_select each")
        scaled = f", × {len(self.weights)} weight vector(s)" if self.weights else ""
        return f"gather {legs} ({how}){scaled}"


@dataclass(frozen=True)
class IndexAdd(Step):
    """inputs (data, selection, weights…): the data permuted by `permutation` into the
    result's order (s where L goes), times the weights, added into zeros of `shape` along
    `dim` at the selected positions."""

    family = "gather"
    permutation: tuple[int, ...]
    dim: int
    shape: tuple[int, ...]
    weights: tuple[Broadcast, ...] = ()

    def label(self) -> str:
        return f"scatter into {self.shape[self.dim]} positions (index_add_)"


@dataclass(frozen=True)
class OneHotEinsum(Step):
    """One einsum of the inputs, the selections among them (`sizes`: input position -> the
    size of its leg L) expanded to one-hot tensors first."""

    family = "gather"
    equation: str
    sizes: tuple[tuple[int, int], ...]

    def label(self) -> str:
        return f"one-hot selections, einsum {self.equation}"


def _broadcast(weights: list[Operand], out: tuple[str, ...], site: Site) -> tuple[Broadcast, ...]:
    layouts = []
    for w in weights:
        order = tuple(w.legs.index(leg) for leg in out if leg in w.legs)
        layouts.append((order, tuple(site.sizes[leg] if leg in w.legs else 1 for leg in out)))
    return tuple(layouts)


def _split(site: Site) -> Optional[tuple[list[Operand], list[Operand], list[Operand]]]:
    """(selections, data operands, weights) of a site: weights carry only selections' s legs."""
    selections = [op for op in site.taken if is_selection(op)]
    if not selections:
        return None
    s_legs = {sel.legs[0] for sel in selections}
    rest = [op for op in site.taken if not is_selection(op)]
    weights = [op for op in rest if op.legs and set(op.legs) <= s_legs]
    data = [op for op in rest if all(op is not w for w in weights)]
    return selections, data, weights


def _gather(site: Site, selections: list[Operand], data: Operand,
            weights: list[Operand]) -> Optional[Gather]:
    legs, out = data.legs, site.out
    placed = {sel.legs[0]: sel.legs[1] for sel in selections}  # s -> L
    if len(placed) != len(selections) or len(set(legs)) != len(legs):
        return None
    for s, leg in placed.items():
        if leg not in legs or leg in out or s in legs or s not in out:
            return None
    taken = {leg: s for s, leg in placed.items()}
    gathered = tuple(taken.get(leg, leg) for leg in legs)  # the data's order, L -> s
    if sorted(gathered) != sorted(out):
        return None
    dims = tuple(legs.index(sel.legs[1]) for sel in selections)
    permutation = tuple(gathered.index(leg) for leg in out)
    inputs = (data.register, *(sel.register for sel in selections), *(w.register for w in weights))
    s_legs = [sel.legs[0] for sel in selections]
    weight_of = tuple(s_legs.index(w.legs[0]) if len(w.legs) == 1 else -1 for w in weights)
    return Gather(inputs, site.output, dims, permutation, _broadcast(weights, gathered, site),
                  weight_of)


def _index_add(site: Site, selections: list[Operand], data: Operand,
               weights: list[Operand]) -> Optional[IndexAdd]:
    if len(selections) != 1:
        return None
    (s, leg), legs, out = selections[0].legs, data.legs, site.out
    if s not in legs or s in out or leg not in out or leg in legs or len(set(legs)) != len(legs):
        return None
    source = [s if o == leg else o for o in out]
    if sorted(source) != sorted(legs):
        return None
    inputs = (data.register, selections[0].register, *(w.register for w in weights))
    return IndexAdd(inputs, site.output, tuple(legs.index(o) for o in source), out.index(leg),
                    site.shape(out), _broadcast(weights, tuple(source), site))


def gather_rule(site: Site) -> Optional[Step]:
    """The gather-family step of a site that reads a selection tensor, or None where none
    does (see the module docstring)."""
    split = _split(site)
    if split is None:
        return None
    selections, data, weights = split
    if len(data) == 1:
        step = (_gather(site, selections, data[0], weights)
                or _index_add(site, selections, data[0], weights))
        if step is not None:
            return step
    sizes = tuple((n, site.sizes[op.legs[1]]) for n, op in enumerate(site.taken)
                  if is_selection(op))
    return OneHotEinsum(tuple(op.register for op in site.taken), site.output,
                        spell([op.legs for op in site.taken], site.out), sizes)
