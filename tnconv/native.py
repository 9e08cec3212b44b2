"""Native torch kernels: the `strategy="auto"` route where a network is exactly one.

Each function takes (spec, options, *tensors) and returns the result, or
`NotImplemented` where torch has no single kernel for this spec (then the
tensor-network route runs).

>>> import torch
>>> from tnconv.spec import ConvSpec
>>> spec = ConvSpec(2, 3, kernel_size=3, input_size=(5,), padding="same", padding_mode="circular")
>>> conv_forward(spec, {}, torch.rand(1, 2, 5), torch.rand(3, 2, 3)).shape
torch.Size([1, 3, 5])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .spec import ConvSpec

__all__ = ["conv_forward", "pad_input", "NATIVE_NDIM"]

#: Spatial dimensions torch has native convolution kernels for.
NATIVE_NDIM = (1, 2, 3)
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _symmetric(spec: ConvSpec) -> bool:
    return all(left == right for left, right in spec.padding)  # type: ignore[union-attr]


def pad_input(x: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
    """Pad `x` explicitly as torch's Conv modules do (any padding mode, asymmetric pairs)."""
    pads: list[int] = []
    for left, right in reversed(spec.padding):  # type: ignore[arg-type]
        pads += [left, right]
    mode = "constant" if spec.padding_mode == "zeros" else spec.padding_mode
    return F.pad(x, pads, mode=mode)


def conv_forward(spec: ConvSpec, options: dict, x: torch.Tensor, weight: torch.Tensor) -> Any:
    """`F.conv{1,2,3}d` / `F.conv_transpose{1,2,3}d`, padding as the spec says."""
    if spec.ndim not in NATIVE_NDIM:
        return NotImplemented
    common = dict(stride=spec.stride, dilation=spec.dilation, groups=spec.groups)
    if spec.transposed:
        if not _symmetric(spec):
            return NotImplemented
        return _CONV_T[spec.ndim](x, weight, padding=[p for p, _ in spec.padding],
                                  output_padding=spec.output_padding, **common)
    if spec.padding_mode == "zeros" and _symmetric(spec):
        return _CONV[spec.ndim](x, weight, padding=[p for p, _ in spec.padding], **common)
    return _CONV[spec.ndim](pad_input(x, spec), weight, **common)
