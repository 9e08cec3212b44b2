"""Runtime of the conv family: torch's convolution kernels on the data under a window view.

The windowed register is a strided view [lead…, o1, k1, o2, k2, …]; the data the
windows read is recovered from its strides (start stride = step · pixel stride, tap
stride = dilation · pixel stride) over the extent they reach, the leading legs laid
out as [batch, groups · channels], and torch's kernel runs with that stride and
dilation and no padding (the view padded already). A step with `padding` set
(`tnconv.lower.schedule.conv_views`) reads the unpadded data [lead…, spatial…]
itself and the kernel pads; one with `transposed` set reads the data before its
dilation too and runs torch's transposed convolution. Where the strides do not say
where the pixels are, or autograd records the step, the plain einsum runs (on the
step's window view).

>>> import torch
>>> from tnconv.lower.schedule.conv import ConvKernel
>>> x, w = torch.rand(2, 3, 9, dtype=torch.float64), torch.rand(4, 3, 3, dtype=torch.float64)
>>> step = ConvKernel((0, 1), 2, "abcd,ebd->aec", False, 2, (0, 1), (0, 1, 2), (2, 1, 3, 4),
...                   (2, 4), (3,), (2,), (1,), (0, 1, 2))
>>> torch.allclose(bind(step, [], None)([x.unfold(2, 3, 2), w, None]),
...                torch.nn.functional.conv1d(x, w, stride=2))
True
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from tnconv.ir.views import View
from tnconv.lower.schedule.conv import ConvKernel

__all__ = ["bind"]

Run = Callable[[Sequence[Any]], torch.Tensor]


def _data(step: ConvKernel, v: torch.Tensor) -> Optional[torch.Tensor]:
    """[batch, groups · channels, extent…]: the pixels the windows of `v` read, or None."""
    lead = step.leading
    shape, strides = tuple(v.shape), v.stride()
    extents, pixel_strides = [], []
    for d, (size, stride, dilation) in enumerate(zip(step.kernel, step.stride, step.dilation)):
        starts, taps = shape[lead + 2 * d], shape[lead + 2 * d + 1]
        s_start, s_tap = strides[lead + 2 * d], strides[lead + 2 * d + 1]
        if taps > 1:
            pixel, rest = divmod(s_tap, dilation)
            if rest or (starts > 1 and s_start != stride * pixel):
                return None
        elif starts > 1:
            pixel, rest = divmod(s_start, stride)
            if rest:
                return None
        else:
            pixel = 1
        extents.append((starts - 1) * stride + (taps - 1) * dilation + 1)
        pixel_strides.append(pixel)
    return _laid(step, v.as_strided(shape[:lead] + tuple(extents),
                                    strides[:lead] + tuple(pixel_strides), v.storage_offset()))


def _laid(step: ConvKernel, v: torch.Tensor) -> torch.Tensor:
    """[batch, groups · channels, spatial…] from a register [lead…, spatial…]."""
    batch, groups, channels, _ = step.sizes
    lead = step.leading
    return v.permute(step.data_order + tuple(range(lead, v.dim()))).reshape(
        batch, groups * channels, *v.shape[lead:])


def bind(step: ConvKernel, registers: Sequence[Any], device: Any = None) -> Run:
    """The call of a conv-family step."""
    windowed, other = step.inputs
    batch, groups, channels, out = step.sizes
    ndim = len(step.kernel)
    stride, dilation = list(step.stride), list(step.dilation)
    padding = list(step.padding) if step.padding is not None else [0] * ndim
    spatial = tuple(range(3, 3 + ndim))
    taps = step.other_order[len(step.other_order) - ndim:]  # the other's tap dims

    def kernel(data: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        laid = w.permute(step.other_order)
        if step.weight:
            cotangent = laid.reshape(batch, groups * out, *laid.shape[laid.dim() - ndim:])
            placeholder = data.new_empty(1).expand(groups * out, channels, *step.kernel)
            result = torch.ops.aten.convolution_backward(
                cotangent, data, placeholder, None, stride, padding, dilation, False,
                [0] * ndim, groups, [False, True, False])[1]
        elif step.transposed is not None:  # the kernel unflipped, [in, out / groups, K…]
            weights = laid.reshape(groups, out, channels, *step.kernel).transpose(1, 2)
            if step.kernel_flipped:
                weights = weights.flip(spatial)
            weights = weights.reshape(groups * channels, out, *step.kernel)
            result = torch.ops.aten.convolution(
                data, weights, None, list(step.transposed), padding, dilation, True,
                list(step.output_padding), groups)
        else:
            weights = laid.reshape(groups * out, channels, *step.kernel)
            result = torch.ops.aten.convolution(data, weights, None, stride, padding, dilation,
                                                False, [0] * ndim, groups)
        result = result.reshape(*step.lead_shape, *result.shape[result.dim() - ndim:])
        return result.permute(step.permutation)

    def run(r: Sequence[Any]) -> torch.Tensor:
        v, w = r[windowed], r[other]
        records = torch.is_grad_enabled() and (v.requires_grad or w.requires_grad)
        if step.absorbed is not None:  # the register holds the data before these view steps
            if records:  # the step's einsum, on the windows' view and kernel
                viewed = View(tuple(v.shape), step.absorbed).apply_torch(v)
                kernel_ = w if step.kernel_flipped else w.flip(taps)
                return torch.einsum(step.equation, viewed, kernel_)
            return kernel(_laid(step, v), w)
        data = None if records else _data(step, v)
        if data is None:
            return torch.einsum(step.equation, v, w)
        return kernel(data, w)

    return run
