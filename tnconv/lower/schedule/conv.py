"""The conv family: a window view contracted by torch's own convolution kernels.

A window view of an argument met by another operand is, leg for leg, a convolution
or its weight gradient once the legs are sorted by role:

- taps summed, window starts kept (a convolution): the windowed operand's leading
  legs are the batch (only it and the result carry them), the groups (all three)
  and the input channels (summed with the other operand); the other operand adds
  the output channels. torch's `convolution` runs it, G groups.
- window starts summed, taps kept (the weight gradient): the leading legs summed
  with the other operand are the kernel's batch, the shared ones its groups, the
  kept ones the input channels. torch's `convolution_backward` (weight only) runs
  it. Per-sample gradients (the batch leg kept) are its groups: N·G of them, one
  call where the unfold-based way lays out ∏K copies of the input.

The kernel reads the (padded) data under the windows in place, over the extent
the windows reach, with the windows' stride and dilation. Spatial dimensions 1-3,
each a trailing (start, tap) pair of the view; anything else, or a step that
autograd records, runs the plain einsum the step carries.

>>> from tnconv.ir.views import Pad, View, Window
>>> from tnconv.lower.schedule.site import Operand, Site
>>> view = View((2, 3, 9), (Pad(2, 1, 1), Window(2, size=3, step=2)))   # [n, c, o, k]
>>> site = Site((Operand(0, ("n", "c", "o", "k"), False, view=view, argument=True),
...              Operand(1, ("d", "c", "k"), False)), ("n", "d", "o"), 2,
...             {"n": 2, "c": 3, "d": 32, "o": 4, "k": 3})
>>> step = conv_rule(site)
>>> step.label(), step.stride, step.dilation
('torch convolution kernel (2 x [3 -> 32] channels, 1 group)', (2,), (1,))
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, Optional

from tnconv.ir.equation import spell
from tnconv.ir.views import Reshape, SplitLeg, View, Window
from tnconv.lower.schedule.einsum import sliced_einsum_rule
from tnconv.lower.schedule.model import Step
from tnconv.lower.schedule.site import Operand, Site

__all__ = ["ConvKernel", "conv_rule", "KERNEL_NDIM", "MIN_BLOCK", "DEPTHWISE_WEIGHT_TAPS",
           "MAX_WEIGHT_OUT"]

#: Spatial dimensions torch has convolution kernels for.
KERNEL_NDIM = (1, 2, 3)
#: The kernels run only where one group's weight block (channels in × out) has at least
#: this many entries. Smaller blocks (depthwise layers, ResNeXt's 4 × 4 groups) stay with
#: the shift steps, measured faster there: weight VJPs of ResNeXt 0.45x torch tap by tap
#: against 1.0x by its kernel, of a ConvNeXt depthwise 7×7 0.48x against 1.03x.
MIN_BLOCK = 64
#: Depthwise blocks run by the kernels in a convolution always; in a weight gradient up to
#: this many taps (MobileNetV2's 3×3: 2.5x -> 1.5x torch; ConvNeXt's 7×7 stays 0.6x by
#: the shift steps against 1.04x by the kernel).
DEPTHWISE_WEIGHT_TAPS = 9
#: Weight gradients with more outputs per group than this (a GGN's columns times the
#: output channels) run as an unfolded product: Inception's 1×7 with 10 columns takes
#: 67 ms by the kernel (groups = the batch) against 39 ms unfolded.
MAX_WEIGHT_OUT = 512


@dataclass(frozen=True)
class ConvKernel(Step):
    """torch's convolution (`weight=False`) or its weight gradient (`weight=True`) on a
    window view (inputs: windowed, other).

    `data_order` lays the windowed operand's leading legs out as [batch…, groups…,
    channels…]; `other_order` lays the other out as [groups…, out…, channels…, taps…]
    (a convolution's weight) or [batch…, groups…, out…, starts…] (the weight gradient's
    cotangent); `sizes` are (batch, groups, channels, out) and `permutation` orders the
    kernel's result, [batch…, groups…, out…, starts…] or [groups…, out…, channels…,
    taps…], as the step's output legs."""

    family = "conv"
    equation: str
    weight: bool
    leading: int
    data_order: tuple[int, ...]
    other_order: tuple[int, ...]
    sizes: tuple[int, int, int, int]
    lead_shape: tuple[int, ...]  # the kernel's result before `permutation`, without spatial legs
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    permutation: tuple[int, ...]
    #: Set by `conv_views.conv_arguments`: the windowed register holds the data before
    #: these view steps (dilations, zero pads, the windows), which the kernel does itself;
    #: it pads by `padding` per spatial dimension.
    absorbed: Optional[tuple] = None
    padding: Optional[tuple[int, ...]] = None
    #: The dilation factors of a transposed convolution (its strides) and its output
    #: padding, where the windows read dilated data (`conv_views.transposed_arguments`).
    transposed: Optional[tuple[int, ...]] = None
    output_padding: Optional[tuple[int, ...]] = None
    #: Whether the other register holds the windows' kernel, flipped (a transposed
    #: convolution's kernel is flipped back before the call), or the kernel as given.
    kernel_flipped: bool = True

    def label(self) -> str:
        batch, groups, channels, out = self.sizes
        what = "weight gradient" if self.weight else "convolution"
        if self.transposed is not None:
            what = f"transposed convolution (stride {self.transposed})"
        pads = f", padding {self.padding}" if self.padding is not None and any(self.padding) else ""
        return (f"torch {what} kernel ({batch} x [{channels} -> {out}] channels, {groups} "
                f"group{'s' if groups > 1 else ''}{pads})")


