"""Contraction paths: planning them (opt_einsum, bounded in compile time) and walking them.

opt_einsum writes a path in its pop-and-append convention: each step removes the
listed operands from the live list and appends its result. `walk_path` is the one
walker every stage uses (the schedule builder, the cost model, the fold finder).
The planner's optimiser is chosen by the number of operands so that compile time
stays polynomial: exhaustive search only for a few operands, dynamic programming
for a dozen, greedy beyond (a 17-d convolution has 19 operands).

>>> steps = list(walk_path([("a", "b"), ("b", "c"), ("c",)], [False, True, True],
...                        [(1, 2), (0, 1)], ("a",)))
>>> [(s.taken, s.out, s.constant) for s in steps]
[((2, 1), ('b',), True), ((3, 0), ('a',), False)]
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import prod
from typing import Any, Callable, Iterator, Optional, Sequence

import opt_einsum

from tnconv.spec.index_pattern import IndexPattern

__all__ = ["PathStep", "walk_path", "plan_path", "fold_first_path", "gather_first_path",
           "find_folds", "is_fold", "optimizer_for"]

Legs = tuple[str, ...]


@dataclass(frozen=True)
class PathStep:
    """One contraction of a path: the operands it takes (ids: operand positions, then
    `operand count + step number` for results; in pop order), their legs and whether
    each is constant, its result's legs and id."""

    number: int
    taken: tuple[int, ...]
    legs: tuple[Legs, ...]
    constants: tuple[bool, ...]
    out: Legs
    constant: bool
    result: int
    final: bool


def walk_path(legs: Sequence[Legs], constant: Sequence[bool], path: Sequence[Sequence[int]],
              output: Legs, arrange: Optional[Callable[[list], list]] = None
              ) -> Iterator[PathStep]:
    """Walk `path` over operands with `legs` (`constant[i]`: operand i is a constant).

    A step's result keeps the legs that a later operand or the output still needs,
    in order of first appearance among the operands taken (in pop order, or as
    `arrange` orders the (id, legs, constant) triples); the last step writes `output`.
    """
    live = [(n, tuple(l), bool(c)) for n, (l, c) in enumerate(zip(legs, constant))]
    for number, contract in enumerate(path):
        taken = [live.pop(p) for p in sorted(contract, reverse=True)]
        if arrange is not None:
            taken = arrange(taken)
        final = number == len(path) - 1
        rest = {i for _, l, _ in live for i in l} | set(output)
        seen = dict.fromkeys(i for _, l, _ in taken for i in l)
        out = tuple(output) if final else tuple(i for i in seen if i in rest)
        is_constant = all(c for _, _, c in taken)
        result = len(legs) + number
        live.append((result, out, is_constant))
        yield PathStep(number, tuple(t for t, _, _ in taken), tuple(l for _, l, _ in taken),
                       tuple(c for _, _, c in taken), out, is_constant, result, final)


def optimizer_for(count: int) -> str:
    """opt_einsum's optimiser for `count` operands: exhaustive up to 6, dynamic
    programming up to 10, greedy beyond (each bounded in time as operands grow)."""
    if count <= 6:
        return "optimal"
    return "dp" if count <= 10 else "greedy"


def _reduce_dangling(inputs: list[str], output: str, shapes: list[tuple[int, ...]]):
    """Sum out, operand by operand, the indices no other operand and not the output carries.

    Returns the single-operand path steps (pop-and-append), the remaining terms and
    shapes, and the FLOPs spent. On constants (e.g. Σ_o Π in KFAC-reduce) these steps
    run once per plan.
    """
    count: dict[str, int] = {}
    for term in inputs + [output]:
        for s in set(term):
            count[s] = count.get(s, 0) + 1
    terms, dims = list(inputs), list(shapes)
    steps, flops = [], 0
    for term, shape in zip(inputs, shapes):
        kept = [(s, d) for s, d in zip(term, shape) if count[s] > 1]
        if len(kept) == len(term):
            continue
        pos = terms.index(term)
        steps.append((pos,))
        flops += prod(shape)
        del terms[pos], dims[pos]
        terms.append("".join(s for s, _ in kept))
        dims.append(tuple(d for _, d in kept))
    return steps, terms, dims, flops


def plan_path(inputs: list[str], output: str, shapes: list[tuple[int, ...]],
              optimize: Optional[str] = None) -> tuple[list[tuple[int, ...]], int, int]:
    """Contraction path (dangling sums first, then opt_einsum's plan), FLOPs, largest
    intermediate. `optimize` overrides `optimizer_for`'s choice."""
    steps, terms, dims, flops = _reduce_dangling(inputs, output, shapes)
    largest = max(prod(d) for d in dims[len(dims) - len(steps):]) if steps else 0
    if len(terms) == 1:
        return steps + [(0,)], flops + prod(dims[0]), max(largest, prod(dims[0]))
    path, info = opt_einsum.contract_path(
        ",".join(terms) + "->" + output, *dims, shapes=True,
        optimize=optimize or optimizer_for(len(terms)))
    return (steps + [tuple(p) for p in path], flops + int(info.opt_cost),
            max(largest, int(info.largest_intermediate)))


