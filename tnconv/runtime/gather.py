"""Runtime of the gather family: selections applied by `index_select` / `index_add_`.

A selection's register holds the kept indices (int64). `Gather` indexes the
data along its own dims (one advanced index where they are adjacent) and
multiplies the fresh result by the sample weights in place; with a `source`
plan it takes the kept rows inside the argument's view, before the windows
(`tnconv.lower.schedule.gather_views`), each weight applied to the rows taken.
`IndexAdd` adds the (weighted) data into zeros at the kept positions;
`OneHotEinsum` builds the one-hot tensors and runs one einsum.

>>> import torch
>>> from tnconv.lower.schedule.gather import Gather
>>> x, idx, w = torch.arange(6.0).reshape(2, 3), torch.tensor([2, 0]), torch.tensor([10.0, 1.0])
>>> run = bind(Gather((0, 1, 2), 3, (1,), (0, 1), (((0,), (1, 2)),), (0,)), [])
>>> run([x, idx, w, None]).tolist()
[[20.0, 0.0], [50.0, 3.0]]
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from tnconv.ir.views import View
from tnconv.lower.schedule.gather import Gather, IndexAdd, OneHotEinsum
from tnconv.runtime.take import strip_rows, take

__all__ = ["bind"]

Run = Callable[[Sequence[Any]], torch.Tensor]


def bind(step: Any, registers: Sequence[Any], device: Any = None) -> Run:
    """The call of a gather-family step."""
    if isinstance(step, Gather):
        return _gather(step) if step.source is None else _gather_inside(step)
    if isinstance(step, IndexAdd):
        return _index_add(step)
    return _one_hot(step)


def _scaled(t: torch.Tensor, weights: Sequence[Any], layouts: tuple, fresh: bool) -> torch.Tensor:
    """`t` times each weight vector laid out by `layouts` (in place where `t` is fresh)."""
    for w, (order, shape) in zip(weights, layouts):
        w = w.permute(order).reshape(shape)
        t = t.mul_(w) if fresh else t * w
        fresh = True
    return t


def _gather(step: Gather) -> Run:
    data, *rest = step.inputs
    selections, weights = rest[:len(step.dims)], rest[len(step.dims):]
    dims, layouts, permutation = step.dims, step.weights, step.permutation
    count = len(dims)

    def run(r: Sequence[Any]) -> torch.Tensor:
        x = r[data]
        if count == 1:
            y = take(x, dims[0], r[selections[0]])
        elif step.adjacent:  # one advanced index over the grid of kept positions
            grid = tuple(r[sel].view(*(-1 if j == k else 1 for k in range(count)))
                         for j, sel in enumerate(selections))
            y = x[(slice(None),) * dims[0] + grid]
        else:
            y = x
            for dim, sel in zip(dims, selections):
                y = take(y, dim, r[sel])
        return _scaled(y, [r[w] for w in weights], layouts, fresh=True).permute(permutation)

    return run


def _along(w: torch.Tensor, dim: int, ndim: int) -> torch.Tensor:
    """`w` laid along dim `dim` of an `ndim`-dimensional tensor."""
    return w.view(-1, *(1,) * (ndim - dim - 1))


def _gather_inside(step: Gather) -> Run:
    """A `source` plan: view steps and row takes, each weight vector (one per selection, on
    its s leg) multiplied into the rows its selection took; then the `final` selection on
    the final view, its result laid out in `layout`."""
    data, *rest = step.inputs
    selections, weights = rest[:len(step.dims)], rest[len(step.dims):]
    by_selection = dict(zip(step.weight_of, weights))
    source, permutation, final, layout = step.source, step.permutation, step.final, step.layout
    if final >= 0:
        at = layout.index(step.dims[final])
        back = tuple(layout.index(d) for d in range(len(layout)))
        permutation = tuple(back[p] for p in permutation)

    def run(r: Sequence[Any]) -> torch.Tensor:
        x = r[data]
        for op in source:
            if isinstance(op, View):
                x = op.apply_torch(x)
                continue
            rows = strip_rows(r[selections[op.selection]], op.step, op.size, op.dilation)
            x = take(x, op.dim, rows)
            w = by_selection.get(op.selection)
            if w is not None:
                scale = r[w].repeat_interleave(op.size) if op.size > 1 else r[w]
                x.mul_(_along(scale, op.dim, x.dim()))
        if final >= 0:  # contiguous in `layout` order, as the next product reads it
            x = take(x.permute(layout), at, r[selections[final]]).contiguous()
            w = by_selection.get(final)
            if w is not None:
                x.mul_(_along(r[w], at, x.dim()))
        return x.permute(permutation)

    return run


def _index_add(step: IndexAdd) -> Run:
    data, selection, *weights = step.inputs
    permutation, dim, shape, layouts = step.permutation, step.dim, step.shape, step.weights

    def run(r: Sequence[Any]) -> torch.Tensor:
        x = _scaled(r[data].permute(permutation), [r[w] for w in weights], layouts, fresh=False)
        return x.new_zeros(shape).index_add_(dim, r[selection], x)

    return run


def _one_hot(step: OneHotEinsum) -> Run:
    inputs, equation, sizes = step.inputs, step.equation, dict(step.sizes)
    like = next((n for n in range(len(inputs)) if n not in sizes), None)

    def run(r: Sequence[Any]) -> torch.Tensor:
        dtype = torch.get_default_dtype() if like is None else r[inputs[like]].dtype
        operands = [torch.nn.functional.one_hot(r[i], sizes[n]).to(dtype) if n in sizes
                    else r[i] for n, i in enumerate(inputs)]
        return torch.einsum(equation, *operands)

    return run
