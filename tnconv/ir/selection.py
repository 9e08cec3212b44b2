"""Selection tensors: one-hot rows R[s, L] read from a caller's vector of indices.

Sub-tensor slicing by a subset drawn at call time (tensor dropout) keeps the
subset out of the network: the network holds a *selection tensor* R[s, L] with
R[s, l] = δ(l, idx[s]) for a vector idx of kept positions, passed by the caller
(role `SELECTION_ROLE`), and a vector of *sample weights* w[s] (role
`WEIGHTS_ROLE`) that carries the rescaling. Several selections share one
argument: each reads `count` entries from `offset` of the caller's vector
(`SelectionView`), so an operation keeps a fixed list of arguments however many
legs it slices.

A selection register holds the indices themselves, never the dense one-hot
[m, L] tensor: the schedule's gather family (`tnconv.lower.schedule.gather`)
applies them as `index_select` / `index_add_`, and the path planner contracts
every selection with its data partner first (`tnconv.lower.paths.plan_path`).

>>> view = SelectionView(offset=2, count=3, size=8, total=5)
>>> view.shape, view.base_shape, view.describe()
((3, 8), (5,), 'one-hot rows of entries 2:5 (of 5) over 8 positions')
>>> import torch
>>> view.apply_torch(torch.tensor([7, 7, 0, 4, 5])).tolist()
[0, 4, 5]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tnconv.ir.layout import Layout

__all__ = ["SelectionView", "OneHotRows", "SELECTION_ROLE", "WEIGHTS_ROLE", "is_selection",
           "is_sampling"]

#: Role of the selection tensors R[s, L] (the caller passes integer indices).
SELECTION_ROLE = "selection"
#: Role of the sample weights w[s] (the caller passes a float vector).
WEIGHTS_ROLE = "weights"


@dataclass(frozen=True)
class OneHotRows:
    """The one view step of a `SelectionView` (described in diagrams and schedules)."""

    offset: int
    count: int
    size: int
    copies = False

    def describe(self) -> str:
        return f"one-hot rows({self.offset}:{self.offset + self.count}, {self.size} positions)"


@dataclass(frozen=True)
class SelectionView:
    """Entries offset … offset+count−1 of a caller's index vector of `total` entries, seen as
    the one-hot rows [count, size] they stand for.

    `apply_torch` returns the indices (the register of a selection holds them);
    `shape` is the one-hot shape the network's legs (s, L) have.
    """

    offset: int
    count: int
    size: int
    total: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.count, self.size)

    @property
    def base_shape(self) -> tuple[int]:
        return (self.total,)

    @property
    def steps(self) -> tuple[OneHotRows]:
        return (OneHotRows(self.offset, self.count, self.size),)

    def shapes(self) -> list[tuple[int, ...]]:
        return [self.base_shape, self.shape]

    def tap_dims(self) -> tuple[int, ...]:
        return ()

    def copied_elements(self, windows: bool = True) -> int:
        """Nothing is copied: the indices are read as they lie."""
        return 0

    def layout(self) -> Layout:
        return Layout.contiguous(self.shape, fresh=True)

    @property
    def strided_steps(self) -> tuple:
        return (0, self.base_shape, (1,), 0)

    def apply_torch(self, x: Any) -> Any:
        """The indices this selection reads (a view of the caller's vector)."""
        x = x.reshape(self.total)
        return x if self.count == self.total else x[self.offset:self.offset + self.count]

    def describe(self) -> str:
        return (f"one-hot rows of entries {self.offset}:{self.offset + self.count} "
                f"(of {self.total}) over {self.size} positions")


def is_selection(tensor: Any) -> bool:
    """Whether `tensor` (a `Tensor` or schedule operand) is a selection R[s, L]."""
    return isinstance(getattr(tensor, "view", None), SelectionView)


def is_sampling(tensor: Any) -> bool:
    """Whether `tensor` is a selection or a vector of sample weights (legs a rewrite keeps)."""
    return getattr(tensor, "role", None) in (SELECTION_ROLE, WEIGHTS_ROLE) or is_selection(tensor)
