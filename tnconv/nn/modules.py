"""Drop-in convolution modules computed by tnconv, and `convert` to swap them into a model.

`Conv1d/2d/3d` and `ConvTranspose1d/2d/3d` take torch's constructor arguments
(plus a keyword-only `strategy`, "auto" or "tn"), hold the same parameters,
initialise them the same way and have the same `state_dict` keys in the same
order, so a checkpoint of a `torch.nn.Conv2d` loads strictly into a
`tnconv.nn.Conv2d` and back. Their forward is `tnconv.conv` /
`tnconv.conv_transpose` with the module's hyper-parameters, so the backward
is tnconv's memory-saving one: a frozen layer keeps no input for backward.

Each class subclasses its torch namesake and replaces only the computation
(`forward` and `_conv_forward`): the constructor, the parameters, their
initialisation (`reset_parameters`), `state_dict` and `repr` stay torch's own,
and `isinstance(m, torch.nn.Conv2d)` stays true, so code that finds
convolutions by type (hooks, KFAC libraries, `tnconv.kfc`) keeps working.

>>> import torch, tnconv
>>> layer = torch.nn.Conv2d(3, 8, 3, padding="same", padding_mode="reflect")
>>> twin = tnconv.nn.Conv2d(3, 8, 3, padding="same", padding_mode="reflect")
>>> twin.load_state_dict(layer.state_dict())
<All keys matched successfully>
>>> x = torch.rand(2, 3, 10, 10)
>>> torch.allclose(twin(x), layer(x), atol=1e-5)
True
>>> model = tnconv.nn.convert(torch.nn.Sequential(layer, torch.nn.ReLU()))
>>> type(model[0]).__module__, model[0].weight is layer.weight
('tnconv.nn.modules', True)
>>> type(tnconv.nn.convert(model, reverse=True)[0]) is torch.nn.Conv2d
True
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch

from tnconv.compiler import STRATEGIES
from tnconv.errors import argument_error
from tnconv.nn.functional import conv
from tnconv.nn.transposed import conv_transpose

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
           "ConvTranspose3d", "convert"]


def _checked_strategy(owner: str, strategy: Any) -> str:
    if strategy not in STRATEGIES:
        raise argument_error(owner, "strategy", strategy, ", ".join(repr(s) for s in STRATEGIES))
    return strategy


class _TNConvMixin:
    """torch's constructor plus a keyword-only `strategy`; the `repr` names a non-default one."""

    strategy: str

    def __init__(self, *args: Any, strategy: str = "auto", **kwargs: Any) -> None:
        _checked_strategy(f"tnconv.nn.{type(self).__name__}", strategy)
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.strategy = strategy

    def extra_repr(self) -> str:
        text = super().extra_repr()  # type: ignore[misc]
        return text if self.strategy == "auto" else f"{text}, strategy={self.strategy!r}"


