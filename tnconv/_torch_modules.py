"""Reading `torch.nn.Conv*` / `ConvTranspose*` modules into a `ConvSpec`.

>>> import torch
>>> from tnconv.spec import ConvSpec
>>> conv = torch.nn.Conv2d(3, 8, 3, padding="same", padding_mode="reflect")
>>> ConvSpec.from_module(conv, torch.rand(2, 3, 10, 10)).padding
((1, 1), (1, 1))
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import argument_error

__all__ = ["spec_from_module", "CONV_TYPES", "TRANSPOSED_TYPES", "MODULE_TYPES"]

CONV_TYPES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
TRANSPOSED_TYPES = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
MODULE_TYPES = CONV_TYPES + TRANSPOSED_TYPES


def spec_from_module(cls: Any, module: Any, x: Any, operation: str = "ConvSpec.from_module",
                     argument: str = "module"):
    """Build `cls` (a ConvSpec) from a torch conv module and its input `x`; errors name the
    module as `argument` (the caller's parameter name)."""
    if not isinstance(module, MODULE_TYPES):
        raise argument_error(operation, argument, type(module).__name__,
                             "torch.nn.Conv1d/2d/3d or ConvTranspose1d/2d/3d")
    ndim = len(module.kernel_size)
    if not isinstance(x, torch.Tensor) or x.dim() not in (ndim + 1, ndim + 2):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise argument_error(operation, "x", shape,
                             f"a tensor [N, C, *spatial] with {ndim} spatial dims")
    channels = x.shape[-ndim - 1]
    if channels != module.in_channels:
        raise argument_error(operation, "x", f"tensor with {channels} channels",
                             f"{module.in_channels} channels, as {type(module).__name__}")
    transposed = isinstance(module, TRANSPOSED_TYPES)
    return cls(
        in_channels=module.in_channels, out_channels=module.out_channels,
        kernel_size=tuple(module.kernel_size), input_size=tuple(x.shape[-ndim:]),
        stride=tuple(module.stride), padding=module.padding if isinstance(module.padding, str)
        else tuple(module.padding), dilation=tuple(module.dilation), groups=module.groups,
        padding_mode=module.padding_mode, transposed=transposed,
        output_padding=tuple(module.output_padding) if transposed else 0,
    )
