"""Runtime of the windows family: window views contracted on the data in place.

Tap loops slice the data once per tap; the shift steps find each tap's contiguous run
in a stride-1 window view (`_Runs`, from the view's actual strides) and run one
batched product or multiply-add per tap. Where there is no contiguous run, or
autograd records the step (a double backward differentiates the plan itself, and
in-place accumulation into `out=` buffers cannot be recorded), a shift step runs its
plain einsum instead.

>>> import torch
>>> from tnconv.lower.schedule.windows import TapLoop
>>> x, w = torch.rand(2, 9, dtype=torch.float64), torch.rand(3, dtype=torch.float64)
>>> step = TapLoop((0, 1), 2, "ab,->ab", ((( -1, -1, 0), (0,)), ((-1, -1, 1), (1,)),
...                                       ((-1, -1, 2), (2,))), ((), (1, 1)), (0, 1))
>>> torch.allclose(bind(step, [])([x.unfold(1, 3, 1), w, None]), torch.einsum(
...     "nok,k->no", x.unfold(1, 3, 1), w))
True
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import gcd, prod
from typing import Any, Callable, Optional, Sequence

import torch

from tnconv.lower.schedule.windows import (ALL, ShiftGemm, ShiftGemmOutput, ShiftTap, TapLoop,
                                           TapOutput)

__all__ = ["bind"]

Run = Callable[[Sequence[Any]], torch.Tensor]
#: Bytes of rows that one block of a tap-by-tap step keeps in cache over all the taps.
_BLOCK_BYTES = 2 ** 24
#: Bytes of the reused buffer that data laid out under the output positions fills a block
#: of rows at a time (`_taps_laid_out`): small enough to stay in cache between its copy
#: and its product (4 MiB measured 16.6 ms, 16 MiB 21.6 ms on a GGN diagonal's block).
_LAID_OUT_BYTES = 2 ** 22


def bind(step: Any, registers: Sequence[Any], device: Any = None) -> Run:
    """The call of a windows-family step."""
    if isinstance(step, TapLoop):
        return _tap_loop(step)
    if isinstance(step, TapOutput):
        return _tap_output(step)
    body = {ShiftGemm: _shift_gemm, ShiftGemmOutput: _shift_gemm_output,
            ShiftTap: _shift_tap}[type(step)]
    return _in_place(step, body)


def _index(pick: tuple[int, ...]) -> tuple:
    return tuple(slice(None) if p == ALL else p for p in pick)


def _tap_loop(step: TapLoop) -> Run:
    windowed, other = step.inputs
    selections = [(_index(a), _index(b)) for a, b in step.selections]
    if step.broadcast is not None:
        order, shape = step.broadcast
        permutation = step.permutation

        def run(r: Sequence[Any]) -> torch.Tensor:
            v, w = r[windowed], r[other]
            (first_v, first_w), *rest = selections
            total = v[first_v] * w[first_w].permute(order).reshape(shape)
            for pick_v, pick_w in rest:
                total.addcmul_(v[pick_v], w[pick_w].permute(order).reshape(shape))
            return total.permute(permutation)

        return run
    equation = step.equation

    def loop(r: Sequence[Any]) -> torch.Tensor:
        v, w = r[windowed], r[other]
        total = None
        for pick_v, pick_w in selections:
            part = torch.einsum(equation, v[pick_v], w[pick_w])
            total = part if total is None else total.add_(part)
        return total

    return loop


def _tap_output(step: TapOutput) -> Run:
    windowed, other = step.inputs
    order, shape = step.broadcast
    selections = [(_index(a), _index(b)) for a, b in step.selections]

    def run(r: Sequence[Any]) -> torch.Tensor:
        v, w = r[windowed], r[other].permute(order).reshape(shape)
        out = v.new_empty(step.out_shape)
        for pick_v, place in selections:
            part = v[pick_v] * w
            part = part.sum(step.summed) if step.summed else part  # sum(()) sums everything
            out[place] = part.permute(step.permutation)
        return out

    return run


# ------------------------------------------------------------------ shift steps
@dataclass(frozen=True)
class _Runs:
    """Each tap's run in a stride-1 window view: where it starts, how long it is."""

    lead_shape: tuple[int, ...]
    lead_strides: tuple[int, ...]
    outputs: tuple[int, ...]
    o_strides: tuple[int, ...]
    taps: tuple[int, ...]
    length: int
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, v: torch.Tensor, leading: int) -> Optional["_Runs"]:
        """None where the window starts have no unit stride (no contiguous run)."""
        strides, shape = v.stride(), tuple(v.shape)
        o_strides, k_strides = strides[leading::2], strides[leading + 1::2]
        if not o_strides or min(o_strides) != 1:
            return None
        outputs, taps = shape[leading::2], shape[leading + 1::2]
        offsets = tuple(v.storage_offset() + sum(k * s for k, s in zip(tap, k_strides))
                        for tap in itertools.product(*(range(k) for k in taps)))
        length = sum((o - 1) * s for o, s in zip(outputs, o_strides)) + 1
        return cls(shape[:leading], strides[:leading], outputs, o_strides, taps, length, offsets)

    def row_stride(self) -> Optional[int]:
        """The stride of the leading legs merged into one row leg (None where they do not)."""
        if not self.lead_shape:
            return None
        shape, strides = self.lead_shape, self.lead_strides
        if any(strides[d] != strides[d + 1] * shape[d + 1] for d in range(len(shape) - 1)):
            return None
        return strides[-1]

    def positions(self, buffer: torch.Tensor, lead: tuple[int, ...]) -> torch.Tensor:
        """The output positions [lead…, O…] of a contiguous [lead…, …, run] buffer."""
        strides, step = [], self.length
        for size in reversed(lead):
            strides.append(step)
            step *= size
        return buffer.as_strided(lead + self.outputs, tuple(reversed(strides)) + self.o_strides)

    def tap(self, v: torch.Tensor, t: int) -> torch.Tensor:
        """[lead…, run] of tap t, read in place."""
        return v.as_strided(self.lead_shape + (self.length,), self.lead_strides + (1,),
                            self.offsets[t])

    def at_outputs(self, v: torch.Tensor, t: int) -> torch.Tensor:
        """[lead…, O…] of tap t: the data it reads at each output position, in place."""
        return v.as_strided(self.lead_shape + self.outputs, self.lead_strides + self.o_strides,
                            self.offsets[t])


