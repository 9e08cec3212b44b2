"""Reading `torch.nn.Conv*` / `ConvTranspose*` modules into a `ConvSpec`.

>>> import torch
>>> from tnconv.spec.conv_spec import ConvSpec
>>> conv = torch.nn.Conv2d(3, 8, 3, padding="same", padding_mode="reflect")
>>> ConvSpec.from_module(conv, torch.rand(2, 3, 10, 10)).padding
((1, 1), (1, 1))
"""

from __future__ import annotations

from typing import Any

import torch

from tnconv.errors import argument_error
from tnconv.spec.conv_spec import MAX_SIZE, error_context

__all__ = ["spec_from_module", "CONV_TYPES", "TRANSPOSED_TYPES", "MODULE_TYPES"]

CONV_TYPES = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
TRANSPOSED_TYPES = (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d)
MODULE_TYPES = CONV_TYPES + TRANSPOSED_TYPES


def _ndim(module: Any) -> int:
    """1, 2 or 3: from the class, since a hyper-parameter may have been set to a plain int."""
    return next(i % 3 + 1 for i, kind in enumerate(MODULE_TYPES) if isinstance(module, kind))


def _spatial(module: Any, name: str, ndim: int, operation: str, argument: str) -> Any:
    """module.<name> as a tuple: torch's modules accept an int set after construction."""
    value = getattr(module, name, None)
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * ndim
    if name == "padding" and isinstance(value, str):
        return value
    if not isinstance(value, (tuple, list)):
        raise argument_error(operation, argument,
                             f"{type(module).__name__} with {name}={value!r}",
                             f"a module whose {name} is an int or a tuple of {ndim} ints")
    return tuple(value)


def _check_counts(module: Any, operation: str, argument: str) -> None:
    """in_channels, out_channels and groups are positive ints, the channels multiples of
    groups: checked before anything divides by them (a module's attributes can be set to
    anything after construction)."""
    name = type(module).__name__
    for field in ("in_channels", "out_channels", "groups"):
        value = getattr(module, field, None)
        if not (isinstance(value, int) and not isinstance(value, bool)
                and 1 <= value <= MAX_SIZE):
            raise argument_error(operation, argument, f"{name} with {field}={value!r}",
                                 f"a module whose {field} is a positive int (at most {MAX_SIZE})")
    for field in ("in_channels", "out_channels"):
        if getattr(module, field) % module.groups:
            raise argument_error(operation, argument,
                                 f"{name} with {field}={getattr(module, field)} and "
                                 f"groups={module.groups}",
                                 f"a module whose {field} is a multiple of its groups")


def _check_weight(module: Any, kernel: tuple[int, ...], operation: str, argument: str) -> None:
    """The weight must be the one the hyper-parameters describe: torch's forward reads the
    kernel size from the weight, so a mutated `kernel_size` would give another factor."""
    name = type(module).__name__
    weight = module.__dict__.get("_parameters", {}).get("weight")
    if weight is None:
        return
    groups, transposed = module.groups, isinstance(module, TRANSPOSED_TYPES)
    channels = ((module.in_channels, module.out_channels // groups) if transposed
                else (module.out_channels, module.in_channels // groups))
    expected = (*channels, *kernel)
    if tuple(weight.shape) != expected:
        raise argument_error(operation, argument,
                             f"{name} whose weight has shape {tuple(weight.shape)}",
                             f"a weight of shape {expected}, as its in_channels, "
                             "out_channels, kernel_size and groups say")


def _check_initialised(module: Any, operation: str, argument: str) -> None:
    weight = module.__dict__.get("_parameters", {}).get("weight")
    if (isinstance(weight, torch.nn.parameter.UninitializedParameter)
            or getattr(module, "in_channels", None) == 0):
        raise argument_error(operation, argument,
                             f"{type(module).__name__} with uninitialised parameters",
                             "an initialised module (a Lazy module after its first forward "
                             "pass)")


def _module_fields(module: Any, argument: str, x: torch.Tensor) -> dict[str, tuple[str, str]]:
    """For `error_context`: every ConvSpec field is the module's, but the input size x's."""
    name = type(module).__name__
    fields = {field: (argument, f"{name} with {field}={getattr(module, field, None)!r}")
              for field in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                            "dilation", "groups", "padding_mode", "output_padding")}
    fields["input_size"] = ("x", f"tensor of shape {tuple(x.shape)}")
    return fields


def spec_from_module(cls: Any, module: Any, x: Any, operation: str = "ConvSpec.from_module",
                     argument: str = "module"):
    """Build `cls` (a ConvSpec) from a torch conv module and its input `x`; errors name the
    module as `argument` (the caller's parameter name), every attribute checked before use."""
    if not isinstance(module, MODULE_TYPES):
        raise argument_error(operation, argument, type(module).__name__,
                             "torch.nn.Conv1d/2d/3d or ConvTranspose1d/2d/3d")
    ndim = _ndim(module)
    transposed = isinstance(module, TRANSPOSED_TYPES)
    _check_initialised(module, operation, argument)
    _check_counts(module, operation, argument)
    spatial = {name: _spatial(module, name, ndim, operation, argument)
               for name in ("kernel_size", "stride", "padding", "dilation")
               + (("output_padding",) if transposed else ())}
    _check_weight(module, spatial["kernel_size"], operation, argument)
    if not isinstance(x, torch.Tensor) or x.dim() not in (ndim + 1, ndim + 2):
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise argument_error(operation, "x", shape,
                             f"a tensor [N, C, *spatial] with {ndim} spatial dims")
    channels = x.shape[-ndim - 1]
    if channels != module.in_channels:
        raise argument_error(operation, "x", f"tensor with {channels} channels",
                             f"{module.in_channels} channels, as {type(module).__name__}")
    with error_context(operation, _module_fields(module, argument, x)):
        return cls(in_channels=module.in_channels, out_channels=module.out_channels,
                   input_size=tuple(x.shape[-ndim:]), groups=module.groups,
                   padding_mode=module.padding_mode, transposed=transposed, **spatial)
