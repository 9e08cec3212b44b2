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
    """One operand of the einsum: its role, legs, shape and (for constants) symbolic value."""

    name: str
    role: str
    indices: tuple[str, ...]
    shape: tuple[int, ...]
    value: Optional[Hashable] = None

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
        lines.append(f"flops    {self.flops:,}   largest intermediate {self.largest_intermediate:,}"
                     " elements")
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


def plan_path(inputs: list[str], output: str, shapes: list[tuple[int, ...]]):
    """opt_einsum's path and PathInfo for an equation given as lists of symbol strings."""
    equation = ",".join(inputs) + "->" + output
    optimize = "optimal" if len(inputs) <= 4 else "auto-hq"
    return opt_einsum.contract_path(equation, *shapes, shapes=True, optimize=optimize)


def lower(net: Network, arguments: tuple[str, ...], result_shape: tuple[int, ...]) -> EinsumProgram:
    """Lower `net` to an einsum program; `arguments` are the data roles in call order."""
    tensors = _ordered_tensors(net, arguments)
    symbols = {index: opt_einsum.get_symbol(pos) for pos, (index, _) in enumerate(net.sizes)}
    inputs = ["".join(symbols[i] for i in t.indices) for t in tensors]
    output = "".join(symbols[i] for i in net.output)
    shapes = [net.shape_of(t) for t in tensors]
    if len(tensors) == 1:
        path, flops, largest = [(0,)], prod(shapes[0]), prod(net.output_shape)
    else:
        path, info = plan_path(inputs, output, shapes)
        flops, largest = int(info.opt_cost), int(info.largest_intermediate)
    operands = tuple(
        Operand(t.name, t.role, t.indices, shape, t.value if t.is_constant else None)
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
