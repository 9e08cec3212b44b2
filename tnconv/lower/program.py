"""Lowering: `Network` -> `EinsumProgram` (pure: no torch).

The program holds everything execution and export need: the equation (one
opt_einsum symbol per index, so there is no 26- or 52-letter limit), the
operands in order (the caller's arguments first, then constants) with their
roles, the contraction path planned by opt_einsum with its FLOP and
largest-intermediate estimates, and the reshape to the user-facing result.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> spec = ConvSpec(2, 3, kernel_size=3, input_size=(6, 6))
>>> prog = lower(forward_network(spec, 1), ("input", "weight"), (1, 3, 4, 4))
>>> prog.equation
'abcef,bdcgh,gie,hjf->abdij'
>>> [op.role for op in prog.operands]
['input', 'weight', 'pattern', 'pattern']
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from math import prod
from typing import Hashable, Iterator, Optional

import opt_einsum

from tnconv.runtime.fold_steps import is_fold
from tnconv.spec.index_pattern import IndexPattern
from tnconv.ir.network import Network, Tensor

__all__ = ["Operand", "EinsumProgram", "lower", "plan_path", "walk_path", "find_folds"]


@dataclass(frozen=True)
class Operand:
    """One operand of the einsum: its role, legs, shape and (for constants) symbolic value.

    A data operand with a `view` (`tnconv.ir.views.View`) is the caller's argument
    reshaped to the view's base shape and viewed; `shape` is the view's shape.
    """

    name: str
    role: str
    indices: tuple[str, ...]
    shape: tuple[int, ...]
    value: Optional[Hashable] = None
    view: Optional[Hashable] = None

    @property
    def is_constant(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class EinsumProgram:
    """Frozen result of lowering; execution and export read only this."""

    equation: str
    operands: tuple[Operand, ...]
    output_indices: tuple[str, ...]
    output_shape: tuple[int, ...]
    result_shape: tuple[int, ...]
    path: tuple[tuple[int, ...], ...]
    flops: int
    largest_intermediate: int
    symbols: tuple[tuple[str, str], ...]
    scale: float = 1.0
    #: Per path step, the operand position of the index pattern it folds, or -1 (`tnconv.runtime.fold_steps`).
    folds: tuple[int, ...] = ()

    @property
    def arguments(self) -> tuple[Operand, ...]:
        """The data operands (a caller's argument may feed several of them)."""
        return tuple(op for op in self.operands if not op.is_constant)

    @property
    def roles(self) -> tuple[str, ...]:
        """The caller's arguments, in call order (each role once)."""
        return tuple(dict.fromkeys(op.role for op in self.arguments))

    @property
    def constants(self) -> tuple[Operand, ...]:
        return tuple(op for op in self.operands if op.is_constant)

    @property
    def dense_constants(self) -> tuple[Operand, ...]:
        """The constants execution materialises (folded patterns are not)."""
        folded = set(self.folds)
        return tuple(op for pos, op in enumerate(self.operands)
                     if op.is_constant and pos not in folded)

    def describe(self) -> str:
        """Readable summary: equation, operands, path and costs."""
        lines = [f"einsum   {self.equation}"]
        legend = ", ".join(f"{s}={name}" for name, s in self.symbols)
        lines.append(f"symbols  {legend}")
        for pos, op in enumerate(self.operands):
            lines.append(f"  [{pos}] {op.name:<8} {op.role:<14} shape {op.shape}")
        lines.append(f"path     {list(self.path)}")
        lines.append(f"flops    {self.flops:,} (opt_einsum's count: 2 per multiply-add)   "
                     f"largest intermediate {self.largest_intermediate:,} elements")
        if any(f >= 0 for f in self.folds):
            lines.append("folds    " + ", ".join(
                f"step {n} folds [{f}]" for n, f in enumerate(self.folds) if f >= 0)
                + " (scatter-adds: one pass each, not the dense count above)")
        if self.scale != 1:
            lines.append(f"scale    {self.scale!r}")
        lines.append(f"result   reshape {self.output_shape} -> {self.result_shape}")
        return "\n".join(lines)


def _ordered_tensors(net: Network, arguments: tuple[str, ...]) -> list[Tensor]:
    """Data tensors in argument order (a role may appear on several tensors), then constants."""
    data = net.data_tensors
    unknown = [t.name for t in data if t.role not in arguments]
    if unknown:
        raise ValueError(f"tensors {unknown} have roles outside the arguments {arguments}")
    ordered = [t for role in arguments for t in data if t.role == role]
    return ordered + list(net.constant_tensors)


def _reduce_dangling(inputs: list[str], output: str, shapes: list[tuple[int, ...]]):
    """Sum out, tensor by tensor, the indices no other tensor and not the output carries.

    Returns the single-operand path steps (in opt_einsum's pop-and-append
    convention), the remaining operands and shapes, and the FLOPs spent. On
    constants (e.g. Σ_o Π in KFAC-reduce) these steps run once per plan.
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


def plan_path(inputs: list[str], output: str, shapes: list[tuple[int, ...]]):
    """Contraction path (dangling sums first, then opt_einsum's plan), FLOPs, largest intermediate."""
    steps, terms, dims, flops = _reduce_dangling(inputs, output, shapes)
    largest = max(prod(d) for d in dims[len(dims) - len(steps):]) if steps else 0
    if len(terms) == 1:
        return steps + [(0,)], flops + prod(dims[0]), max(largest, prod(dims[0]))
    optimize = "optimal" if len(terms) <= 4 else "auto-hq"
    path, info = opt_einsum.contract_path(
        ",".join(terms) + "->" + output, *dims, shapes=True, optimize=optimize)
    return (steps + [tuple(p) for p in path], flops + int(info.opt_cost),
            max(largest, int(info.largest_intermediate)))


def fold_first_path(inputs: list[str], output: str, shapes: list[tuple[int, ...]],
                    patterns: set[int]) -> Optional[list[tuple[int, ...]]]:
    """A path that contracts everything but the index patterns first, then each pattern.

    opt_einsum prices a pattern as the dense [K, O, I] tensor, so it expands
    the data through the patterns first; where a pattern scatters, meeting it
    last is a fold (`tnconv.runtime.fold_steps`), one pass over the data. None where no
    pattern is left after the dangling sums.
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
            optimize="optimal" if len(rest) <= 4 else "auto-hq")
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


def walk_path(operands: tuple[Operand, ...], path: tuple[tuple[int, ...], ...],
              output: tuple[str, ...]) -> Iterator[tuple[int, list, tuple[str, ...], bool]]:
    """Walk `path` as execution runs it (opt_einsum's pop-and-append convention).

    Yields (step number, the operands taken as (operand position or -1 for an
    intermediate, legs, is constant), the step's output legs, whether every
    operand taken is constant).
    """
    live = [(pos, op.indices, op.is_constant) for pos, op in enumerate(operands)]
    for step_no, contract in enumerate(path):
        taken = [live.pop(p) for p in sorted(contract, reverse=True)]
        seen = dict.fromkeys(i for _, legs, _ in taken for i in legs)
        rest = {i for _, legs, _ in live for i in legs} | set(output)
        out = output if step_no == len(path) - 1 else tuple(i for i in seen if i in rest)
        constant = all(c for _, _, c in taken)
        live.append((-1, out, constant))
        yield step_no, taken, out, constant


def find_folds(operands: tuple[Operand, ...], path: tuple[tuple[int, ...], ...],
               output: tuple[str, ...]) -> tuple[int, ...]:
    """For each step of `path`: the operand position of the pattern it folds, or -1."""
    folds = []
    for _, taken, out, _ in walk_path(operands, path, output):
        found = -1
        if len(taken) == 2:
            for (pos, legs, constant), (_, other, other_constant) in (taken, taken[::-1]):
                if pos >= 0 and constant and not other_constant and is_fold(
                        legs, operands[pos].value, operands[pos].shape, other, out):
                    found = pos
        folds.append(found)
    return tuple(folds)


def lower(net: Network, arguments: tuple[str, ...], result_shape: tuple[int, ...]) -> EinsumProgram:
    """Lower `net` to an einsum program; `arguments` are the data roles in call order."""
    tensors = _ordered_tensors(net, arguments)
    symbols = {index: opt_einsum.get_symbol(pos) for pos, (index, _) in enumerate(net.sizes)}
    inputs = ["".join(symbols[i] for i in t.indices) for t in tensors]
    output = "".join(symbols[i] for i in net.output)
    shapes = [net.shape_of(t) for t in tensors]
    path, flops, largest = plan_path(inputs, output, shapes)
    operands = tuple(
        Operand(t.name, t.role, t.indices, shape, t.value if t.is_constant else None,
                None if t.is_constant else t.view)
        for t, shape in zip(tensors, shapes))
    if prod(net.output_shape) != prod(result_shape):
        raise ValueError(f"result shape {result_shape} does not fit output {net.output_shape}")
    program = EinsumProgram(
        equation=",".join(inputs) + "->" + output,
        operands=operands,
        output_indices=net.output,
        output_shape=net.output_shape,
        result_shape=tuple(result_shape),
        path=tuple(tuple(step) for step in path),
        flops=flops,
        largest_intermediate=largest,
        symbols=tuple((i, symbols[i]) for i, _ in net.sizes),
        scale=net.scale,
        folds=find_folds(operands, path, net.output),
    )
    patterns = {pos for pos, op in enumerate(operands) if isinstance(op.value, IndexPattern)}
    alternative = fold_first_path(inputs, output, shapes, patterns) if patterns else None
    if alternative is not None and alternative != list(program.path):
        return _cheaper(program, replace(program, path=tuple(alternative), folds=find_folds(
            operands, alternative, net.output)))
    return program


#: The fold-first path is taken only where the tensor it folds is at most this many
#: times the largest argument: a larger one (depthwise and 3×3 layers, ∏K·C_in > C_out)
#: measured slower than contracting with the dense patterns, whatever the FLOP count.
FOLD_GROWTH_LIMIT = 4


def _cheaper(program: EinsumProgram, folding: EinsumProgram) -> EinsumProgram:
    """`folding` (the fold-first path) where it folds, stays small and the cost model prefers it."""
    from tnconv.lower.cost import program_cost  # cost lowers networks: imported here, not at the top

    if all(f < 0 for f in folding.folds):
        return program
    cost = program_cost(folding)
    largest_argument = max(prod(op.shape) for op in folding.arguments)
    if (cost.total >= program_cost(program).total
            or cost.largest_intermediate > FOLD_GROWTH_LIMIT * largest_argument):
        return program
    return replace(folding, flops=2 * cost.flops, largest_intermediate=cost.largest_intermediate)
