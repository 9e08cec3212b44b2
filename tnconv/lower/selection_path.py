"""Contraction paths of networks with selection tensors: each selection meets its data first.

A selection R[s, L] (`tnconv.ir.selection`) stands for a dense one-hot [m, L]
tensor, which opt_einsum would price and place like any other operand: it could
meet another selection, or a weight vector, or be carried through a product
over L. Applied to the one data operand that carries L, it is one
`index_select` (only the kept positions are copied). So the plan is:

1. one step per data operand that selections gather from: the operand, all its
   selections, and the sample weights assigned to it (each weight vector w[s]
   goes to the smallest gathered operand carrying its s that has none for s yet:
   one side for a weight VJP, one per copy for KFC's two identical copies);
2. opt_einsum's plan for what is left, the selections of output legs aside;
3. each output leg's selection last (one `index_add_` into zeros).

Steps are in opt_einsum's pop-and-append convention (`tnconv.lower.paths`).

>>> path, flops, largest = plan_with_selections(           # Σ_s w_s X[idx_s] Y[idx_s]
...     ["a", "b", "ca", "cb", "c"], [(6,), (6,), (2, 6), (2, 6), (2,)],
...     [None, None, "selection", "selection", "weights"], "", lambda n: "optimal")
>>> path    # X with its selection and the weights, Y with its selection, then the rest
[(0, 2, 4), (0, 1), (0, 1)]
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Callable, Optional, Sequence

import opt_einsum

from tnconv.ir.selection import SELECTION_ROLE, WEIGHTS_ROLE

__all__ = ["plan_with_selections"]


@dataclass(eq=False)
class _Live:
    """One operand alive in the plan: its term (one symbol per leg), shape and kind."""

    term: str
    dims: tuple[int, ...]
    kind: Optional[str] = None

    @property
    def size(self) -> int:
        return prod(self.dims)


class _Plan:
    """The live operands and the path taken so far."""

    def __init__(self, live: list[_Live], output: str) -> None:
        self.live, self.output = live, output
        self.sizes = {s: d for x in live for s, d in zip(x.term, x.dims)}
        self.path: list[tuple[int, ...]] = []
        self.flops = self.largest = 0

    def take(self, taken: Sequence[_Live], cost: Optional[int] = None,
             out: Optional[str] = None) -> _Live:
        """Contract `taken` (legs still needed elsewhere kept, or `out`); cost: default the
        result's size (a selection copies what it keeps)."""
        positions = tuple(sorted(self.live.index(x) for x in taken))
        rest = [x for x in self.live if all(x is not t for t in taken)]
        if out is None:
            needed = {s for x in rest for s in x.term} | set(self.output)
            out = "".join(dict.fromkeys(s for x in taken for s in x.term if s in needed))
        result = _Live(out, tuple(self.sizes[s] for s in out))
        self.live = rest + [result]
        self.path.append(positions)
        self.flops += result.size if cost is None else cost
        self.largest = max(self.largest, result.size)
        return result


def _gathered_size(partner: _Live, selections: list[_Live]) -> int:
    size = partner.size
    for sel in selections:
        size = size // partner.dims[partner.term.index(sel.term[1])] * sel.dims[0]
    return size


def _groups(plan: _Plan) -> list[list[_Live]]:
    """[data operand, its selections…, its weights…] for each operand selections gather from."""
    groups: dict[int, list[_Live]] = {}
    for sel in (x for x in plan.live if x.kind == SELECTION_ROLE):
        leg = sel.term[1]
        carriers = [x for x in plan.live if x.kind not in (SELECTION_ROLE, WEIGHTS_ROLE)
                    and leg in x.term]
        if leg in plan.output or len(carriers) != 1:
            continue  # an output leg's selection comes last; anything else is left to the plan
        groups.setdefault(id(carriers[0]), [carriers[0]]).append(sel)
    for weights in (x for x in plan.live if x.kind == WEIGHTS_ROLE):
        free = [g for g in groups.values()
                if set(weights.term) <= {sel.term[0] for sel in g[1:] if sel.kind == SELECTION_ROLE}
                and not any(w.kind == WEIGHTS_ROLE and w.term == weights.term for w in g)]
        if free:
            min(free, key=lambda g: _gathered_size(g[0], [x for x in g[1:]
                                                           if x.kind == SELECTION_ROLE])
                ).append(weights)
    return list(groups.values())


def plan_with_selections(terms: Sequence[str], dims: Sequence[tuple[int, ...]],
                         kinds: Sequence[Optional[str]], output: str,
                         optimizer_for: Callable[[int], str]
                         ) -> tuple[list[tuple[int, ...]], int, int]:
    """The path (pop-and-append), its FLOPs and largest intermediate, for operands `terms`
    of shapes `dims` whose roles are `kinds` (see the module docstring)."""
    plan = _Plan([_Live(t, tuple(d), k) for t, d, k in zip(terms, dims, kinds)], output)
    for group in _groups(plan):
        plan.take(group)
    last = [x for x in plan.live if x.kind == SELECTION_ROLE and x.term[1] in output]
    rest = [x for x in plan.live if all(x is not sel for sel in last)]
    needed = set(output) | {sel.term[0] for sel in last}
    sub_output = "".join(dict.fromkeys(s for x in rest for s in x.term if s in needed))
    if len(rest) > 1:
        steps, info = opt_einsum.contract_path(
            ",".join(x.term for x in rest) + "->" + sub_output, *[x.dims for x in rest],
            shapes=True, optimize=optimizer_for(len(rest)))
        for n, contract in enumerate(steps):
            chosen = [rest[p] for p in contract]
            rest = [x for x in rest if all(x is not c for c in chosen)]
            final = n == len(steps) - 1 and not last
            rest.append(plan.take(chosen, cost=0, out=output if final else None))
        plan.flops += int(info.opt_cost)
    elif not last or set(rest[0].term) != set(sub_output):
        plan.take(rest, cost=rest[0].size, out=None if last else output)
    for sel in last:
        data = plan.live[-1] if plan.live[-1] is not sel else plan.live[-2]
        is_final = sel is last[-1]
        plan.take([data, sel], cost=data.size, out=output if is_final else None)
    return plan.path, plan.flops, plan.largest
