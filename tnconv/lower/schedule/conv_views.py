"""Zero padding and dilation moved into torch's convolution kernels: the argument is
read as it is.

A conv-family step reads the pixels under a window view. Where that view ends, per
spatial dimension, in an optional dilation, an optional zero pad and the window,
the kernel does those steps as it reads (`split_windows`):

- zero pads alone, the same on both sides: the convolution kernel pads. This saves
  the padded copy, one pass over the data, which is as much as the whole
  convolution of a depthwise layer moves.
- a dilation (the cotangent spread out by a stride, zeros between, as
  `tnconv.rewrite.rules.scatter_to_gather` writes a transposed convolution) under
  stride-1 windows: torch's transposed convolution kernel, which skips the zeros the
  dilated copy would hold and multiply (S^N of them in N strided dimensions). The
  window over the dilated, padded data with the flipped kernel is the transposed
  convolution with stride S and padding (K−1)·D − left, on the kernel unflipped: the
  weight argument is read before its flips where this step alone reads it
  (`without_flips`), else the runtime flips it back (`tnconv.runtime.conv`).

`conv_arguments`, a schedule pass, applies it to every conv step that is the only
reader of its argument: padding in 2d and 3d (`PADS_IN_KERNEL`), dilation in 1d-3d.

>>> from tnconv.ir.views import Dilate, Pad, Reshape, View, Window
>>> view = View((2, 12, 9), (Reshape((2, 3, 4, 9)), Pad(3, 1, 1), Window(3, size=3, step=2)))
>>> tail = split_windows(view, leading=3)
>>> tail.prefix.shape, tail.pads, tail.factors
((2, 3, 4, 9), ((1, 1),), (1,))
>>> view = View((2, 4), (Dilate(1, 2), Pad(1, 2, 3), Window(1, size=5, step=1)))
>>> tail = split_windows(view, leading=1)
>>> tail.pads, tail.factors, transposed_arguments(tail, (5,), (1,), (1,))
(((2, 3),), (2,), ((2,), (1,)))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from tnconv.ir.views import Dilate, Flip, Pad, View, Window
from tnconv.lower.schedule.conv import ConvKernel
from tnconv.lower.schedule.model import Argument, Schedule, readers

__all__ = ["Tail", "split_windows", "transposed_arguments", "without_flips", "conv_arguments",
           "runs_by_kernels", "PADS_IN_KERNEL"]

#: Spatial dimensions where the kernel pads faster than a padded copy and a kernel
#: without padding, measured on 2 threads: a 2d depthwise 3×3 (4×144×56²) 5.7 against
#: 8.9 ms. In 1d torch pads slowly: a Conformer depthwise kernel 31 (4×256×400) takes
#: 4.35 ms padding itself, 0.44 ms padded first.
PADS_IN_KERNEL = (2, 3)


@dataclass(frozen=True)
class Tail:
    """A window view split where its per-dimension dilations, zero pads and windows
    begin: `prefix` (the view before them), per spatial dimension the (left, right) pad
    and the dilation factor, and the steps split off (`steps`, in their order)."""

    prefix: View
    pads: tuple[tuple[int, int], ...]
    factors: tuple[int, ...]
    steps: tuple


def split_windows(view: View, leading: int) -> Optional[Tail]:
    """The view split before its trailing dilations, zero pads and windows, where each
    spatial dimension (the dims after `leading`) gets at most one dilation, then at
    most one zero pad, then its window, the windows in the order of the dimensions;
    else None."""
    steps = view.steps
    cut = len(steps)
    while cut > 0 and isinstance(steps[cut - 1], (Pad, Dilate, Window)):
        cut -= 1
    tail = steps[cut:]
    ndim = sum(isinstance(s, Window) for s in tail)
    if ndim == 0:
        return None
    pads: list = [None] * ndim
    factors: list = [None] * ndim
    windowed = 0
    for step in tail:
        if isinstance(step, Window):
            if step.dim != leading + 2 * windowed:
                return None
            windowed += 1
            continue
        d = windowed + step.dim - leading - 2 * windowed  # a dim not windowed yet
        if step.dim < leading + 2 * windowed or d >= ndim:
            return None
        if isinstance(step, Pad):
            if step.mode != "zeros" or pads[d] is not None:
                return None
            pads[d] = (step.left, step.right)
        elif factors[d] is not None or pads[d] is not None:
            return None  # a second dilation, or a dilation of padded data
        else:
            factors[d] = step.factor
    return Tail(View(view.base_shape, steps[:cut]), tuple(p or (0, 0) for p in pads),
                tuple(f or 1 for f in factors), tuple(tail))


def transposed_arguments(tail: Tail, kernel: tuple[int, ...], stride: tuple[int, ...],
                         dilation: tuple[int, ...]) -> Optional[tuple[tuple[int, ...], ...]]:
    """(padding, output padding) of torch's transposed convolution equal to stride-1
    windows (taps `kernel`, `dilation`) over the dilated, padded data of `tail`, or None
    where it has none (a window stride, more padding than the taps reach, or an output
    padding torch refuses)."""
    if any(s != 1 for s in stride):
        return None
    shape = tail.prefix.shape
    padding, output_padding = [], []
    spatial = shape[len(shape) - len(kernel):]
    for size, (left, right), factor, k, d in zip(spatial, tail.pads, tail.factors, kernel,
                                                 dilation):
        pad = (k - 1) * d - left
        dilated = (size - 1) * factor + 1
        starts = dilated + left + right - (k - 1) * d
        extra = starts - ((size - 1) * factor - 2 * pad + d * (k - 1) + 1)
        if pad < 0 or not 0 <= extra < max(factor, d):
            return None
        padding.append(pad)
        output_padding.append(extra)
    return tuple(padding), tuple(output_padding)


def _pads_alike(tail: Tail, step: ConvKernel, shape: tuple[int, ...]) -> bool:
    """Whether the kernel, padding each spatial dimension by its left pad on both sides,
    has the windows' starts: the right pad is the left one, or less where the windows
    never reach the rest (a strided layer's last pixels: EfficientNet's 5×5/2 pads 56
    pixels by (2, 1))."""
    spatial = tail.prefix.shape[len(tail.prefix.shape) - len(step.kernel):]
    for d, (size, (left, right)) in enumerate(zip(spatial, tail.pads)):
        reach = step.dilation[d] * (step.kernel[d] - 1) + 1
        starts = (size + 2 * left - reach) // step.stride[d] + 1
        if right > left or starts != shape[step.leading + 2 * d]:
            return False
    return True


def without_flips(view: object, taps: tuple[int, ...]) -> Optional[View]:
    """`view` without its trailing flips, where they reverse exactly the dims `taps`;
    else None."""
    if not isinstance(view, View):
        return None
    steps, flipped = list(view.steps), []
    while steps and isinstance(steps[-1], Flip):
        flipped.append(steps.pop().dim)
    if sorted(flipped) != sorted(taps):
        return None
    return View(view.base_shape, tuple(steps))


def conv_arguments(schedule: Schedule) -> Schedule:
    """Conv steps that alone read an argument's window view do its trailing pads (and
    dilations) inside the kernel: the register holds the view before them
    (`split_windows`)."""
    count = readers(schedule)
    arguments = {a.register: a for a in schedule.arguments}
    steps, shapes = list(schedule.steps), list(schedule.shapes)
    for n, step in enumerate(steps):
        if not isinstance(step, ConvKernel) or step.absorbed is not None:
            continue
        argument = arguments.get(step.inputs[0])
        if argument is None or not isinstance(argument.view, View) or count[argument.register] != 1:
            continue
        tail = split_windows(argument.view, step.leading)
        if tail is None:
            continue
        if any(f > 1 for f in tail.factors):
            found = None if step.weight else transposed_arguments(
                tail, step.kernel, step.stride, step.dilation)
            if found is None:
                continue
            moved = replace(step, absorbed=tail.steps, padding=found[0], transposed=tail.factors,
                            output_padding=found[1])
            weights = arguments.get(step.inputs[1])
            unflipped = None if weights is None or count[weights.register] != 1 else \
                without_flips(weights.view, step.other_order[len(step.other_order) - len(step.kernel):])
            if unflipped is not None:  # the kernel as the caller gave it: no flipped copies
                arguments[weights.register] = Argument(
                    weights.register, weights.argument,
                    weights.shape if unflipped.steps == () and weights.view is None
                    else tuple(unflipped.base_shape), unflipped if unflipped.steps else None)
                moved = replace(moved, kernel_flipped=False)
        elif len(step.kernel) in PADS_IN_KERNEL and _pads_alike(tail, step, argument.view.shape):
            moved = replace(step, absorbed=tail.steps, padding=tuple(l for l, _ in tail.pads))
        else:
            continue
        view = tail.prefix if tail.prefix.steps else None
        arguments[argument.register] = Argument(argument.register, argument.argument,
                                                tuple(tail.prefix.base_shape), view)
        shapes[argument.register] = tail.prefix.shape
        steps[n] = moved
    return replace(schedule, arguments=tuple(arguments.values()), steps=tuple(steps),
                   shapes=tuple(shapes))


def runs_by_kernels(schedule: Schedule) -> bool:
    """Whether torch's convolution kernels run every per-call step of `schedule` and no
    argument is read through a dilation (a dilated copy: zeros the kernel would multiply)."""
    dilated = any(isinstance(a.view, View) and any(isinstance(s, Dilate) for s in a.view.steps)
                  for a in schedule.arguments)
    return bool(schedule.steps) and not dilated and all(
        isinstance(step, ConvKernel) for step in schedule.steps)
