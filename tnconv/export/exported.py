"""Export: a compiled operation as a plain einsum that other frameworks evaluate.

`ExportedEinsum` holds no torch object: the equation (ASCII letters when 52
suffice, otherwise opt_einsum's unicode symbols; `alphabet` says which), the
operands in order with their role (the caller's arguments, or ``"constant"``
for index patterns and fused constants, as float64 numpy arrays with the
network's scalar factor folded into one of them), how each argument is
reshaped into its operands, the output reshape and the contraction path.
This module imports no torch, so `load_einsum` works where torch is absent.

`Compiled.to_einsum()` exports batch-free: the batch leg stays an open index,
`batch` (a `BatchLegs`) says which symbols and axes carry it, every shape is
stored per sample (at batch size 1), and `evaluate` takes arrays of any batch
size. `to_einsum(batch_size=n)` exports fixed shapes for batch size n
(`batch` is None).

>>> import numpy as np, tnconv
>>> spec = tnconv.ConvSpec(2, 3, kernel_size=3, input_size=(6, 6))
>>> exported = tnconv.compile("forward", spec, rewrite=False).to_einsum()
>>> exported.equation, exported.alphabet
('abcde,bfcgh,gid,hje->abfij', 'ascii')
>>> [op.role for op in exported.operands]
['input', 'weight', 'constant', 'constant']
>>> float(exported.evaluate(np.ones((1, 2, 6, 6)), np.ones((3, 2, 3, 3)))[0, 0, 0, 0])
18.0
>>> exported.evaluate(np.ones((5, 2, 6, 6)), np.ones((3, 2, 3, 3))).shape  # any batch size
(5, 3, 4, 4)
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import reduce
from math import prod
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import opt_einsum

from tnconv.errors import TNConvError, argument_error, positive_int
from tnconv.export.archive import MAX_BYTES

__all__ = ["ExportedEinsum", "ExportedOperand", "BatchLegs", "BACKENDS", "export_program",
           "from_compiled", "load_einsum"]

#: Array libraries `ExportedEinsum.evaluate` runs on.
BACKENDS = ("numpy", "jax", "torch")
_Shape = tuple[int, ...]


@dataclass(frozen=True, eq=False)
class ExportedOperand:
    """One operand: name, role, its term of the equation, shape, and where its data comes from.

    A data operand reads the caller's argument number `argument` reshaped to
    `shape`; a constant (role ``"constant"``) carries its float64 `value`.
    """

    name: str
    role: str
    subscripts: str
    shape: _Shape
    argument: Optional[int] = None
    value: Optional[np.ndarray] = None


@dataclass(frozen=True)
class BatchLegs:
    """Where a batch-free export carries the batch size N (its shapes are stored at N = 1).

    `symbols`: the equation's symbols whose size is their stored size times N
    (the batch leg, or legs merged with it); `arguments` and `result`: per
    argument, and for the result, the axes whose size is the stored size times
    N; the result is multiplied by N ** `scale_power` (-1 for a mean over the
    batch).
    """

    symbols: str
    arguments: tuple[tuple[int, ...], ...]
    result: tuple[int, ...]
    scale_power: int = 0


def _at_batch(shape: _Shape, axes: Sequence[int], batch: int) -> _Shape:
    return tuple(size * batch if axis in axes else size for axis, size in enumerate(shape))


def _shown(shape: _Shape, axes: Sequence[int]) -> str:
    """`shape` with its batch axes written as N (or kN for a leg merged with the batch)."""
    if not axes:
        return str(tuple(shape))
    return "(" + ", ".join(("N" if size == 1 else f"{size}N") if axis in axes else str(size)
                           for axis, size in enumerate(shape)) + ")"


@dataclass(frozen=True, eq=False)
class ExportedEinsum:
    """A framework-free einsum: evaluate it on numpy, JAX or torch arrays, or save it."""

    equation: str
    alphabet: str
    operands: tuple[ExportedOperand, ...]
    arguments: tuple[str, ...]
    argument_shapes: tuple[_Shape, ...]
    output_shape: _Shape
    result_shape: _Shape
    path: tuple[tuple[int, ...], ...]
    index_names: tuple[tuple[str, str], ...] = ()
    operation: str = ""
    spec: str = ""
    #: None for a fixed-shape export; where the batch goes for a batch-free one.
    batch: Optional[BatchLegs] = None

    @property
    def constants(self) -> tuple[ExportedOperand, ...]:
        return tuple(op for op in self.operands if op.argument is None)

    @property
    def batch_free(self) -> bool:
        """True when `evaluate` takes any batch size (shapes are stored at batch size 1)."""
        return self.batch is not None

    def batch_axes(self, subscripts: str) -> list[int]:
        """The axes of a term of the equation that carry the batch (none when not batch-free)."""
        symbols = self.batch.symbols if self.batch is not None else ""
        return [axis for axis, symbol in enumerate(subscripts) if symbol in symbols]

    def operand_arrays(self, *arrays: Any, backend: str = "numpy") -> list[Any]:
        """The einsum's operands on `backend`: arguments reshaped, constants converted."""
        return self._operands(arrays, backend)[0]

    def _operands(self, arrays: Sequence[Any], backend: str) -> tuple[list[Any], int]:
        if backend not in BACKENDS:
            raise argument_error("ExportedEinsum.evaluate", "backend", backend,
                                 ", ".join(repr(b) for b in BACKENDS))
        batch = self._check_arguments(arrays)
        arrays_, convert = _CONVERTERS[backend](arrays)
        return [convert(op.value) if op.argument is None else arrays_[op.argument].reshape(
                    _at_batch(op.shape, self.batch_axes(op.subscripts), batch))
                for op in self.operands], batch

    def evaluate(self, *arrays: Any, backend: str = "numpy") -> Any:
        """Contract along `path` on `backend` and reshape to the result shape (at the batch size
        of the arrays, for a batch-free export)."""
        operands, batch = self._operands(arrays, backend)
        if backend == "numpy" and self.alphabet == "ascii":
            result = np.einsum(self.equation, *operands, optimize=["einsum_path", *self.path])
        else:
            result = opt_einsum.contract(self.equation, *operands, optimize=list(self.path),
                                         backend=backend)
        if self.batch is None:
            return result.reshape(self.result_shape)
        if self.batch.scale_power:
            result = result * float(batch) ** self.batch.scale_power
        return result.reshape(_at_batch(self.result_shape, self.batch.result, batch))

    def save(self, path: str | Path) -> Path:
        """Write JSON metadata and the constants to one ``.npz`` file (no pickle); return the
        path."""
        from tnconv.export.file import save

        return save(self, path)

    def describe(self) -> str:
        """Readable summary: equation, operands and path."""
        lines = [f"einsum   {self.equation}   ({self.alphabet} symbols)"]
        for pos, op in enumerate(self.operands):
            source = (f"argument {op.argument} ({self.arguments[op.argument]})"
                      if op.argument is not None else "constant")
            shape = _shown(op.shape, self.batch_axes(op.subscripts))
            lines.append(f"  [{pos}] {op.name:<8} {op.role:<12} shape {shape}  {source}")
        lines.append(f"path     {[list(step) for step in self.path]}")
        output = _shown(self.output_shape, self.batch_axes(self.equation.split("->")[1]))
        lines.append(f"result   reshape {output} -> "
                     f"{_shown(self.result_shape, self.batch.result if self.batch else ())}")
        if self.batch is not None:
            power = self.batch.scale_power
            lines.append("batch    any size N" + (f"; result times N**{power}" if power else ""))
        return "\n".join(lines)

    def _check_arguments(self, arrays: Sequence[Any]) -> int:
        """The batch size of `arrays` (1 for a fixed-shape export), after checking their shapes."""
        where = f"ExportedEinsum.evaluate ({self.operation or 'einsum'})"
        if len(arrays) != len(self.arguments):
            raise TNConvError(f"{where}: expected {len(self.arguments)} arrays "
                              f"({', '.join(self.arguments)}), got {len(arrays)}")
        axes = self.batch.arguments if self.batch is not None else ((),) * len(arrays)
        shapes = [tuple(getattr(array, "shape", np.shape(array))) for array in arrays]
        batch = next((got[a] // shape[a] for got, shape, ax in
                      zip(shapes, self.argument_shapes, axes) for a in ax
                      if len(got) == len(shape)), 1)
        for role, got, shape, ax in zip(self.arguments, shapes, self.argument_shapes, axes):
            if got != _at_batch(shape, ax, batch):
                raise argument_error(where, role, f"array of shape {got}",
                                     f"shape {_shown(shape, ax)}" if ax else f"shape {shape}")
        if batch == 0 and self.batch is not None and self.batch.scale_power < 0:
            role = next(r for r, ax in zip(self.arguments, axes) if ax)
            raise argument_error(where, role, "an array with no samples",
                                 "at least one sample (the result is a mean over the batch)")
        return batch


