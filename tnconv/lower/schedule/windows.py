"""The windows family: a sliding-window view of an argument contracted in place.

`torch.einsum` lays a window view out whole: ∏K times the data. Where the weight
meets the windows channel by channel (depthwise) or group by group, these steps
read the (padded) data in place instead:

- `ShiftGemm` (grouped convolutions, stride-1 windows): flattened over its spatial
  dimensions, the pixels tap t reads for all output positions lie in one contiguous
  run (the output rows at the padded width, whose last K−1 columns are computed and
  dropped), so each tap is one batched product W_t[g] @ X[n, g, :, run_t],
  accumulated. Measured 1.2-5x faster than the einsum over the window view on grouped
  layers (ResNeXt's weight VJP 7x); for dense convolutions, whose one einsum is a
  large well-shaped product, as often slower, so it is not chosen there.
- `ShiftGemmOutput`: taps kept in the result (a grouped weight VJP): the cotangent is
  laid out once at the padded width, each tap one batched product with its run.
- `ShiftTap` (depthwise, any stride): each tap one multiply-add of its run (or of its
  grid of strided positions), a block of rows at a time so the accumulator stays in
  cache over the taps.
- `TapLoop` / `TapOutput` (strided windows): one slice of the data per tap, summed
  (elementwise for depthwise, or where the window view would be too large to lay out),
  or, for taps kept in the result, one product and sum per tap.

Each step carries the plain einsum as `equation`, which the runtime falls back to
where the windows have no contiguous run or autograd records the step.

>>> from tnconv.ir.views import View, Window
>>> from tnconv.lower.schedule.site import Operand, Site
>>> view = View((2, 3, 9), (Window(2, size=3, step=1),))  # [n, c, o, k]
>>> site = Site((Operand(0, ("n", "c", "o", "k"), False, view=view, argument=True),
...              Operand(1, ("c", "k"), False)), ("n", "c", "o"), 2,
...             {"n": 2, "c": 3, "o": 7, "k": 3})
>>> step = window_rule(site)
>>> type(step).__name__, reads_in_place(step)
('ShiftTap', True)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import prod
from typing import Optional

from tnconv.ir.equation import spell
from tnconv.ir.views import Window
from tnconv.lower.schedule.conv import ConvKernel
from tnconv.lower.schedule.model import Step
from tnconv.lower.schedule.site import Operand, Site

__all__ = ["TapLoop", "TapOutput", "ShiftGemm", "ShiftGemmOutput", "ShiftTap", "window_rule",
           "reads_in_place", "MAX_TAPS", "MAX_WINDOW_ELEMENTS", "ALL"]

#: Loops longer than this are left to one einsum (Python overhead per tap).
MAX_TAPS = 64
#: A window view with more elements than this (256 MiB in fp32) is never materialised.
MAX_WINDOW_ELEMENTS = 2 ** 26
#: In a pick: the whole leg (a slice), else the index taken.
ALL = -1

Pick = tuple[int, ...]


@dataclass(frozen=True)
class TapLoop(Step):
    """Σ over the tap legs of einsum(windowed[taps], other[taps]) (inputs: windowed, other),
    accumulated. With `broadcast` (depthwise: the weight's slice broadcasts against the
    data's), a tap is one `addcmul_`, `permutation` ordering the result's legs."""

    family = "windows"
    equation: str
    selections: tuple[tuple[Pick, Pick], ...]
    broadcast: Optional[tuple[tuple[int, ...], tuple[int, ...]]] = None
    permutation: tuple[int, ...] = ()

    def label(self) -> str:
        kind = "multiply-add" if self.broadcast is not None else f"einsum {self.equation}"
        return f"tap loop, {len(self.selections)} taps, one {kind} each"


@dataclass(frozen=True)
class TapOutput(Step):
    """Taps kept in the result (a depthwise weight VJP): per tap, windowed[tap] · other
    (viewed as `broadcast`), summed over `summed`, permuted, placed at `place`."""

    family = "windows"
    broadcast: tuple[tuple[int, ...], tuple[int, ...]]
    summed: tuple[int, ...]
    permutation: tuple[int, ...]
    out_shape: tuple[int, ...]
    selections: tuple[tuple[Pick, Pick], ...]  # (pick in the data, place in the result)

    def label(self) -> str:
        return f"tap loop, {len(self.selections)} taps kept in the result"


@dataclass(frozen=True)
class ShiftGemm(Step):
    """out[batch, shared, free, o…] = Σ_taps Σ_contracted windows · weight, tap by tap.

    The windowed operand's legs are (batch…, shared…, contracted…) then an (o, k) pair
    per spatial dimension; `weight_permutation` lays the weight out as [shared…, free…,
    contracted…, k…]; `permutation` orders [batch…, shared…, free…, o…] as the output.
    """

    family = "windows"
    equation: str
    lead: tuple[int, int, int]  # number of batch, shared and contracted legs
    weight_permutation: tuple[int, ...]
    sizes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    permutation: tuple[int, ...]

    def label(self) -> str:
        return "shift-GEMM (one batched product per tap, on the data in place)"


@dataclass(frozen=True)
class ShiftGemmOutput(Step):
    """Taps kept in the result: R[t, shared, free', free] = Σ_summed Σ_o other · windows.

    The windowed operand's legs are (summed…, shared…, free…) then (o, k) pairs;
    `other_permutation` lays the other out as [summed…, shared…, free'…, o…];
    `permutation` orders [taps…, shared…, free'…, free…] as the output.
    """

    family = "windows"
    equation: str
    lead: tuple[int, int, int]  # number of summed, shared and free legs of the data
    other_permutation: tuple[int, ...]
    sizes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    permutation: tuple[int, ...]

    def label(self) -> str:
        return "shift-GEMM, taps kept (one batched product per tap, on the data in place)"


@dataclass(frozen=True)
class ShiftTap(Step):
    """Depthwise: out[lead…, o…] = Σ_taps windows · weight[…, taps], one multiply-add per
    tap on a block of rows (a flat run of the padded rows for stride-1 windows, the grid
    of output positions for strided ones). `weight_permutation` and `weight_shape` lay the
    weight out as [lead… (size 1 where it lacks the leg), taps]; `permutation` orders
    [lead…, o…]."""

    family = "windows"
    equation: str
    leading: int
    weight_permutation: tuple[int, ...]
    weight_shape: tuple[int, ...]
    permutation: tuple[int, ...]

    def label(self) -> str:
        return "shift taps (one multiply-add per tap, on the data in place)"


def reads_in_place(step: object) -> bool:
    """Whether `step` reads its window view in place, each tap's run once per block (the
    shift steps, torch's convolution kernels). Tap loops also avoid the ∏K-fold copy, but
    each tap passes over all the data; they keep the price of the copy, under which their
    plans were chosen."""
    return isinstance(step, (ConvKernel, ShiftGemm, ShiftGemmOutput, ShiftTap))


def window_rule(site: Site) -> Optional[Step]:
    """The windows step for an argument seen through a window view meeting another
    operand, or None where one einsum is the way."""
    steps = (_window_step(site, windowed, other) for windowed, other in site.orders)
    return next((step for step in steps if step is not None), None)


def _window_step(site: Site, windowed: Operand, other: Operand) -> Optional[Step]:
    view = windowed.view
    if view is None or not windowed.argument:
        return None
    tap_dims = view.tap_dims()
    stride_one = all(s.step == 1 for s in view.steps if isinstance(s, Window))
    step = ((_shift_gemm(site, windowed, other, tap_dims) if stride_one else None)
            or _shift_tap(site, windowed, other, tap_dims))
    if step is not None:
        return step
    if prod(view.shape) < 2 * prod(view.base_shape):
        return None
    return _tap_loop(site, windowed, other, tap_dims)


# ------------------------------------------------------------------ tap loops
def _pick(legs: tuple[str, ...], taps: tuple[str, ...], values: tuple[int, ...]) -> Pick:
    where = dict(zip(taps, values))
    return tuple(where.get(leg, ALL) for leg in legs)


def _broadcast(keep_v: tuple[str, ...], keep_w: tuple[str, ...],
               site: Site) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Permutation and shape that lay `keep_w`'s legs out against `keep_v`'s (size 1 elsewhere)."""
    order = tuple(keep_w.index(leg) for leg in keep_v if leg in keep_w)
    return order, tuple(site.sizes[leg] if leg in keep_w else 1 for leg in keep_v)


def _tap_values(taps: tuple[str, ...], site: Site):
    return itertools.product(*(range(site.sizes[t]) for t in taps))


def _tap_loop(site: Site, windowed: Operand, other: Operand,
              tap_dims: tuple[int, ...]) -> Optional[Step]:
    """A tap loop when window taps meet `other`: only where each tap is an elementwise
    multiply-accumulate (depthwise), or where the window view would exceed
    `MAX_WINDOW_ELEMENTS` (elsewhere a per-tap matrix product measured slower than one
    einsum over the window); taps kept in the result: where `other` has no tap legs."""
    legs, other_legs, out = windowed.legs, other.legs, site.out
    window_taps = tuple(legs[d] for d in tap_dims)
    taps = tuple(t for t in window_taps if t in other_legs and t not in out)
    if not taps:
        return _tap_output(site, windowed, other, window_taps)
    if site.size(taps) > MAX_TAPS:
        return None
    elementwise = set(other_legs) - set(taps) <= set(legs)
    if not elementwise and site.size(legs) <= MAX_WINDOW_ELEMENTS:
        return None
    keep_v = tuple(leg for leg in legs if leg not in taps)
    keep_w = tuple(leg for leg in other_legs if leg not in taps)
    selections = tuple((_pick(legs, taps, values), _pick(other_legs, taps, values))
                       for values in _tap_values(taps, site))
    equation = spell([keep_v, keep_w], out)
    inputs = (windowed.register, other.register)
    if elementwise and sorted(keep_v) == sorted(out):
        return TapLoop(inputs, site.output, equation, selections, _broadcast(keep_v, keep_w, site),
                       tuple(keep_v.index(leg) for leg in out))
    return TapLoop(inputs, site.output, equation, selections)


def _tap_output(site: Site, windowed: Operand, other: Operand,
                window_taps: tuple[str, ...]) -> Optional[TapOutput]:
    legs, other_legs, out = windowed.legs, other.legs, site.out
    taps = tuple(t for t in window_taps if t in out and t not in other_legs)
    if not taps or site.size(taps) > MAX_TAPS or not set(other_legs) <= set(legs):
        return None
    keep_v = tuple(leg for leg in legs if leg not in taps)
    kept = tuple(leg for leg in keep_v if leg in out)
    rest = tuple(leg for leg in out if leg not in taps)
    if sorted(kept) != sorted(rest):
        return None
    selections = tuple((_pick(legs, taps, values), _pick(out, taps, values))
                       for values in _tap_values(taps, site))
    return TapOutput(
        (windowed.register, other.register), site.output, _broadcast(keep_v, other_legs, site),
        tuple(d for d, leg in enumerate(keep_v) if leg not in out),
        tuple(kept.index(leg) for leg in rest), site.shape(out), selections)


# ------------------------------------------------------------------ shift steps
def _kind(leg: str, other_legs: tuple[str, ...], out: tuple[str, ...]) -> Optional[str]:
    if leg in out:
        return "shared" if leg in other_legs else "kept"
    return "summed" if leg in other_legs else None


def _pairs(legs: tuple[str, ...], tap_dims: tuple[int, ...]) -> Optional[int]:
    """The number of leading legs where the windowed legs end in (o, k) pairs, else None."""
    leading = len(legs) - 2 * len(tap_dims)
    if not tap_dims or list(tap_dims) != list(range(leading + 1, len(legs), 2)):
        return None
    return leading


def _shift_gemm(site: Site, windowed: Operand, other: Operand,
                tap_dims: tuple[int, ...]) -> Optional[Step]:
    """A shift-GEMM where a grouped stride-1 window view meets `other`, else None. Taps
    summed (a convolution): leading legs ordered (kept, shared, summed). Taps kept with
    the window starts summed (a weight VJP): leading legs ordered (summed, shared, kept)."""
    legs, other_legs, out = windowed.legs, other.legs, site.out
    leading = _pairs(legs, tap_dims)
    if leading is None:
        return None
    lead, starts, taps = legs[:leading], legs[leading::2], legs[leading + 1::2]
    kinds = [_kind(leg, other_legs, out) for leg in lead]
    extra = tuple(leg for leg in other_legs if leg not in legs)
    if None in kinds or any(leg not in out for leg in extra):
        return None
    group = {k: tuple(leg for leg, kind in zip(lead, kinds) if kind == k)
             for k in ("kept", "shared", "summed")}
    kept, shared, summed = group["kept"], group["shared"], group["summed"]
    if not shared:  # dense convolutions: one einsum measured as fast
        return None
    inputs, equation = (windowed.register, other.register), spell([legs, other_legs], out)
    summed_taps = all(t in other_legs and t not in out for t in taps) and all(
        o in out and o not in other_legs for o in starts)
    kept_taps = all(t in out and t not in other_legs for t in taps) and all(
        o in other_legs and o not in out for o in starts)
    if (summed_taps and extra and lead == kept + shared + summed
            and sorted(other_legs) == sorted(shared + extra + summed + taps)
            and site.size(extra + summed) > 1
            and site.size(extra) * site.size(summed) <= SHIFT_GEMM_MAX_BLOCK):
        accumulated = kept + shared + extra + starts
        return ShiftGemm(
            inputs, site.output, equation, (len(kept), len(shared), len(summed)),
            tuple(other_legs.index(leg) for leg in shared + extra + summed + taps),
            (site.shape(kept), site.shape(shared), site.shape(extra), site.shape(summed)),
            tuple(accumulated.index(leg) for leg in out))
    if (kept_taps and lead == summed + shared + kept
            and sorted(other_legs) == sorted(summed + shared + extra + starts)
            and _taps_pay(site.size(extra), site.size(kept), site.size(taps),
                          site.size(summed + shared))):
        result = taps + shared + extra + kept
        return ShiftGemmOutput(
            inputs, site.output, equation, (len(summed), len(shared), len(kept)),
            tuple(other_legs.index(leg) for leg in summed + shared + extra + starts),
            (site.shape(summed), site.shape(shared), site.shape(extra), site.shape(kept)),
            tuple(result.index(leg) for leg in out))
    return None


#: A taps-summed shift-GEMM runs only where one group's weight block per tap (out × in
#: channels) has at most this many entries: larger blocks make one product over the laid-out
#: windows faster (AlexNet's 2-group 5×5, 128 × 48 per group: forward 2.9x torch as one
#: einsum against 5.3x tap by tap; ResNeXt's 32 groups of 4 × 4: 0.58x tap by tap against
#: 6.0x as a batch of tiny products).
SHIFT_GEMM_MAX_BLOCK = 1024

#: A taps-kept shift-GEMM may move up to this many times what laying the windows out once
#: moves (its per-tap products are often better shaped than one product of the windows).
TAPS_TRAFFIC_LIMIT = 4
#: Above this many rows (batch and group legs) the einsum over laid-out windows is a
#: batch of many small products, which torch runs slowly: the shift-GEMM stays.
TAPS_MAX_BATCH = 64


def _taps_pay(width: int, inner: int, taps: int, rows: int) -> bool:
    """Whether reading the data in place tap by tap moves at most `TAPS_TRAFFIC_LIMIT` times
    what laying the windows out once moves: per output position, taps·(width + inner)
    reads against a write and a read of the taps·inner windows plus a read of the width
    rows, i.e. width·(taps − 1) against taps·inner (a 3-channel C3D input under 64 output
    channels: 27 thin products, each re-reading the cotangent, 5x slower). With more than
    `TAPS_MAX_BATCH` rows it stays (a 1d depthwise layer's GGN with 10 columns: the einsum
    over its windows, 1024 products of [31, 400] @ [400, 10], took 0.5-14 s)."""
    return rows > TAPS_MAX_BATCH or width * (taps - 1) <= TAPS_TRAFFIC_LIMIT * taps * inner


def _shift_tap(site: Site, windowed: Operand, other: Operand,
               tap_dims: tuple[int, ...]) -> Optional[ShiftTap]:
    """Windows meeting a weight elementwise (depthwise): every leading leg kept, every tap
    summed, the weight carrying only taps and leading legs (any stride: strided windows
    run on a grid of output positions instead of a flat run)."""
    legs, other_legs, out = windowed.legs, other.legs, site.out
    leading = _pairs(legs, tap_dims)
    if leading is None or leading < 1:
        return None
    lead, starts, taps = legs[:leading], legs[leading::2], legs[leading + 1::2]
    if (any(t not in other_legs or t in out for t in taps)
            or any(o not in out or o in other_legs for o in starts)
            or any(leg not in out for leg in lead)
            or not set(other_legs) <= set(lead) | set(taps)
            or sorted(out) != sorted(lead + starts)):
        return None
    on_weight = tuple(leg for leg in lead if leg in other_legs)
    return ShiftTap(
        (windowed.register, other.register), site.output, spell([legs, other_legs], out),
        leading, tuple(other_legs.index(leg) for leg in on_weight + taps),
        tuple(site.sizes[leg] if leg in other_legs else 1 for leg in lead) + (site.size(taps),),
        tuple((lead + starts).index(leg) for leg in out))
