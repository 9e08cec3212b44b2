"""Views of a caller's data tensor: pad, slice, take, split, reshape, windows, flip, dilate.

Rewrite rules replace an index pattern contracted with a data tensor by a view
of that tensor. A `View` records the shape the caller's argument is reshaped to
(`base_shape`) and the steps applied after it; each step names the dimension it
acts on in the shape reached so far. The view runs on torch tensors
(`apply_torch`); its layout is known without torch (`layout`).

>>> import torch
>>> v = View((6,), (Pad(0, 1, 1, "zeros"), Window(0, size=3, step=2)))
>>> v.shape
(3, 3)
>>> v.apply_torch(torch.arange(6.0)).tolist()
[[0.0, 0.0, 1.0], [1.0, 2.0, 3.0], [3.0, 4.0, 5.0]]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from math import prod
from typing import Any, Optional, Union

import numpy as np

from tnconv.ir.layout import Layout
from tnconv.spec.index_pattern import IndexPattern

__all__ = ["Pad", "Slice", "Take", "SplitLeg", "Reshape", "Window", "Flip", "Dilate", "View",
           "ViewStep", "read_as"]


def _at(shape: tuple[int, ...], dim: int, sizes: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:dim] + tuple(sizes) + shape[dim + 1:]


def _slicer(dim: int, piece: slice) -> tuple:
    return (slice(None),) * dim + (piece,)


@dataclass(frozen=True)
class Pad:
    """Pad dimension `dim` by `left` / `right` pixels as torch pads (mode: zeros, circular,
    reflect or replicate)."""

    dim: int
    left: int
    right: int
    mode: str = "zeros"
    copies = True

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return _at(shape, self.dim, (shape[self.dim] + self.left + self.right,))

    def layout(self, x: Layout) -> Layout:
        return Layout.contiguous(self.out_shape(x.shape), fresh=True)

    def source(self, size: int) -> np.ndarray:
        """Input pixel each padded position copies, -1 for a zero."""
        total = size + self.left + self.right
        return IndexPattern(1, 1, 1, (self.left, self.right), size, total,
                            self.mode).source_indices()[0]

    def torch(self, x: Any) -> Any:
        import torch
        import torch.nn.functional as F

        if self.mode == "zeros":
            return F.pad(x, [0, 0] * (x.dim() - 1 - self.dim) + [self.left, self.right])
        index = torch.tensor(self.source(x.shape[self.dim]).tolist(), device=x.device)
        return x.index_select(self.dim, index)


    def describe(self) -> str:
        return f"pad(dim {self.dim}, {self.left}, {self.right}, {self.mode})"


@dataclass(frozen=True)
class Slice:
    """Keep positions start, start+step, … < stop of dimension `dim` (a strided view)."""

    dim: int
    start: int
    stop: int
    step: int = 1
    copies = False

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return _at(shape, self.dim, (len(range(self.start, self.stop, self.step)),))

    def layout(self, x: Layout) -> Layout:
        return x.slice(self.dim, self.start, self.stop, self.step)

    def torch(self, x: Any) -> Any:
        return x[_slicer(self.dim, slice(self.start, self.stop, self.step))]


    def describe(self) -> str:
        return f"slice(dim {self.dim}, {self.start}:{self.stop}:{self.step})"


@dataclass(frozen=True)
class Take:
    """Keep the listed positions of dimension `dim` (a gather: copies)."""

    dim: int
    indices: tuple[int, ...]
    copies = True

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return _at(shape, self.dim, (len(self.indices),))

    def layout(self, x: Layout) -> Layout:
        return Layout.contiguous(self.out_shape(x.shape), fresh=True)

    def torch(self, x: Any) -> Any:
        import torch

        return x.index_select(self.dim, torch.tensor(self.indices, device=x.device))


    def describe(self) -> str:
        return f"take(dim {self.dim}, {len(self.indices)} positions)"


@dataclass(frozen=True)
class SplitLeg:
    """View dimension `dim` as several dimensions of the given sizes (row-major)."""

    dim: int
    sizes: tuple[int, ...]
    copies = False

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if prod(self.sizes) != shape[self.dim]:
            raise ValueError(f"cannot split a leg of size {shape[self.dim]} into {self.sizes}")
        return _at(shape, self.dim, self.sizes)

    def layout(self, x: Layout) -> Layout:
        return x.reshape(self.out_shape(x.shape))

    def torch(self, x: Any) -> Any:
        return x.reshape(self.out_shape(tuple(x.shape)))


    def describe(self) -> str:
        return f"split(dim {self.dim} -> {self.sizes})"


@dataclass(frozen=True)
class Reshape:
    """Reshape to `shape` (row-major; merges legs or drops size-1 legs)."""

    shape: tuple[int, ...]
    copies = False

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if prod(shape) != prod(self.shape):
            raise ValueError(f"cannot reshape {shape} to {self.shape}")
        return self.shape

    def layout(self, x: Layout) -> Layout:
        return x.reshape(self.shape)

    def torch(self, x: Any) -> Any:
        return x.reshape(self.shape)


    def describe(self) -> str:
        return f"reshape{self.shape}"


@dataclass(frozen=True)
class Window:
    """Sliding windows along `dim`: the leg becomes (window start o, tap k) at dims (dim, dim+1).

    Tap k of window o reads position o·step + k·dilation.
    """

    dim: int
    size: int
    step: int
    dilation: int = 1

    @property
    def span(self) -> int:
        return (self.size - 1) * self.dilation + 1

    @property
    def copies(self) -> bool:
        """Overlapping windows are materialised by whoever consumes them."""
        return self.step < self.span

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        count = (shape[self.dim] - self.span) // self.step + 1
        return _at(shape, self.dim, (count, self.size))

    def layout(self, x: Layout) -> Layout:
        y = x.unfold(self.dim, self.span, self.step)
        if self.dim + 2 < len(y.shape):
            y = y.movedim(-1, self.dim + 1)
        return y.slice(self.dim + 1, 0, self.span, self.dilation) if self.dilation > 1 else y

    def torch(self, x: Any) -> Any:
        y = x.unfold(self.dim, self.span, self.step)
        if self.dim + 2 < y.dim():  # the taps come last; move them next to their starts
            y = y.movedim(-1, self.dim + 1)
        return y[_slicer(self.dim + 1, slice(None, None, self.dilation))] \
            if self.dilation > 1 else y


    def describe(self) -> str:
        return (f"window(dim {self.dim}, size {self.size}, step {self.step}, "
                f"dilation {self.dilation})")


@dataclass(frozen=True)
class Flip:
    """Reverse dimension `dim` (a copy: torch has no negative strides)."""

    dim: int
    copies = True

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def torch(self, x: Any) -> Any:
        return x.flip(self.dim)

    def layout(self, x: Layout) -> Layout:
        return Layout.contiguous(x.shape, fresh=True)


    def describe(self) -> str:
        return f"flip(dim {self.dim})"


@dataclass(frozen=True)
class Dilate:
    """Spread dimension `dim` out by `factor`: position p moves to p·factor, zeros between."""

    dim: int
    factor: int
    copies = True

    def out_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return _at(shape, self.dim, ((shape[self.dim] - 1) * self.factor + 1,))

    def layout(self, x: Layout) -> Layout:
        return Layout.contiguous(self.out_shape(x.shape), fresh=True)

    def torch(self, x: Any) -> Any:
        out = x.new_zeros(self.out_shape(tuple(x.shape)))
        out[_slicer(self.dim, slice(None, None, self.factor))] = x
        return out


    def describe(self) -> str:
        return f"dilate(dim {self.dim}, ×{self.factor})"


ViewStep = Union[Pad, Slice, Take, SplitLeg, Reshape, Window, Flip, Dilate]


def _before(step: ViewStep, pad: Pad) -> Any:
    """`pad` expressed before `step` (so that pad-then-step equals step-then-pad), or None."""
    if isinstance(step, Window):
        if pad.dim < step.dim:
            return pad
        if pad.dim > step.dim + 1:
            return Pad(pad.dim - 1, pad.left, pad.right, pad.mode)
        return None
    if isinstance(step, (Pad, Slice)) and step.dim != pad.dim:
        return pad
    return None


def _insert(steps: list, step: ViewStep) -> list:
    """Append `step`; a pad moves ahead of the windows and slices it commutes with."""
    position = len(steps)
    while isinstance(step, Pad) and position > 0:
        earlier = _before(steps[position - 1], step)
        if earlier is None:
            break
        step, position = earlier, position - 1
    return steps[:position] + [step] + steps[position:]


def _leading_zero_pads(steps: list) -> list:
    pads = []
    for step in steps:
        if not (isinstance(step, Pad) and step.mode == "zeros"):
            break
        pads.append(step)
    return pads


def _pad_zeros(x: Any, pads: list) -> Any:
    """Several zero pads on distinct-or-equal dims as one `F.pad` call."""
    import torch.nn.functional as F

    amounts = [0] * (2 * x.dim())
    for pad in pads:
        slot = 2 * (x.dim() - 1 - pad.dim)
        amounts[slot] += pad.left
        amounts[slot + 1] += pad.right
    return F.pad(x, amounts)


@dataclass(frozen=True)
class View:
    """The caller's tensor reshaped to `base_shape`, then the `steps` applied in order."""

    base_shape: tuple[int, ...]
    steps: tuple[ViewStep, ...] = ()

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape after every step."""
        return self.shapes()[-1]

    def shapes(self) -> list[tuple[int, ...]]:
        """The base shape and the shape after each step."""
        shapes = [tuple(self.base_shape)]
        for step in self.steps:
            shapes.append(step.out_shape(shapes[-1]))
        return shapes

    def tap_dims(self) -> tuple[int, ...]:
        """Dimensions of the final view that are the tap legs of sliding windows.

        Empty when a later reshape hides where they went.
        """
        taps = [False] * len(self.base_shape)
        for step in self.steps:  # the other steps keep the number of dimensions
            if isinstance(step, Window):
                taps[step.dim:step.dim + 1] = [False, True]
            elif isinstance(step, SplitLeg):
                taps[step.dim:step.dim + 1] = [False] * len(step.sizes)
            elif isinstance(step, Reshape):
                return ()
        return tuple(d for d, tap in enumerate(taps) if tap)

    def then(self, *steps: ViewStep) -> "View":
        """This view followed by `steps`; pads move ahead of earlier windows and slices.

        Padding before the windows pads the small base tensor once, instead of
        copying an already windowed (K-times larger) tensor.
        """
        result = list(self.steps)
        for step in steps:
            result = _insert(result, step)
        return View(self.base_shape, tuple(result))

    def copied_elements(self, windows: bool = True) -> int:
        """Elements written by the steps that copy (pads, gathers, overlapping windows;
        `windows=False`: not the windows, which a step reading them in place never lays out)."""
        shapes = self.shapes()[1:]
        return sum(prod(shape) for step, shape in zip(self.steps, shapes)
                   if step.copies and (windows or not isinstance(step, Window)))

    def apply_torch(self, x: Any) -> Any:
        prefix = self.strided_steps
        if prefix[0] >= 2 and x.is_contiguous() and not x.requires_grad:
            done, size, stride, offset = prefix  # the first `done` steps: one as_strided
            x = x.as_strided(size, stride, x.storage_offset() + offset)
        else:
            done = 0
            x = x.reshape(self.base_shape)
        steps = list(self.steps[done:])
        while steps:
            zero_pads = _leading_zero_pads(steps)
            if len(zero_pads) > 1:
                x = _pad_zeros(x, zero_pads)
                del steps[:len(zero_pads)]
            else:
                x = steps.pop(0).torch(x)
        return x

    @cached_property
    def strided_steps(self) -> tuple:
        """(steps, size, stride, offset): how many leading steps only view a contiguous input
        (0: none), and their result as one `as_strided` (`tnconv.ir.layout`, no torch).

        Slices, windows and merging reshapes of the base are each a torch call
        (2-4 µs): an unfold of a 1×1 stride-2 convolution took nine. `apply_torch`
        runs two or more of them as one `as_strided`.
        """
        x = Layout.contiguous(self.base_shape)
        found = (0, x.shape, x.strides, x.offset)
        for n, step in enumerate(self.steps, 1):
            x = step.layout(x)
            if x.fresh:
                break
            found = (n, x.shape, x.strides, x.offset)
        return found

    def layout(self) -> Layout:
        """The layout of the view of a contiguous argument (`fresh` where a step copies)."""
        x = Layout.contiguous(self.base_shape)
        for step in self.steps:
            x = step.layout(x)
        return x

    def describe(self) -> str:
        steps = [s.describe() for s in self.steps]
        return " -> ".join([f"reshape{tuple(self.base_shape)}"] + steps)


def read_as(view: Optional[View]) -> Optional[View]:
    """How `view` reads its argument, for comparing tensors: None (the argument reshaped to
    the tensor's shape) where every step only reshapes (`Reshape`, `SplitLeg`: row-major,
    nothing reordered or copied), else the view itself.

    >>> read_as(View((2, 6), (SplitLeg(1, (2, 3)),))) is None
    True
    """
    if view is None or all(isinstance(step, (Reshape, SplitLeg)) for step in view.steps):
        return None
    return view