# ------------------------------------------------------------------ backends
def _numpy_arrays(arrays: Sequence[Any]):
    arrays = [np.asarray(a) for a in arrays]
    dtype = np.result_type(*arrays)
    dtype = dtype if np.issubdtype(dtype, np.inexact) else np.float64
    return arrays, lambda value: value.astype(dtype, copy=False)


def _torch_arrays(arrays: Sequence[Any]):
    import torch

    tensors = [torch.as_tensor(a) for a in arrays]
    dtype = reduce(torch.promote_types, [t.dtype for t in tensors])
    dtype = dtype if dtype.is_floating_point or dtype.is_complex else torch.float64
    device = tensors[0].device
    tensors = [t.to(dtype) for t in tensors]
    return tensors, lambda value: torch.tensor(value, dtype=dtype, device=device)


def _jax_arrays(arrays: Sequence[Any]):
    try:
        import jax.numpy as jnp
    except ImportError:
        raise TNConvError("ExportedEinsum.evaluate: backend 'jax' needs JAX, which is not "
                          "installed (pip install jax)") from None
    arrays = [jnp.asarray(a) for a in arrays]
    dtype = jnp.result_type(*arrays)
    return arrays, lambda value: jnp.asarray(value, dtype=dtype)


_CONVERTERS = {"numpy": _numpy_arrays, "torch": _torch_arrays, "jax": _jax_arrays}


