"""Batch-free export: one `ExportedEinsum` that evaluates on every batch size.

The operation is lowered at a pair of batch sizes (`PROBE_PAIRS`). Where the
two programs agree in everything but the sizes of some indices, and each of those
sizes is the batch size times a per-sample size (the batch leg, or a leg
merged with it), those indices are the batch: the export keeps them open,
stores every shape per sample (at batch size 1) and records in a `BatchLegs`
which symbols and which argument and result axes scale with the batch, and
the power of the batch size in the scale (-1 for a mean over the batch).
Rewrites priced by the cost model can choose differently at the two sizes
(constant fusion for KFC flips near small batches); then the next pair is
tried, and after the last the unrewritten network is exported, whose
structure never depends on the batch size. The contraction path is the one
planned at the larger size of the pair.

>>> import numpy as np, tnconv
>>> spec = tnconv.ConvSpec(2, 3, kernel_size=3, input_size=(6, 6))
>>> exported = batch_free_export(tnconv.compile("kfac_reduce", spec))
>>> exported.argument_shapes, exported.batch.arguments, exported.batch.scale_power
(((1, 2, 6, 6),), ((0,),), -1)
>>> [exported.evaluate(np.ones((n, 2, 6, 6))).shape for n in (1, 7)]
[(1, 18, 18), (1, 18, 18)]
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Optional

from tnconv.errors import TNConvError
from tnconv.export.exported import BatchLegs, ExportedEinsum, export_program
from tnconv.export.validate import MAX_SCALE_POWER

__all__ = ["batch_free_export", "PROBE_PAIRS"]

#: The pairs of batch sizes the program is lowered at, in order (> 1: a batch of one
#: squeezes its leg away).
PROBE_PAIRS = ((2, 3), (4, 5))
_Shape = tuple[int, ...]
_Pair = tuple[int, int]


def _per_sample(small: _Shape, large: _Shape,
                pair: _Pair) -> Optional[tuple[tuple[int, ...], _Shape]]:
    """The axes that scale with the batch and the per-sample shape, or None where a size
    changes with the batch size in another way."""
    (b1, b2), axes, shape = pair, [], []
    if len(small) != len(large):
        return None
    for axis, (x, y) in enumerate(zip(small, large)):
        if x != y:
            if x % b1 or y % b2 or x // b1 != y // b2:
                return None
            axes.append(axis)
        shape.append(x // b1 if x != y else x)
    return tuple(axes), tuple(shape)


def _batch_symbols(small: Any, large: Any, pair: _Pair) -> Optional[str]:
    """The program symbols that carry the batch, or None where the programs differ otherwise."""
    if small.equation != large.equation or len(small.operands) != len(large.operands):
        return None
    terms = large.equation.split("->")[0].split(",")
    symbols: dict[str, None] = {}
    for term, a, b in zip(terms, small.operands, large.operands):
        scaling = _per_sample(a.shape, b.shape, pair)
        if (a.name, a.role, a.value) != (b.name, b.role, b.value) or scaling is None:
            return None
        if a.is_constant and scaling[0]:
            return None  # a constant that grows with the batch has no per-sample form
        symbols.update((term[axis], None) for axis in scaling[0])
    return "".join(symbols)


def _scale_power(small: float, large: float, pair: _Pair) -> Optional[int]:
    """p with scale(batch) = base * batch**p at both probes, or None."""
    (b1, b2) = pair
    for power in sorted(range(-MAX_SCALE_POWER, MAX_SCALE_POWER + 1), key=abs):
        if math.isclose(small * b1 ** -power, large * b2 ** -power, rel_tol=1e-12):
            return power
    return None


def _probes(compiled: Any):
    """(compiled object, pair of batch sizes) to try, in order."""
    for pair in PROBE_PAIRS:
        yield compiled, pair
    if compiled.rewrite:
        from tnconv.compiler import compile

        yield compile(compiled.operation.name, compiled.spec, strategy=compiled.strategy,
                      rewrite=False, **compiled.options), PROBE_PAIRS[0]


def batch_free_export(compiled: Any) -> ExportedEinsum:
    """`compiled.to_einsum()`: an export whose batch leg stays open (see the module docstring)."""
    operation, spec, options = compiled.operation, compiled.spec, compiled.options
    for source, pair in _probes(compiled):
        arguments = [_per_sample(*shapes, pair) for shapes in zip(
            *(operation.argument_shapes(spec, b, **options) for b in pair))]
        result = _per_sample(*(operation.result_shape(spec, b, **options) for b in pair), pair)
        small, large = (source.export_program(b) for b in pair)
        symbols = _batch_symbols(small, large, pair)
        power = _scale_power(small.scale, large.scale, pair)
        if symbols is not None and power is not None and result is not None and all(arguments):
            return _per_sample_export(compiled, large, pair[1], symbols, power, arguments,
                                      result)
    tried = ", ".join(f"{a} and {b}" for a, b in PROBE_PAIRS)
    raise TNConvError(f"to_einsum ({operation.name}): the programs for batch sizes {tried} "
                      "differ in more than the batch size, so there is no batch-free export; "
                      "pass batch_size= for fixed shapes")


def _per_sample_export(compiled: Any, program: Any, batch: int, symbols: str, power: int,
                       arguments: list, result: tuple) -> ExportedEinsum:
    """The export of `program` (lowered at `batch`) with every shape divided to one sample."""
    operation = compiled.operation
    base = program.scale * batch ** -power
    exported = export_program(
        replace(program, scale=base), operation.arguments,
        operation.argument_shapes(compiled.spec, batch, **compiled.options),
        operation=operation.name, spec=str(compiled.spec))
    if not any(axes for axes, _ in arguments):
        return exported  # no argument carries a batch: the same shapes at every batch size
    letter_of = {name: letter for letter, name in exported.index_names}
    name_of = {symbol: name for name, symbol in program.symbols}
    letters = "".join(letter_of[name_of[s]] for s in symbols)

    def unscaled(shape: _Shape, subscripts: str) -> _Shape:
        return tuple(size // batch if s in letters else size for s, size in zip(subscripts, shape))

    return replace(
        exported,
        operands=tuple(replace(op, shape=unscaled(op.shape, op.subscripts))
                       for op in exported.operands),
        argument_shapes=tuple(shape for _, shape in arguments),
        output_shape=unscaled(exported.output_shape, exported.equation.split("->")[1]),
        result_shape=result[1],
        batch=BatchLegs(letters, tuple(axes for axes, _ in arguments), result[0], power))
