"""Lowering: `Network` -> `EinsumProgram` (pure: no torch).

The program holds everything execution and export need: the equation (one
opt_einsum symbol per index, so there is no 26- or 52-letter limit), the
operands in order (the caller's arguments first, then constants) with their
roles, the contraction path planned by opt_einsum with its FLOP and
largest-intermediate estimates, and the reshape to the user-facing result.

>>> from tnconv.spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> spec = ConvSpec(2, 3, kernel_size=3, input_size=(6, 6))
>>> prog = lower(forward_network(spec, 1), ("input", "weight"), (1, 3, 4, 4))
>>> prog.equation
'abcef,bdcgh,gie,hjf->abdij'
>>> [op.role for op in prog.operands]
['input', 'weight', 'pattern', 'pattern']
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Hashable, Optional

import opt_einsum

from .network import Network, Tensor

__all__ = ["Operand", "EinsumProgram", "lower", "plan_path"]


@dataclass(frozen=True)
class Operand:
    """One operand of the einsum: its role, legs, shape and (for constants) symbolic value.

    A data operand with a `view` (`tnconv.views.View`) is the caller's argument
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
    return EinsumProgram(
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
    )