def fold_first_path(inputs: list[str], output: str, shapes: list[tuple[int, ...]],
                    patterns: set[int]) -> Optional[list[tuple[int, ...]]]:
    """A path that contracts everything but the index patterns first, then each pattern.

    opt_einsum prices a pattern as the dense [K, O, I] tensor, so it expands the
    data through the patterns first; where a pattern scatters, meeting it last is
    a fold, one pass over the data. None where no pattern is left after the
    dangling sums.
    """
    steps, terms, dims, _ = _reduce_dangling(inputs, output, shapes)
    live: list = list(range(len(inputs)))  # operand positions, then fresh ids for results
    fresh = itertools.count(len(inputs))
    for (pos,) in steps:
        live.pop(pos)
        live.append(next(fresh))
    left = [x for x in live if x in patterns]
    if not left:
        return None
    rest = [p for p, x in enumerate(live) if x not in patterns]
    needed = set(output) | {s for p, x in enumerate(live) if x in patterns for s in terms[p]}
    sub_terms = [terms[p] for p in rest]
    sub_out = "".join(dict.fromkeys(s for t in sub_terms for s in t if s in needed))
    sub_path: list = []
    if len(rest) > 1:
        sub_path, _ = opt_einsum.contract_path(
            ",".join(sub_terms) + "->" + sub_out, *[dims[p] for p in rest], shapes=True,
            optimize=optimizer_for(len(rest)))
    path = list(steps)
    for contract in sub_path:
        others = [x for x in live if x not in patterns]
        chosen = [others[p] for p in contract]
        path.append(tuple(sorted(live.index(c) for c in chosen)))
        live = [x for x in live if x not in chosen] + [next(fresh)]
    current = next(x for x in live if x not in patterns)
    for pattern in left:
        path.append(tuple(sorted((live.index(current), live.index(pattern)))))
        live = [x for x in live if x not in (current, pattern)] + [next(fresh)]
        current = live[-1]
    return path


def gather_first_path(inputs: list[str], output: str, shapes: list[tuple[int, ...]],
                      gathers: dict[int, int]) -> list[tuple[int, ...]]:
    """A path that first contracts each pattern (a key of `gathers`) with the operand it
    selects from (its value, or what that operand has become), then plans the rest."""
    live: list = list(range(len(inputs)))
    terms = {n: term for n, term in enumerate(inputs)}
    dims = {n: dict(zip(term, shape)) for n, (term, shape) in enumerate(zip(inputs, shapes))}
    current = {n: n for n in range(len(inputs))}  # an operand -> what it has become
    path, fresh = [], len(inputs)
    for pattern, data in gathers.items():
        data = current[data]
        path.append(tuple(sorted((live.index(pattern), live.index(data)))))
        live = [x for x in live if x not in (pattern, data)]
        needed = set(output) | {s for x in live for s in terms[x]}
        terms[fresh] = "".join(dict.fromkeys(s for s in terms[data] + terms[pattern]
                                             if s in needed))
        dims[fresh] = {**dims[data], **dims[pattern]}
        current.update({k: fresh for k, v in current.items() if v == data})
        live.append(fresh)
        fresh += 1
    if len(live) == 1:
        return path if len(path) else [(0,)]
    rest, _, _ = plan_path([terms[x] for x in live], output,
                           [tuple(dims[x][s] for s in terms[x]) for x in live])
    return path + rest


def is_fold(pattern_legs: Sequence[str], value: Any, shape: Sequence[int],
            other_legs: Sequence[str], out: Sequence[str]) -> bool:
    """Whether contracting a pattern (`pattern_legs` = k, o, i) with `other_legs` into
    `out` is a fold (a scatter-add): the pattern's k and o legs are both on the other
    operand and summed here, its i leg is kept, the other legs pass through."""
    if not isinstance(value, IndexPattern) or len(pattern_legs) != 3 \
            or tuple(shape) != value.shape:
        return False
    k, o, i = pattern_legs
    if k not in other_legs or o not in other_legs or i in other_legs:
        return False
    kept = [leg for leg in other_legs if leg not in (k, o)] + [i]
    return sorted(kept) == sorted(out) and len(set(kept)) == len(kept)


def find_folds(legs: Sequence[Legs], values: Sequence[Any], shapes: Sequence[tuple[int, ...]],
               path: Sequence[Sequence[int]], output: Legs) -> tuple[int, ...]:
    """For each step of `path`: the operand position of the pattern it folds, or -1.

    `values[i]` is operand i's symbolic value (None for data operands).
    """
    folds = []
    constant = [v is not None for v in values]
    for step in walk_path(legs, constant, path, output):
        found = -1
        if len(step.taken) == 2:
            sides = tuple(zip(step.taken, step.legs, step.constants))
            for (pos, pattern_legs, is_constant), (_, other_legs, other_constant) in (
                    sides, sides[::-1]):
                if (pos < len(values) and is_constant and not other_constant
                        and is_fold(pattern_legs, values[pos], shapes[pos], other_legs,
                                    step.out)):
                    found = pos
        folds.append(found)
    return tuple(folds)

