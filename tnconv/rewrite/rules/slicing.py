"""Sub-tensor slicing: restrict one index to a subset of its values everywhere it appears.

Data tensors get a view step (a strided `Slice` when the kept positions form
an arithmetic progression, a gathering `Take` otherwise); index patterns are
restricted symbolically (still an `IndexPattern` when the result is one, a
`SlicedConstant` otherwise); the index's size shrinks, also in the output.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import unfold_network
>>> net = slice_index(unfold_network(ConvSpec(1, 1, kernel_size=1, stride=2, input_size=(7,)), 1),
...                   "i1", [0, 2, 4, 6])
>>> net.tensor("X").view.describe(), net.tensor("Π1").value.describe()
('reshape(1, 1, 1, 7) -> slice(dim 3, 0:7:2)', 'K=1 S=1 D=1 P=(0,0) I=4 O=4 zeros')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

import numpy as np

from tnconv.ir.constants import register_constant, to_numpy
from tnconv.errors import argument_error
from tnconv.spec.index_pattern import IndexPattern
from tnconv.ir.network import Network, Tensor
from tnconv.ir.views import Slice, Take, ViewStep
from tnconv.rewrite.rules._common import add_view

__all__ = ["slice_index", "SlicedConstant", "restrict_pattern"]


@dataclass(frozen=True)
class SlicedConstant:
    """A constant restricted to some positions along one axis."""

    base: Hashable
    axis: int
    indices: tuple[int, ...]
    shape: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        return np.take(to_numpy(self.base), self.indices, axis=self.axis)

    def describe(self) -> str:
        return f"{len(self.indices)} positions of axis {self.axis} of a constant"


register_constant(SlicedConstant, SlicedConstant.to_numpy)


def _fit(src: np.ndarray, input_size: int) -> Optional[IndexPattern]:
    """The zero-padded `IndexPattern` with these source indices, if there is one."""
    kernel, out = src.shape
    first = int(src[0, 0])
    stride = int(src[0, 1]) - first if out > 1 else 1
    dilation = int(src[1, 0]) - first if kernel > 1 else 1
    if first < 0 or stride < 1 or dilation < 1:
        return None
    right = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 + first - input_size)
    fitted = IndexPattern(kernel, stride, dilation, (-first, right), input_size, out)
    return fitted if np.array_equal(fitted.source_indices(), src) else None


def restrict_pattern(pattern: IndexPattern, axis: int, kept: tuple[int, ...]) -> Hashable:
    """`pattern` restricted to positions `kept` of its `axis` (0: k, 1: o, 2: i)."""
    src = pattern.source_indices()
    shape = list(pattern.shape)
    shape[axis] = len(kept)
    if axis < 2:
        src = np.take(src, kept, axis=axis)
    else:
        where = np.full(pattern.input_size + 1, -1)
        where[list(kept)] = np.arange(len(kept))
        src = where[src]
    fitted = _fit(src, shape[2]) if min(shape) > 0 else None
    return fitted if fitted is not None else SlicedConstant(pattern, axis, kept, tuple(shape))


def _data_step(dim: int, kept: tuple[int, ...]) -> ViewStep:
    steps = {b - a for a, b in zip(kept, kept[1:])}
    if len(steps) <= 1:
        step = steps.pop() if steps else 1
        return Slice(dim, kept[0], kept[-1] + 1, step)
    return Take(dim, kept)


def _restricted(net: Network, t: Tensor, index: str, kept: tuple[int, ...]) -> Tensor:
    axis = t.indices.index(index)
    if not t.is_constant:
        return add_view(net, t, (_data_step(axis, kept),), t.indices)
    if t.role == "pattern" and isinstance(t.value, IndexPattern):
        value = restrict_pattern(t.value, axis, kept)
    else:
        shape = list(net.shape_of(t))
        shape[axis] = len(kept)
        value = SlicedConstant(t.value, axis, kept, tuple(shape))
    role = "pattern" if isinstance(value, IndexPattern) else "constant"
    return Tensor(t.name, t.indices, role, value)


def slice_index(net: Network, index: str, indices: Sequence[int]) -> Network:
    """Restrict `index` to the values `indices` (increasing) on every tensor that carries it."""
    kept = tuple(int(i) for i in indices)
    size = net.size_map.get(index)
    if size is None:
        raise argument_error("slice_index", "index", index, ", ".join(net.size_map))
    if not kept or any(b <= a for a, b in zip(kept, kept[1:])) or kept[0] < 0 or kept[-1] >= size:
        raise argument_error("slice_index", "indices", list(indices),
                             f"a non-empty increasing sequence of values in [0, {size})")
    tensors = tuple(_restricted(net, t, index, kept) if index in t.indices else t
                    for t in net.tensors)
    sizes = tuple((i, len(kept) if i == index else s) for i, s in net.sizes)
    return net.replace(tensors=tensors, sizes=sizes).validate()