class _TNConvNd(_TNConvMixin):
    """Forward of Conv1d/2d/3d: `tnconv.conv` (every padding mode in one network)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(input, self.weight, self.bias)  # type: ignore[attr-defined]

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor]) -> torch.Tensor:
        return conv(input, weight, bias, self.stride, self.padding,  # type: ignore[attr-defined]
                    self.dilation, self.groups, self.padding_mode,  # type: ignore[attr-defined]
                    strategy=self.strategy)


class _TNConvTransposeNd(_TNConvMixin):
    """Forward of ConvTranspose1d/2d/3d: `tnconv.conv_transpose`; `output_size` as torch."""

    _spatial_dims: int

    def forward(self, input: torch.Tensor, output_size: Optional[list[int]] = None) -> torch.Tensor:
        return conv_transpose(input, self.weight, self.bias, self.stride,  # type: ignore
                              self.padding, self._checked_output_padding(input, output_size),
                              self.groups, self.dilation, strategy=self.strategy)  # type: ignore

    def _checked_output_padding(self, input: torch.Tensor,
                                output_size: Optional[list[int]]) -> tuple[int, ...]:
        """torch's output padding for `output_size` (or the module's), its errors as ours."""
        op = f"tnconv.nn.{type(self).__name__}"
        if self.padding_mode != "zeros":  # type: ignore[attr-defined]
            raise argument_error(op, "padding_mode", self.padding_mode,  # type: ignore
                                 "'zeros' (as torch's transposed convolutions)")
        try:
            return tuple(self._output_padding(  # type: ignore[attr-defined]
                input, output_size, self.stride, self.padding, self.kernel_size,  # type: ignore
                self._spatial_dims, self.dilation))  # type: ignore[attr-defined]
        except (ValueError, TypeError, AttributeError) as err:  # torch's checks of output_size
            raise argument_error(op, "output_size", output_size, f"a valid size ({err})") from None


class Conv1d(_TNConvNd, torch.nn.Conv1d):
    """`torch.nn.Conv1d`, computed by `tnconv.conv`."""


class Conv2d(_TNConvNd, torch.nn.Conv2d):
    """`torch.nn.Conv2d`, computed by `tnconv.conv`."""


class Conv3d(_TNConvNd, torch.nn.Conv3d):
    """`torch.nn.Conv3d`, computed by `tnconv.conv`."""


class ConvTranspose1d(_TNConvTransposeNd, torch.nn.ConvTranspose1d):
    """`torch.nn.ConvTranspose1d`, computed by `tnconv.conv_transpose`."""

    _spatial_dims = 1


class ConvTranspose2d(_TNConvTransposeNd, torch.nn.ConvTranspose2d):
    """`torch.nn.ConvTranspose2d`, computed by `tnconv.conv_transpose`."""

    _spatial_dims = 2


class ConvTranspose3d(_TNConvTransposeNd, torch.nn.ConvTranspose3d):
    """`torch.nn.ConvTranspose3d`, computed by `tnconv.conv_transpose`."""

    _spatial_dims = 3


#: torch class -> tnconv twin (exact classes: a subclass may compute something else).
TWINS: dict[type, type] = {
    torch.nn.Conv1d: Conv1d, torch.nn.Conv2d: Conv2d, torch.nn.Conv3d: Conv3d,
    torch.nn.ConvTranspose1d: ConvTranspose1d, torch.nn.ConvTranspose2d: ConvTranspose2d,
    torch.nn.ConvTranspose3d: ConvTranspose3d,
}
ORIGINALS: dict[type, type] = {twin: original for original, twin in TWINS.items()}


def _swapped(module: torch.nn.Module, cls: type, strategy: str) -> torch.nn.Module:
    """A module of class `cls` with `module`'s state: the same Parameter and buffer objects
    (shared, not copied), copies of the containers that hold them and of its hooks."""
    swapped = cls.__new__(cls)
    state = {key: copy.copy(value) if isinstance(value, (dict, set)) else value
             for key, value in vars(module).items() if key != "strategy"}
    vars(swapped).update(state)
    if cls in ORIGINALS:
        vars(swapped)["strategy"] = strategy
    return swapped


def convert(model: torch.nn.Module, reverse: bool = False, *,
            strategy: str = "auto") -> torch.nn.Module:
    """Swap every torch convolution in `model` for its tnconv twin (`reverse=True`: back).

    The swap happens in place in `model`'s children (as
    `torch.nn.SyncBatchNorm.convert_sync_batchnorm` does) and the model is
    returned; a model that is itself a convolution comes back swapped. Weights
    and buffers are shared with the replaced module, not copied, so an optimizer
    built before the swap still updates them; hooks carry over. Only the exact
    torch classes are swapped (a subclass may compute something else, a Lazy
    module is swapped after its first forward, when it has become a Conv).
    `strategy` ("auto" or "tn") is the twins' strategy.

    Examples:
        >>> import torch, tnconv
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> weight = model[0].weight
        >>> model = tnconv.nn.convert(model, strategy="tn")
        >>> type(model[0]).__name__, model[0].weight is weight, model[0].strategy
        ('Conv2d', True, 'tn')
        >>> isinstance(model[0], tnconv.nn.Conv2d)
        True
        >>> type(tnconv.nn.convert(model, reverse=True)[0]) is torch.nn.Conv2d
        True
    """
    op = "tnconv.nn.convert"
    if not isinstance(model, torch.nn.Module):
        raise argument_error(op, "model", type(model).__name__, "a torch.nn.Module")
    if not isinstance(reverse, bool):
        raise argument_error(op, "reverse", reverse, "True or False")
    _checked_strategy(op, strategy)
    table = ORIGINALS if reverse else TWINS
    done: dict[int, tuple[torch.nn.Module, torch.nn.Module]] = {}  # id -> (module, swapped)

    def swap(module: torch.nn.Module) -> torch.nn.Module:
        if id(module) in done:  # a module shared by two parents gets one twin
            return done[id(module)][1]
        target = table.get(type(module))
        result = module if target is None else _swapped(module, target, strategy)
        done[id(module)] = (module, result)  # the module stays alive: its id is not reused
        for name, child in list(result._modules.items()):
            if child is not None:
                result._modules[name] = swap(child)
        return result

    return swap(model)
