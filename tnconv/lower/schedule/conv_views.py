"""Zero padding moved into torch's convolution kernels: the argument is not padded first.

A conv-family step reads the pixels under a window view. Where that view ends in
zero pads of the spatial dimensions (the same on both sides) and then the windows,
the kernel pads as it reads: the argument register holds the tensor before the pads
(the view's earlier steps still applied), and the step carries the padding. This
saves the padded copy, one pass over the data, which is as much as the whole
convolution of a depthwise layer moves.

`conv_arguments`, a schedule pass, applies it to every conv step that is the only
reader of its argument, in 2d and 3d (`PADS_IN_KERNEL`).

>>> from tnconv.ir.views import Pad, Reshape, View, Window
>>> view = View((2, 12, 9), (Reshape((2, 3, 4, 9)), Pad(3, 1, 1), Window(3, size=3, step=2)))
>>> prefix, padding = split_padding(view, leading=3)
>>> prefix.shape, padding
((2, 3, 4, 9), (1,))
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Optional

from tnconv.ir.views import Pad, View, Window
from tnconv.lower.schedule.conv import ConvKernel
from tnconv.lower.schedule.model import Argument, Schedule

__all__ = ["split_padding", "conv_arguments", "PADS_IN_KERNEL"]

#: Spatial dimensions where the kernel pads faster than a padded copy and a kernel
#: without padding, measured on 2 threads: a 2d depthwise 3×3 (4×144×56²) 5.7 against
#: 8.9 ms. In 1d torch pads slowly: a Conformer depthwise kernel 31 (4×256×400) takes
#: 4.35 ms padding itself, 0.44 ms padded first.
PADS_IN_KERNEL = (2, 3)


def split_padding(view: View, leading: int) -> Optional[tuple[View, tuple[int, ...]]]:
    """(the view without its trailing zero pads and windows, the padding per spatial
    dimension), where the view ends in symmetric zero pads of the dims after `leading`
    and one window per such dim, in order; else None."""
    steps = view.steps
    windows = [s for s in steps if isinstance(s, Window)]
    ndim = len(windows)
    if ndim == 0 or not all(isinstance(s, Window) for s in steps[len(steps) - ndim:]):
        return None
    # Window n (in the order applied) lays its taps after its dim: spatial dim d sits at
    # leading + 2·n for the n-th window when the windows run over the dims in order.
    if [w.dim for w in windows] != [leading + 2 * n for n in range(ndim)]:
        return None
    cut = len(steps) - ndim
    padding = [0] * ndim
    while cut > 0 and isinstance(steps[cut - 1], Pad):
        pad = steps[cut - 1]
        d = pad.dim - leading
        if pad.mode != "zeros" or pad.left != pad.right or not 0 <= d < ndim or padding[d]:
            return None
        padding[d] = pad.left
        cut -= 1
    return View(view.base_shape, steps[:cut]), tuple(padding)


def conv_arguments(schedule: Schedule) -> Schedule:
    """Conv steps that alone read an argument's window view pad inside the kernel: the
    register holds the view before its pads and windows (`split_padding`)."""
    count = Counter(r for step in schedule.steps for r in step.inputs)
    arguments = {a.register: a for a in schedule.arguments}
    steps, shapes = list(schedule.steps), list(schedule.shapes)
    for n, step in enumerate(steps):
        if (not isinstance(step, ConvKernel) or step.padding is not None
                or len(step.kernel) not in PADS_IN_KERNEL):
            continue
        argument = arguments.get(step.inputs[0])
        if argument is None or not isinstance(argument.view, View) or count[argument.register] != 1:
            continue
        split = split_padding(argument.view, step.leading)
        if split is None:
            continue
        prefix, padding = split
        view = prefix if prefix.steps else None
        arguments[argument.register] = Argument(argument.register, argument.argument,
                                                tuple(prefix.base_shape), view)
        shapes[argument.register] = prefix.shape
        steps[n] = replace(step, padding=padding)
    return replace(schedule, arguments=tuple(arguments.values()), steps=tuple(steps),
                   shapes=tuple(shapes))