@dataclass(frozen=True)
class _Grid:
    """Each tap's grid of output positions in a strided window view: [rows, O…] at the
    offsets of the taps, the leading legs merged into one row leg."""

    lead_shape: tuple[int, ...]
    row_stride: int
    outputs: tuple[int, ...]
    o_strides: tuple[int, ...]
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, v: torch.Tensor, leading: int) -> Optional["_Grid"]:
        """None where the leading legs do not merge into one row leg."""
        strides, shape = v.stride(), tuple(v.shape)
        lead = shape[:leading]
        if not lead or any(strides[d] != strides[d + 1] * shape[d + 1]
                           for d in range(leading - 1)):
            return None
        k_strides, taps = strides[leading + 1::2], shape[leading + 1::2]
        offsets = tuple(v.storage_offset() + sum(k * s for k, s in zip(tap, k_strides))
                        for tap in itertools.product(*(range(k) for k in taps)))
        return cls(lead, strides[leading - 1], shape[leading::2], strides[leading::2], offsets)


@dataclass(frozen=True)
class _Phases:
    """Strided windows split by phase: per spatial dimension, window start o·S and tap
    offset k·D (in units of their common divisor) meet at position S·(o + b) + r, with
    r = k·D mod S and b = k·D div S. Each phase r, copied out once as a contiguous
    [rows, E…] block, holds every tap of that phase as a stride-1 run at shift b."""

    grid: _Grid
    units: tuple[int, ...]     # element stride of one position step, per dimension
    strides: tuple[int, ...]   # S per dimension, in units
    extents: tuple[int, ...]   # E per dimension: the largest extent any phase needs
    phases: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]  # (r, extent) per phase
    taps: tuple[tuple[int, int], ...]  # per tap: its phase, its flat shift in the block

    @classmethod
    def of(cls, v: torch.Tensor, leading: int, grid: _Grid) -> Optional["_Phases"]:
        """None where fewer taps than phases (no tap shares a copied phase)."""
        o_strides, k_strides = v.stride()[leading::2], v.stride()[leading + 1::2]
        taps = tuple(v.shape[leading + 1::2])
        if min(o_strides) <= 0 or min(k_strides) < 0:
            return None
        units = tuple(gcd(o, k) if k else o for o, k in zip(o_strides, k_strides))
        strides = tuple(o // u for o, u in zip(o_strides, units))
        steps = tuple(k // u for k, u in zip(k_strides, units))
        # per dimension and phase: the largest shift of a tap in it
        shifts = [{} for _ in taps]
        for d, (size, step, stride) in enumerate(zip(taps, steps, strides)):
            for k in range(size):
                r, b = divmod(k * step, stride)[::-1]
                shifts[d][r] = max(shifts[d].get(r, 0), b)
        phase_list = list(itertools.product(*(sorted(s) for s in shifts)))
        if len(phase_list) >= prod(taps):
            return None
        extents = tuple(o + max(s.values()) for o, s in zip(grid.outputs, shifts))
        flat = [prod(extents[d + 1:]) for d in range(len(extents))]
        index = {r: i for i, r in enumerate(phase_list)}
        tap_list = []
        for tap in itertools.product(*(range(k) for k in taps)):
            r = tuple((k * s) % S for k, s, S in zip(tap, steps, strides))
            b = tuple((k * s) // S for k, s, S in zip(tap, steps, strides))
            tap_list.append((index[r], sum(x * f for x, f in zip(b, flat))))
        phases = tuple((r, tuple(o + shifts[d][r[d]] for d, o in enumerate(grid.outputs)))
                       for r in phase_list)
        return cls(grid, units, strides, extents, phases, tuple(tap_list))

    def split(self, v: torch.Tensor) -> torch.Tensor:
        """[phases, rows, E…]: each phase copied once; where a phase needs less than E in a
        dimension, the rest is zero (read only by positions that no output keeps)."""
        grid, rows = self.grid, prod(self.grid.lead_shape)
        out = v.new_empty(len(self.phases), rows, *self.extents)
        for p, (r, extent) in enumerate(self.phases):
            start = grid.offsets[0] + sum(x * u for x, u in zip(r, self.units))
            source = v.as_strided((rows, *extent),
                                  (grid.row_stride, *(S * u for S, u in
                                                      zip(self.strides, self.units))), start)
            out[p][(slice(None), *(slice(0, e) for e in extent))].copy_(source)
            for d, (e, full) in enumerate(zip(extent, self.extents)):
                if e < full:
                    out[p][(slice(None),) * (d + 1) + (slice(e, full),)].zero_()
        return out


def _row_weights(step: ShiftTap, w: torch.Tensor, lead_shape: tuple[int, ...]) -> torch.Tensor:
    """The depthwise weight as [taps, rows]: each row's scale for each tap."""
    weight = w.permute(step.weight_permutation).reshape(step.weight_shape)
    return weight.expand(*lead_shape, -1).reshape(prod(lead_shape), -1).T.contiguous()


def _tap_by_tap(out: torch.Tensor, weight: torch.Tensor, taps: int,
                read: Callable[[int, int, int], torch.Tensor]) -> torch.Tensor:
    """out[rows, …] = Σ_t weight[t, row] · read(t, start, count), in blocks of rows that stay
    in cache over all the taps (`read` gives tap t's data for rows start:start + count)."""
    rows, ones = out.shape[0], (1,) * (out.dim() - 1)
    block = max(1, _BLOCK_BYTES // (2 * out[0].numel() * out.element_size()))
    for start in range(0, rows, block):
        count = min(block, rows - start)
        acc = out[start:start + count]
        for t in range(taps):
            data, scale = read(t, start, count), weight[t, start:start + count].view(count, *ones)
            if t == 0:
                torch.mul(data, scale, out=acc)
            else:
                acc.addcmul_(data, scale)
    return out


def _shift_tap_phases(step: ShiftTap, v: torch.Tensor, w: torch.Tensor,
                      phases: _Phases) -> torch.Tensor:
    """Depthwise taps on strided windows: the input split by phase once, then per block of
    rows one multiply-add per tap over its stride-1 run in its phase."""
    grid = phases.grid
    rows, block_size = prod(grid.lead_shape), prod(phases.extents)
    flat = [prod(phases.extents[d + 1:]) for d in range(len(phases.extents))]
    length = sum((o - 1) * f for o, f in zip(grid.outputs, flat)) + 1
    split = phases.split(v).view(len(phases.phases), rows, block_size)

    def read(t: int, start: int, count: int) -> torch.Tensor:
        p, shift = phases.taps[t]
        return split[p, start:start + count, shift:shift + length]

    out = _tap_by_tap(v.new_empty(rows, length), _row_weights(step, w, grid.lead_shape),
                      len(phases.taps), read)
    positions = out.as_strided((rows, *grid.outputs), (length, *flat))
    return positions.reshape(*grid.lead_shape, *grid.outputs).permute(step.permutation)


def _shift_tap_grid(step: ShiftTap, v: torch.Tensor, w: torch.Tensor,
                    grid: _Grid) -> torch.Tensor:
    """Depthwise taps on strided windows: per block of rows, one multiply-add per tap of its
    grid of positions, read in place."""
    def read(t: int, start: int, count: int) -> torch.Tensor:
        return v.as_strided((count, *grid.outputs), (grid.row_stride, *grid.o_strides),
                            grid.offsets[t] + start * grid.row_stride)

    out = _tap_by_tap(v.new_empty(prod(grid.lead_shape), *grid.outputs),
                      _row_weights(step, w, grid.lead_shape), len(grid.offsets), read)
    return out.view(*grid.lead_shape, *grid.outputs).permute(step.permutation)


def _leading(step: Any) -> int:
    return step.leading if isinstance(step, ShiftTap) else sum(step.lead)


def _in_place(step: Any, body: Callable) -> Run:
    """`body` on the runs of the windowed operand, or the step's einsum where there are none
    (depthwise taps on strided windows: on their grid of positions)."""
    windowed, other = step.inputs
    leading, equation = _leading(step), step.equation
    depthwise = isinstance(step, ShiftTap)

    def run(r: Sequence[Any]) -> torch.Tensor:
        v, w = r[windowed], r[other]
        if torch.is_grad_enabled() and (v.requires_grad or w.requires_grad):
            return torch.einsum(equation, v, w)
        runs = _Runs.of(v, leading)
        if depthwise and (runs is None or runs.row_stride() is None):
            grid = _Grid.of(v, leading)
            if grid is not None:
                phases = _Phases.of(v, leading, grid)
                if phases is not None:
                    return _shift_tap_phases(step, v, w, phases)
                return _shift_tap_grid(step, v, w, grid)
            return torch.einsum(equation, v, w)
        if runs is None or (depthwise and runs.row_stride() is None):
            return torch.einsum(equation, v, w)
        return body(step, v, w, runs)

    return run


def _shift_gemm(step: ShiftGemm, v: torch.Tensor, w: torch.Tensor, runs: _Runs) -> torch.Tensor:
    batch, shared, free, contracted = step.sizes
    rows, width, inner = prod(batch) * prod(shared), prod(free), prod(contracted)
    weight = w.permute(step.weight_permutation).reshape(prod(shared), width, inner, -1)
    # [taps, batch·shared, free, contracted]: the weight of every tap for every batch row
    weight = weight.permute(3, 0, 1, 2).unsqueeze(1).expand(
        -1, prod(batch), -1, -1, -1).reshape(-1, rows, width, inner)
    out = v.new_empty(rows, width, runs.length)
    for t in range(len(runs.offsets)):
        data = runs.tap(v, t).reshape(rows, inner, runs.length)
        if t == 0:
            torch.bmm(weight[0], data, out=out)
        else:
            out.baddbmm_(weight[t], data)
    return runs.positions(out, batch + shared + free).permute(step.permutation)


def _shift_gemm_output(step: ShiftGemmOutput, v: torch.Tensor, w: torch.Tensor,
                       runs: _Runs) -> torch.Tensor:
    summed, shared, other_free, free = step.sizes
    rows, width, inner = prod(summed) * prod(shared), prod(other_free), prod(free)
    if inner < width:  # the other is the larger: read it in place, lay out each tap's data
        laid = _rows_in_place(w.permute(step.other_permutation), rows, width,
                              len(summed) + len(shared))
        if laid is not None:
            return _taps_laid_out(step, v, laid, runs, rows, width, inner)
    padded = v.new_zeros(rows, width, runs.length)
    runs.positions(padded, summed + shared + other_free).copy_(w.permute(step.other_permutation))
    taps = len(runs.offsets)
    total = v.new_empty(taps, rows, width, inner)
    if width == inner == 1:  # depthwise: per tap one multiply and one sum over all rows
        laid_out = padded.view(rows, runs.length)
        for t in range(taps):
            torch.sum(laid_out * runs.tap(v, t).reshape(rows, runs.length), dim=1,
                      out=total[t].view(rows))
        return _taps_kept(step, total, runs)
    data = [runs.tap(v, t).reshape(rows, inner, runs.length).transpose(1, 2)
            for t in range(taps)]
    # Blocks of rows: a block of the laid-out cotangent stays in cache over the taps (where
    # one row is larger than that, one product per tap over all rows: fewer, larger calls).
    block = _BLOCK_BYTES // ((width + inner) * runs.length * v.element_size())
    block = block if block > 1 else rows
    for start in range(0, rows, block):
        rows_here = slice(start, start + block)
        for t in range(taps):
            torch.bmm(padded[rows_here], data[t][rows_here], out=total[t, rows_here])
    return _taps_kept(step, total, runs)


def _taps_kept(step: ShiftGemmOutput, total: torch.Tensor, runs: _Runs) -> torch.Tensor:
    """The step's result from per-tap products [taps, rows, width, inner]: the summed legs
    of the rows added up, the rest laid out as the output's legs."""
    summed, shared, other_free, free = step.sizes
    total = total.view(len(runs.offsets), prod(summed), prod(shared), prod(other_free),
                       prod(free)).sum(1)
    return total.reshape(runs.taps + shared + other_free + free).permute(step.permutation)


def _rows_in_place(w: torch.Tensor, rows: int, width: int,
                   lead: int) -> Optional[list[torch.Tensor]]:
    """`w` [rows' legs (`lead` of them)…, width's legs…, o…] as [rows, width, ∏O] without a
    copy (a product reads any row and batch stride), or as several [rows, width / J, ∏O],
    one per index j of the width's first leg, where the whole width does not merge (a GGN's
    C columns lie outermost in the sqrt factor); None where neither does."""
    try:
        return [w.view(rows, width, -1)]
    except RuntimeError:
        pass
    if w.dim() <= lead + 1 or width % w.shape[lead]:
        return None
    try:
        return [w.select(lead, j).view(rows, width // w.shape[lead], -1)
                for j in range(w.shape[lead])]
    except RuntimeError:
        return None


def _taps_laid_out(step: ShiftGemmOutput, v: torch.Tensor, laid: list[torch.Tensor],
                   runs: _Runs, rows: int, width: int, inner: int) -> torch.Tensor:
    """Taps kept where the other operand is larger than the data: the data under the
    output positions is laid out a block of rows at a time, all taps of a row (or a chunk
    of them, where one row's taps exceed the block) into one reused buffer of at most
    `_LAID_OUT_BYTES`, [rows, taps · inner, ∏O], and meets the other's rows, read in
    place, in one product per block: the other is read once, the buffer stays in cache.

    Measured on a GGN diagonal's C = 10 columns (AMD EPYC, 2 threads), MobileNetV2's
    depthwise 3×3 on 4×144×56²: 40 ms with two taps over all rows at a time (the 72 MiB
    sqrt factor read five times, the 14 MiB buffer fresh each call), 17 ms in blocks of
    36 rows. The zero-padded copy of the sqrt factor that the in-place runs would need is
    10x the input, so it is never made. `laid` holds the other's rows as one [rows, width,
    ∏O] or as consecutive parts of the width (`_rows_in_place`), each meeting the block."""
    taps = len(runs.offsets)
    row_stride = runs.row_stride()
    per_tap = inner * prod(runs.outputs) * v.element_size()  # one row's data of one tap
    chunk = max(1, min(taps, _LAID_OUT_BYTES // per_tap))
    block = max(1, _LAID_OUT_BYTES // (chunk * per_tap)) if row_stride is not None else rows
    block = min(block, rows)
    at_outputs = [runs.at_outputs(v, t) for t in range(taps)]
    if row_stride is not None:  # [rows, inner…, O…]: a block of rows is a slice
        at_outputs = [a.reshape((rows, inner) + runs.outputs) for a in at_outputs]
    total = v.new_empty(taps, rows, width, inner)
    buffer = v.new_empty((block, chunk, inner) + runs.outputs)
    for start in range(0, rows, block):
        count_rows = min(block, rows - start)
        here = slice(start, start + count_rows)
        for first in range(0, taps, chunk):
            count = min(chunk, taps - first)
            for j in range(count):
                source = at_outputs[first + j]
                target = buffer[:count_rows, j]
                if row_stride is None:
                    target.view(runs.lead_shape + runs.outputs).copy_(source)
                else:
                    target.copy_(source[here])
            data = buffer[:count_rows, :count].reshape(count_rows, count * inner, -1)
            part_width, at = width // len(laid), 0
            for part in laid:
                product = torch.bmm(part[here], data.transpose(1, 2))
                total[first:first + count, here, at:at + part_width].copy_(
                    product.view(count_rows, part_width, count, inner).permute(2, 0, 1, 3))
                at += part_width
    return _taps_kept(step, total, runs)


def _shift_tap(step: ShiftTap, v: torch.Tensor, w: torch.Tensor, runs: _Runs) -> torch.Tensor:
    row_stride = runs.row_stride()
    rows, length = prod(runs.lead_shape), runs.length

    def read(t: int, start: int, count: int) -> torch.Tensor:
        return v.as_strided((count, length), (row_stride, 1),
                            runs.offsets[t] + start * row_stride)

    out = _tap_by_tap(v.new_empty(rows, length), _row_weights(step, w, runs.lead_shape),
                      len(runs.offsets), read)
    return runs.positions(out, runs.lead_shape).permute(step.permutation)