def _windows(view: View, leading: int, pairs: int) -> Optional[tuple[tuple[int, int, int], ...]]:
    """(size, step, dilation) of the window of each trailing (start, tap) pair, in order,
    or None where a reshape hides them."""
    found: list[Optional[tuple[int, int, int]]] = [None] * len(view.base_shape)
    for step in view.steps:
        if isinstance(step, Window):
            found[step.dim:step.dim + 1] = [(step.size, step.step, step.dilation), None]
        elif isinstance(step, SplitLeg):
            found[step.dim:step.dim + 1] = [None] * len(step.sizes)
        elif isinstance(step, Reshape):
            return None
    windows = found[leading::2]
    if len(windows) != pairs or any(w is None for w in windows):
        return None
    return tuple(windows)  # type: ignore[arg-type]


def _pays(weight: bool, sizes: tuple[int, int, int, int], kernel: tuple[int, ...]) -> bool:
    """Whether torch's kernel beats the other steps, as measured: a weight block of
    `MIN_BLOCK` entries or more (in a weight gradient, at most `MAX_WEIGHT_OUT` outputs);
    or a depthwise block (one channel in, one out), whose convolution torch runs by a
    dedicated kernel, and whose weight gradient pays up to `DEPTHWISE_WEIGHT_TAPS` taps."""
    channels, out = sizes[2:]
    if weight and out > MAX_WEIGHT_OUT:
        return False
    if channels * out >= MIN_BLOCK:
        return True
    return channels == out == 1 and (not weight or prod(kernel) <= DEPTHWISE_WEIGHT_TAPS)


def _copies_the_larger(other_legs: tuple[str, ...], layout: tuple[str, ...], site: Site,
                       view: Any) -> bool:
    """Whether a weight gradient by torch's kernel would copy the operand that is not
    windowed into its own layout (its extra legs moved inside the groups: a GGN's C
    columns, outermost in the sqrt factor) where that operand is larger than the windowed
    data: the shift steps read it in place instead (GGN diagonal with C = 10, ResNeXt's
    4 × 4 groups: 27 against 42 ms; RegNetY's groups of 8: 14 against 25 ms)."""
    order = [leg for leg in other_legs if leg in layout]
    return order != list(layout) and site.size(other_legs) > prod(view.base_shape)


def conv_rule(site: Site) -> Optional[ConvKernel]:
    """A convolution kernel where an argument's window view meets another operand with
    every leg in one of a convolution's roles, else None."""
    if site.pair is None or sliced_einsum_rule(site) is not None:
        # A large operand read a slice at a time against a small unfolded one (a GGN's
        # per-sample product on a stem): the slices move less than the kernel's N·C
        # groups, measured 20 against 88 ms on wav2vec2's front end, 97 against 130 on C3D.
        return None
    steps = (_conv_step(site, windowed, other) for windowed, other in site.orders)
    return next((step for step in steps if step is not None), None)


def _conv_step(site: Site, windowed: Operand, other: Operand) -> Optional[ConvKernel]:
    view = windowed.view
    if view is None or not windowed.argument:
        return None
    legs, other_legs, out = windowed.legs, other.legs, site.out
    tap_dims = view.tap_dims()
    leading = len(legs) - 2 * len(tap_dims)
    if (len(tap_dims) not in KERNEL_NDIM
            or list(tap_dims) != list(range(leading + 1, len(legs), 2))):
        return None
    windows = _windows(view, leading, len(tap_dims))
    if windows is None:
        return None
    lead, starts, taps = legs[:leading], legs[leading::2], legs[leading + 1::2]
    extra = tuple(leg for leg in other_legs if leg not in legs)
    if any(leg not in out for leg in extra):
        return None
    in_other = [leg in other_legs for leg in lead]
    in_out = [leg in out for leg in lead]
    if not all(a or b for a, b in zip(in_other, in_out)):
        return None  # a leg only the windowed operand carries: summed before, not here
    shared = tuple(leg for leg, a, b in zip(lead, in_other, in_out) if a and b)
    alone = tuple(leg for leg, a, b in zip(lead, in_other, in_out) if b and not a)
    summed = tuple(leg for leg, a, b in zip(lead, in_other, in_out) if a and not b)
    forward = (all(t in other_legs and t not in out for t in taps)
               and all(o in out and o not in other_legs for o in starts))
    weight = (all(t in out and t not in other_legs for t in taps)
              and all(o in other_legs and o not in out for o in starts))
    if not (forward or weight):
        return None
    if forward:  # batch = alone, channels = summed
        batch, channels = alone, summed
        other_layout = shared + extra + summed + taps
        result = batch + shared + extra + starts
    else:  # batch = summed, channels = alone
        batch, channels = summed, alone
        other_layout = summed + shared + extra + starts
        result = shared + extra + channels + taps
    if sorted(other_layout) != sorted(other_legs):
        return None
    if weight and _copies_the_larger(other_legs, other_layout, site, view):
        return None
    sizes = (site.size(batch), site.size(shared), site.size(channels), site.size(extra))
    kernel, stride, dilation = (tuple(w[n] for w in windows) for n in range(3))
    if not _pays(weight, sizes, kernel):
        return None
    return ConvKernel(
        (windowed.register, other.register), site.output, spell([legs, other_legs], out),
        weight, leading, tuple(lead.index(leg) for leg in batch + shared + channels),
        tuple(other_legs.index(leg) for leg in other_layout), sizes,
        site.shape(result[:len(result) - len(tap_dims)]), kernel, stride, dilation,
        tuple(result.index(leg) for leg in out))
