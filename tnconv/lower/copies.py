"""A path for networks that hold a product twice: contract each copy, then the two results.

A curvature network (`tnconv.ops.copies.with_copy`) holds a network φ and its
primed copy φ': ‖g_n‖² is g·g' with g = (patches · cotangent). opt_einsum plans the
whole network and cannot know that the schedule computes the copy's half once (a
common sub-expression), so it often meets one half with the other copy's tensors
and nothing is shared. `copies_first` plans the other order: the originals among
themselves down to the legs the rest needs, the copy the same way (the schedule
runs it once: `repeated_steps`), then the two results with the remaining tensors
(a centering matrix…). `lower` keeps whichever of the two programs the cost model
prices lower, so the Gram form (patches met with their copy first) still wins
where it is cheaper.

Copies are found by name: tensor T' (T's name primed) has T's role, value and view
and T's legs with some of them primed; the half must hold at least two data
tensors (a product: a lone unfold, KFC's half, gains nothing).

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.statistics import batch_l2_network
>>> from tnconv.lower.program import lower_program
>>> net = batch_l2_network(ConvSpec(2, 3, 3, input_size=(6,)), 4)
>>> program = lower_program(net, ("input", "grad_output"), (4,))
>>> copied = copies_first(net, program, ("input", "grad_output"))
>>> [sorted(program.operands[i].name for i in copied.path[0])], len(copied.path)
([['X', 'Π1']], 5)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from tnconv.ir.network import Network, Tensor
from tnconv.ir.views import read_as
from tnconv.lower.paths import find_folds
from tnconv.lower.program import EinsumProgram, lower_program

__all__ = ["copies_first", "split_copies"]


def split_copies(net: Network) -> Optional[tuple[tuple[Tensor, ...], tuple[Tensor, ...],
                                                  tuple[Tensor, ...], dict[str, str]]]:
    """(originals, copies, others, leg map original -> copy), or None where `net` holds no
    copied product."""
    by_name = {t.name: t for t in net.tensors}
    pairs, legs = [], {}
    for t in net.tensors:
        copy = by_name.get(t.name + "'")
        if copy is None or (copy.role, copy.value, read_as(copy.view)) != (
                t.role, t.value, read_as(t.view)) or net.shape_of(copy) != net.shape_of(t):
            continue
        for leg, twin in zip(t.indices, copy.indices):
            if twin not in (leg, leg + "'") or legs.setdefault(leg, twin) != twin:
                return None
        pairs.append((t, copy))
    originals = tuple(t for t, _ in pairs)
    copies = tuple(c for _, c in pairs)
    if sum(not t.is_constant for t in originals) < 2 or all(
            legs[i] == i for i in legs):
        return None
    taken = {t.name for t in originals + copies}
    others = tuple(t for t in net.tensors if t.name not in taken)
    return originals, copies, others, legs


def _half(net: Network, tensors: tuple[Tensor, ...], rest: tuple[Tensor, ...]) -> Network:
    """The sub-network of `tensors`, its output the legs `rest` or the output still need."""
    needed = set(net.output) | {i for t in rest for i in t.indices}
    output = tuple(dict.fromkeys(i for t in tensors for i in t.indices if i in needed))
    return Network(tensors, net.sizes, output, name=net.name + "_half").pruned_sizes()


def _roles(tensors: tuple[Tensor, ...], arguments: tuple[str, ...]) -> tuple[str, ...]:
    present = {t.role for t in tensors if not t.is_constant}
    return tuple(r for r in arguments if r in present)


def _steps(program: EinsumProgram, names: list[str], prefix: str) -> list[list[str]]:
    """`program`'s path as lists of operand names, each ending in its result's name
    ("@<prefix>/<step number>")."""
    live, steps = list(names), []
    for number, contract in enumerate(program.path):
        taken = [live[p] for p in contract]
        live = [n for p, n in enumerate(live) if p not in contract]
        result = f"@{prefix}/{number}"
        live.append(result)
        steps.append(taken + [result])
    return steps


def copies_first(net: Network, program: EinsumProgram,
                 arguments: tuple[str, ...], optimize: Optional[str] = None
                 ) -> Optional[EinsumProgram]:
    """`program` along the path that contracts the originals, then the copies, then the
    two results with the other tensors (None where `net` holds no copied product)."""
    found = split_copies(net)
    if found is None:
        return None
    originals, copies, others, _ = found
    half = _half(net, originals, copies + others)
    copy_half = _half(net, copies, originals + others)
    first = lower_program(half, _roles(originals, arguments), half.output_shape, optimize)
    halves = (Tensor("@half", half.output, "@half"), Tensor("@copy", copy_half.output, "@copy"))
    last_net = Network(halves + others, net.sizes, net.output).pruned_sizes()
    last = lower_program(last_net, ("@half", "@copy") + _roles(others, arguments),
                         last_net.output_shape, optimize)
    first_steps = _steps(first, [op.name for op in first.operands], "half")
    copy_steps = _steps(first, [op.name + "'" for op in first.operands], "copy")
    renamed = {first_steps[-1][-1]: "@half", copy_steps[-1][-1]: "@copy"}
    last_steps = _steps(last, [op.name for op in last.operands], "last")
    live, path = [op.name for op in program.operands], []
    for step in first_steps + copy_steps + last_steps:
        *taken, result = step
        positions = tuple(sorted(live.index(name) for name in taken))
        live = [n for p, n in enumerate(live) if p not in positions]
        live.append(renamed.get(result, result))
        path.append(positions)
    folds = find_folds([op.indices for op in program.operands],
                       [op.value for op in program.operands],
                       [op.shape for op in program.operands], path, program.output_indices)
    return replace(program, path=tuple(path), flops=2 * first.flops + last.flops,
                   largest_intermediate=max(first.largest_intermediate,
                                            last.largest_intermediate), folds=folds)