# ------------------------------------------------------------------ building
def _alphabet(equation: str) -> tuple[dict[str, str], str]:
    """Map the program's symbols, in order of appearance, to ASCII letters when 52 suffice."""
    used = list(dict.fromkeys(s for s in equation if s not in ",->"))
    if len(used) <= len(string.ascii_letters):
        return dict(zip(used, string.ascii_letters)), "ascii"
    return {s: s for s in used}, "unicode"


def _fold_scale(scale: float, values: list, terms: list[str], path: list[tuple[int, ...]]):
    """Multiply `scale` into the smallest constant; add a 0-d constant only if there is none."""
    if scale == 1:
        return values, terms, path
    constants = [pos for pos, v in enumerate(values) if v is not None]
    if constants:
        pos = min(constants, key=lambda p: values[p].size)
        values = [v * scale if p == pos else v for p, v in enumerate(values)]
        return values, terms, path
    return values + [np.array(scale, dtype=np.float64)], terms + [""], _append_operand(
        path, len(values))


def _append_operand(path: list[tuple[int, ...]], count: int) -> list[tuple[int, ...]]:
    """`path` over `count` operands, rewritten for one more operand at the end, multiplied last."""
    short, full = list(range(count)), list(range(count + 1))
    new_path = []
    for number, step in enumerate(path):
        taken = [short[p] for p in step]
        new_path.append(tuple(full.index(t) for t in taken))
        short = [t for t in short if t not in taken] + [count + 1 + number]
        full = [t for t in full if t not in taken] + [count + 1 + number]
    return new_path + [(0, 1)]


def _operand(pos: int, program: Any, term: str, value: Optional[np.ndarray],
             arguments: Sequence[str]) -> ExportedOperand:
    """Operand `pos` (or the appended scale constant, past the program's operands)."""
    if value is None:
        op = program.operands[pos]
        return ExportedOperand(op.name, op.role, term, op.shape, list(arguments).index(op.role))
    name = program.operands[pos].name if pos < len(program.operands) else "scale"
    expected = program.operands[pos].shape if pos < len(program.operands) else ()
    if value.shape != tuple(expected):
        raise TNConvError(f"export: constant {name!r} materialises with shape {value.shape}, "
                          f"its operand has shape {tuple(expected)}")
    value.setflags(write=False)
    return ExportedOperand(name, "constant", term, value.shape, None, value)


