"""Symbolic memory layouts: shape, strides and offset of torch views, computed without torch.

The schedule decides from layouts whether a data view reads its argument in place
(a chain of slices, windows and merging reshapes is one strided view), which
strided sums can run as one masked product, and whether a result is only a view
of an argument. The rules are torch's: `reshape` is a view exactly where
`Tensor.view` would succeed (else a contiguous copy), `unfold` appends the
window leg, slicing scales strides.

>>> x = Layout.contiguous((2, 6))
>>> x.unfold(1, size=3, step=2)
Layout(shape=(2, 2, 3), strides=(6, 2, 1), offset=0, fresh=False)
>>> x.permute((1, 0)).reshape((12,)).fresh   # a transposed tensor does not flatten in place
True
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from typing import Optional, Sequence

__all__ = ["Layout", "view_strides", "contiguous_strides"]


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides of `shape`."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def view_strides(shape: Sequence[int], strides: Sequence[int],
                 new_shape: Sequence[int]) -> Optional[tuple[int, ...]]:
    """Strides of `new_shape` viewing memory laid out as (`shape`, `strides`), or None
    where torch's `view` would fail (the reshape needs a copy).

    Walks the old dimensions from the innermost outwards in runs that are contiguous
    with one another, and lays the new dimensions of the same element count on each run.
    """
    if prod(shape) != prod(new_shape):
        raise ValueError(f"cannot view {tuple(shape)} as {tuple(new_shape)}")
    if prod(shape) == 0:
        return contiguous_strides(new_shape)
    result = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    base_stride = strides[-1] if strides else 1
    tensor_numel = view_numel = 1
    for d in range(len(shape) - 1, -1, -1):
        tensor_numel *= shape[d]
        run_ends = d == 0 or (shape[d - 1] != 1
                              and strides[d - 1] != tensor_numel * base_stride)
        if not run_ends:
            continue
        while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
            result[view_d] = view_numel * base_stride
            view_numel *= new_shape[view_d]
            view_d -= 1
        if view_numel != tensor_numel:
            return None
        if d > 0:
            base_stride, tensor_numel, view_numel = strides[d - 1], 1, 1
    if view_d != -1:
        return None
    return tuple(result)


@dataclass(frozen=True)
class Layout:
    """A tensor's shape, strides and storage offset; `fresh` once an operation has copied
    (the data no longer lies in the caller's storage)."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int = 0
    fresh: bool = False

    @classmethod
    def contiguous(cls, shape: Sequence[int], fresh: bool = False) -> "Layout":
        return cls(tuple(shape), contiguous_strides(shape), 0, fresh)

    @property
    def is_contiguous(self) -> bool:
        return all(size == 1 or stride == expected for size, stride, expected in
                   zip(self.shape, self.strides, contiguous_strides(self.shape)))

    def copied(self) -> "Layout":
        """The layout of a contiguous copy."""
        return Layout.contiguous(self.shape, fresh=True)

    def permute(self, order: Sequence[int]) -> "Layout":
        return replace(self, shape=tuple(self.shape[d] for d in order),
                       strides=tuple(self.strides[d] for d in order))

    def reshape(self, shape: Sequence[int]) -> "Layout":
        """torch's `reshape`: a view where one exists, else a contiguous copy."""
        strides = view_strides(self.shape, self.strides, shape)
        if strides is None:
            return Layout.contiguous(shape, fresh=True)
        return replace(self, shape=tuple(shape), strides=strides)

    def slice(self, dim: int, start: int, stop: int, step: int = 1) -> "Layout":
        size = len(range(start, min(stop, self.shape[dim]), step))
        return replace(self, shape=_at(self.shape, dim, size),
                       strides=_at(self.strides, dim, self.strides[dim] * step),
                       offset=self.offset + start * self.strides[dim] if size else self.offset)

    def unfold(self, dim: int, size: int, step: int) -> "Layout":
        """torch's `Tensor.unfold`: dim becomes the window starts, the taps come last."""
        count = (self.shape[dim] - size) // step + 1
        return replace(self, shape=_at(self.shape, dim, count) + (size,),
                       strides=_at(self.strides, dim, self.strides[dim] * step)
                       + (self.strides[dim],))

    def movedim(self, source: int, destination: int) -> "Layout":
        order = list(range(len(self.shape)))
        order.insert(destination % len(order), order.pop(source % len(order)))
        return self.permute(order)


def _at(values: tuple[int, ...], dim: int, value: int) -> tuple[int, ...]:
    return values[:dim] + (value,) + values[dim + 1:]
