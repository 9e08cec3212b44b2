"""Lowering: `Network` -> `EinsumProgram` (pure: no torch).

The program holds everything execution and export need: the equation (one
opt_einsum symbol per index, so there is no 26- or 52-letter limit), the
operands in order (the caller's arguments first, then constants) with their
roles, the contraction path planned by opt_einsum with its FLOP and
largest-intermediate estimates, and the reshape to the user-facing result.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> spec = ConvSpec(2, 3, kernel_size=3, input_size=(6, 6))
>>> prog = lower_program(forward_network(spec, 1), ("input", "weight"), (1, 3, 4, 4))
>>> prog.equation
'abcef,bdcgh,gie,hjf->abdij'
>>> [op.role for op in prog.operands]
['input', 'weight', 'pattern', 'pattern']
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import Any, Hashable, Optional

from tnconv.ir.equation import spell, symbol_map, unbounded_symbol
from tnconv.ir.network import Network, Tensor
from tnconv.lower.paths import find_folds, fold_first_path, gather_first_path, plan_path
from tnconv.spec.index_pattern import IndexPattern

__all__ = ["Operand", "EinsumProgram", "lower_program", "fold_first", "gather_first"]


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
    #: Per path step, the operand position of the index pattern it folds, or -1 (a scatter step).
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


def lower_program(net: Network, arguments: tuple[str, ...], result_shape: tuple[int, ...],
                  optimize: Optional[str] = None) -> EinsumProgram:
    """`net` as an einsum program with opt_einsum's path (`optimize`: its optimiser,
    by default chosen by the operand count); `arguments` are the data roles in call order."""
    tensors = _ordered_tensors(net, arguments)
    symbols = symbol_map((index for index, _ in net.sizes), unbounded_symbol)
    equation = spell([t.indices for t in tensors], net.output, symbols)
    inputs, output = equation.split("->")[0].split(","), equation.split("->")[1]
    shapes = [net.shape_of(t) for t in tensors]
    path, flops, largest = plan_path(inputs, output, shapes, optimize)
    operands = tuple(
        Operand(t.name, t.role, t.indices, shape, t.value if t.is_constant else None,
                None if t.is_constant else t.view)
        for t, shape in zip(tensors, shapes))
    if prod(net.output_shape) != prod(result_shape):
        raise ValueError(f"result shape {result_shape} does not fit output {net.output_shape}")
    return EinsumProgram(
        equation=equation,
        operands=operands,
        output_indices=net.output,
        output_shape=net.output_shape,
        result_shape=tuple(result_shape),
        path=tuple(tuple(step) for step in path),
        flops=flops,
        largest_intermediate=largest,
        symbols=tuple((i, symbols[i]) for i, _ in net.sizes),
        scale=net.scale,
        folds=_folds(operands, path, net.output),
    )


def _folds(operands: tuple[Operand, ...], path: Any, output: tuple[str, ...]) -> tuple[int, ...]:
    return find_folds([op.indices for op in operands], [op.value for op in operands],
                      [op.shape for op in operands], path, output)


def fold_first(program: EinsumProgram) -> Optional[EinsumProgram]:
    """`program` along the path that meets every index pattern last (where that differs
    and folds a pattern: `tnconv.lower.paths.fold_first_path`), else None."""
    patterns = {pos for pos, op in enumerate(program.operands)
                if isinstance(op.value, IndexPattern)}
    if not patterns:
        return None
    inputs, output = program.equation.split("->")
    alternative = fold_first_path(inputs.split(","), output,
                                  [op.shape for op in program.operands], patterns)
    if alternative is None or tuple(map(tuple, alternative)) == program.path:
        return None
    folds = _folds(program.operands, alternative, program.output_indices)
    if all(f < 0 for f in folds):
        return None
    return replace(program, path=tuple(tuple(step) for step in alternative), folds=folds)


def _gathers(program: EinsumProgram) -> dict[int, int]:
    """Pattern position -> the argument it selects from: an index pattern whose input leg
    (its third) only that argument carries, which carries neither of its other legs, each
    of which some other operand or the output carries (a pattern with a dangling leg is a
    sum, e.g. KFAC-reduce's Σ_o Π, not a selection)."""
    found = {}
    carriers: dict[str, list[int]] = {}
    for pos, op in enumerate(program.operands):
        for leg in op.indices:
            carriers.setdefault(leg, []).append(pos)
    output = set(program.output_indices)
    for pos, op in enumerate(program.operands):
        if not isinstance(op.value, IndexPattern) or len(op.indices) != 3:
            continue
        k, o, i = op.indices
        others = [c for c in carriers[i] if c != pos]
        if len(others) != 1 or program.operands[others[0]].is_constant or i in output:
            continue
        data = program.operands[others[0]]
        if k in data.indices or o in data.indices:
            continue
        if all(leg in output or len(carriers[leg]) > 1 for leg in (k, o)):
            found[pos] = others[0]
    return found


def gather_first(program: EinsumProgram) -> Optional[EinsumProgram]:
    """`program` along the path that contracts every pattern that selects from an argument
    with that argument first (a selection: no element of the argument is multiplied by a 0
    of the pattern), where that differs from its path; else None."""
    gathers = _gathers(program)
    if not gathers:
        return None
    inputs, output = program.equation.split("->")
    path = gather_first_path(inputs.split(","), output, [op.shape for op in program.operands],
                             gathers)
    if tuple(map(tuple, path)) == program.path:
        return None
    folds = _folds(program.operands, path, program.output_indices)
    return replace(program, path=tuple(tuple(step) for step in path), folds=folds)