def export_program(program: Any, arguments: Sequence[str], argument_shapes: Sequence[_Shape],
                   *, operation: str = "", spec: str = "") -> ExportedEinsum:
    """An `ExportedEinsum` of a lowered `EinsumProgram` (every operand dense)."""
    from tnconv.ir.constants import to_numpy

    inputs, output = program.equation.split("->")
    letters, alphabet = _alphabet(program.equation)
    name_of = {s: name for name, s in program.symbols}
    values = [np.array(to_numpy(op.value), dtype=np.float64) if op.is_constant else None
              for op in program.operands]
    values, terms, path = _fold_scale(program.scale, values, inputs.split(","),
                                      list(program.path))
    operands = [_operand(pos, program, "".join(letters[s] for s in term), value, arguments)
                for pos, (term, value) in enumerate(zip(terms, values))]
    equation = ",".join(op.subscripts for op in operands) + "->" + "".join(
        letters[s] for s in output)
    _check_reshapes(operands, argument_shapes, program.result_shape, program.output_shape)
    return ExportedEinsum(
        equation=equation, alphabet=alphabet, operands=tuple(operands),
        arguments=tuple(arguments), argument_shapes=tuple(tuple(s) for s in argument_shapes),
        output_shape=tuple(program.output_shape), result_shape=tuple(program.result_shape),
        path=tuple(tuple(step) for step in path),
        index_names=tuple((letters[s], name_of[s]) for s in letters),
        operation=operation, spec=spec)


def _check_reshapes(operands, argument_shapes, result_shape, output_shape) -> None:
    for op in operands:
        if op.argument is not None and prod(op.shape) != prod(argument_shapes[op.argument]):
            raise TNConvError(f"export: operand {op.name!r} of shape {op.shape} cannot be read "
                              f"from argument shape {tuple(argument_shapes[op.argument])}")
    if prod(result_shape) != prod(output_shape):
        raise TNConvError(f"export: result shape {result_shape} does not fit {output_shape}")


def from_compiled(compiled: Any, batch_size: Optional[int] = None) -> ExportedEinsum:
    """`compiled.to_einsum(batch_size)`: batch-free when `batch_size` is None, else fixed shapes
    for that batch size."""
    operation = compiled.operation
    if batch_size is None:
        from tnconv.export.batch_free import batch_free_export

        return batch_free_export(compiled)
    positive_int(f"to_einsum ({operation.name})", "batch_size", batch_size)
    program = compiled.export_program(batch_size)
    shapes = operation.argument_shapes(compiled.spec, batch_size, **compiled.options)
    return export_program(program, operation.arguments, shapes,
                          operation=operation.name, spec=str(compiled.spec))


def load_einsum(path: str | Path, *, max_bytes: int = MAX_BYTES) -> ExportedEinsum:
    """Read a file written by `ExportedEinsum.save`, validating it strictly (needs no torch).

    The file is treated as hostile: anything outside these limits, and any
    damage the zip or npy readers find, raises one `TNConvError` that names
    the file and the reason, before the memory or time it would cost is spent.

    - Only a regular file is opened (a FIFO, a device or a folder is refused
      without blocking).
    - The zip directory is at most 1 MiB (``archive.MAX_DIRECTORY_BYTES``)
      and lists at most 10,001 members (``archive.MAX_MEMBERS``); members are
      only ``metadata.npy`` and ``constant_<n>.npy`` (no folders or paths),
      each once, not encrypted, stored or deflated.
    - ``max_bytes`` (default 2**30 bytes, 1 GiB: ``archive.MAX_BYTES``) bounds
      both the bytes all members decompress to, as the zip directory states
      them (checked before any member is read; a member never yields more
      than it states), and the bytes the constants take once converted to
      float64 (checked before any constant is read). Loading needs at most
      about ``max_bytes`` plus the largest stored constant.
    - The metadata is at most 1 MiB (``file.MAX_METADATA_BYTES``) of UTF-8
      JSON, nested at most 8 levels (``validate.MAX_DEPTH``), with at most
      10,000 operands (``validate.MAX_OPERANDS``), text fields of at most
      100,000 characters (``validate.MAX_TEXT``), shapes and intermediates of
      at most 64 dimensions (``validate.MAX_DIMS``), a path of at most 2n + 2
      steps for n operands, a batch scale power of at most 8 in absolute value
      (``validate.MAX_SCALE_POWER``), and every operand, path intermediate and
      result at most 2**31 elements (``validate.MAX_ELEMENTS``; at batch size 1
      for a batch-free export). Its validation is linear in its size.
    - Each ``.npy`` header is at most 10,000 bytes
      (``archive.MAX_HEADER_BYTES``), format 1.0 or 2.0, of a numeric dtype
      (bool, int, uint, float), with the shape the metadata states, and the
      member holds exactly the bytes that shape needs.
    """
    from tnconv.export.file import load

    return load(path, max_bytes=max_bytes)
