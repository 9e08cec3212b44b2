"""How a contraction step with a sliding-window view of an argument runs.

`torch.einsum` lays a window view out whole: ∏K times the data. Where the
weight meets the windows channel by channel (depthwise) or group by group,
the executor runs the step on the data in place instead: a shift tap step or
a shift-GEMM on stride-1 windows (`tnconv.runtime.shift_gemm`), a tap loop on strided
ones (`tnconv.runtime.tap_loop`). The cost model asks the same question
(`reads_in_place`), so that the rewrite driver prices such a view as the data
it reads, not as the ∏K-fold copy einsum would make.

>>> from tnconv.ir.views import View, Window
>>> view = View((2, 3, 9), (Window(2, size=3, step=1),))  # [n, c, o, k]
>>> step = window_step(0, ("n", "c", "o", "k"), view, 1, ("c", "k"), ("n", "c", "o"),
...                    {"n": 2, "c": 3, "o": 7, "k": 3})
>>> type(step).__name__, reads_in_place(step)
('ShiftTapStep', True)
"""

from __future__ import annotations

from math import prod
from typing import Any, Optional

from tnconv.runtime.shift_gemm import ShiftGemmOutputStep, ShiftGemmStep, ShiftTapStep, shift_gemm_step, \
    shift_tap_step
from tnconv.runtime.tap_loop import tap_loop_step
from tnconv.ir.views import Window

__all__ = ["window_step", "reads_in_place"]


def window_step(windowed: int, legs: tuple[str, ...], view: Any, other: int,
                other_legs: tuple[str, ...], out: tuple[str, ...],
                sizes: dict[str, int]) -> Optional[Any]:
    """The step for `windowed` (an argument seen through `view`) meeting `other`, or None
    where one einsum is the way (no windows, or a product the loops do not serve)."""
    if view is None:
        return None
    tap_dims = view.tap_dims()
    if all(s.step == 1 for s in view.steps if isinstance(s, Window)):
        step = (shift_gemm_step(windowed, legs, tap_dims, other, other_legs, out, sizes)
                or shift_tap_step(windowed, legs, tap_dims, other, other_legs, out, sizes))
        if step is not None:
            return step
    if prod(view.shape) < 2 * prod(view.base_shape):
        return None
    return tap_loop_step(windowed, legs, other, other_legs, out, sizes, tap_dims)


def reads_in_place(step: Any) -> bool:
    """Whether `step` reads its window view in place, each tap's run once per block.

    Only the shift steps: the tap loops (strided windows) also avoid the ∏K-fold
    copy, but each tap passes over all the data, unblocked; they keep the price
    of the copy, under which their plans were chosen and measured.
    """
    return isinstance(step, (ShiftGemmStep, ShiftGemmOutputStep, ShiftTapStep))
