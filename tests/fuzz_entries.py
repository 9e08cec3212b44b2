"""The public entry points the fuzz suite drives, each with its float64 reference.

An `Entry` says how to build a valid call from a `Geometry` (its tensors, its
hyper-parameters, its options), how to call tnconv with them (hyper-parameters
replaced by `overrides` where a mutation asks), and which operation of
`tests.fuzz_cases.operation_ref` is its reference.

>>> sorted(ENTRIES)[:3]
['averaged_patches', 'compile.averaged_patches', 'compile.batch_l2']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod
from typing import Any, Callable

import torch
from hypothesis import strategies as st

import tnconv
from tnconv.nn import functional as TF
from tests.fuzz_cases import Geometry, operation_ref

__all__ = ["Entry", "ENTRIES", "COMPILED_OPERATIONS", "data_tensors", "reference", "module_of",
           "effective_options"]

Tensors = dict[str, Any]


@dataclass(frozen=True)
class Entry:
    """One public entry point: `call(g, tensors, options, overrides)` runs it."""

    name: str
    operation: str  # the reference's operation (tnconv.compile's names)
    roles: tuple[str, ...]  # the data tensors, in the reference operation's order
    call: Callable[..., Any]
    hyper: tuple[str, ...]  # the hyper-parameters the caller passes (mutable)
    options: Any = field(default_factory=lambda: st.just({}))
    geometry: dict = field(default_factory=dict)  # keyword arguments of `geometries`
    factor: bool = False  # low-precision inputs give float32 results
    scales_with_output: bool = True  # a huge padding must hit the size guard


def _hyper(g: Geometry, names: tuple[str, ...], overrides: dict) -> dict:
    values = {"stride": g.stride, "padding": g.padding, "dilation": g.dilation,
              "groups": g.groups, "padding_mode": g.mode, "output_padding": g.output_padding,
              "kernel_size": g.kernel, "transposed": g.transposed, "output_size": g.size}
    return {**{name: values[name] for name in names}, **overrides}


def data_tensors(entry: Entry, g: Geometry, make: Callable[[tuple], torch.Tensor],
                 options: dict) -> Tensors:
    """The entry's tensors for `g`, each `make(shape)`; unbatched and bias as options say."""
    shapes = {"x": g.input_shape, "input": g.input_shape, "input_tangent": g.input_shape,
              "weight": g.weight_shape, "weight_tangent": g.weight_shape,
              "grad_output": g.result_shape, "input_squared": g.input_shape,
              "output_hessian_diagonal": g.result_shape,
              "sqrt_factor": (options.get("classes", 1), *g.result_shape)}
    if entry.operation == "fold":  # the columns of the unfolded input
        shapes["x"] = shapes["input"] = (g.batch, g.in_channels * prod(g.kernel),
                                         prod(g.output_size))
    tensors = {role: make(shapes[role]) for role in entry.roles}
    if options.get("with_bias"):
        tensors["bias"] = make((g.out_channels,))
    if options.get("unbatched"):
        first = entry.roles[0]
        tensors[first] = tensors[first][0]
    return tensors


def effective_options(options: dict) -> dict:
    """The options as the reference reads them (a module factor's bias=None follows the
    module's bias)."""
    if "module_bias" in options and options.get("bias") is None:
        return {**options, "bias": options["module_bias"]}
    return options


def reference(entry: Entry, g: Geometry, tensors: Tensors, options: dict) -> torch.Tensor:
    """The entry's result on `tensors`, by `operation_ref` (no tnconv)."""
    data = [tensors[role] for role in entry.roles]
    if options.get("unbatched"):
        data[0] = data[0].unsqueeze(0)
    result = operation_ref(entry.operation, g, tuple(data), effective_options(options))
    if "bias" in tensors:
        result = result + tensors["bias"].view(1, -1, *([1] * g.ndim))
    return result[0] if options.get("unbatched") else result


# ---------------------------------------------------------------------- calls
def _strategy(o: dict, over: dict) -> Any:
    return over.pop("strategy", o["strategy"])


def _conv(g, t, o, over):
    return tnconv.conv(t["x"], t["weight"], t.get("bias"), strategy=_strategy(o, over),
                       **_hyper(g, CONV, over))


def _unfold(g, t, o, over):
    return tnconv.unfold(t["x"], strategy=_strategy(o, over), **_hyper(g, UNFOLD, over))


def _input_vjp(g, t, o, over):
    size = over.pop("input_size", g.input_shape)
    return tnconv.conv_input_vjp(size, t["weight"], t["grad_output"], strategy=_strategy(o, over),
                                 **_hyper(g, CONV, over))


def _weight_vjp(g, t, o, over):
    size = over.pop("weight_size", g.weight_shape)
    return tnconv.conv_weight_vjp(t["input"], size, t["grad_output"], strategy=_strategy(o, over),
                                  per_sample=over.pop("per_sample", o["per_sample"]),
                                  **_hyper(g, CONV, over))


def _input_jvp(g, t, o, over):
    return tnconv.conv_input_jvp(t["input_tangent"], t["weight"], strategy=_strategy(o, over),
                                 **_hyper(g, CONV, over))


def _weight_jvp(g, t, o, over):
    return tnconv.conv_weight_jvp(t["input"], t["weight_tangent"], strategy=_strategy(o, over),
                                  **_hyper(g, CONV, over))


def _conv_transpose(g, t, o, over):
    return tnconv.conv_transpose(t["x"], t["weight"], t.get("bias"), strategy=_strategy(o, over),
                                 **_hyper(g, TRANSPOSED, over))


def _transpose_input_vjp(g, t, o, over):
    size = over.pop("input_size", g.input_shape)
    return tnconv.conv_transpose_input_vjp(size, t["weight"], t["grad_output"],
                                           strategy=_strategy(o, over),
                                           **_hyper(g, TRANSPOSED, over))


def _transpose_weight_vjp(g, t, o, over):
    size = over.pop("weight_size", g.weight_shape)
    return tnconv.conv_transpose_weight_vjp(t["input"], size, t["grad_output"],
                                            strategy=_strategy(o, over),
                                            per_sample=over.pop("per_sample", o["per_sample"]),
                                            **_hyper(g, TRANSPOSED, over))


def _fold(g, t, o, over):
    return tnconv.fold(t["x"], strategy=_strategy(o, over), **_hyper(g, FOLD, over))


def _unfold_transpose(g, t, o, over):
    return tnconv.unfold_transpose(t["x"], strategy=_strategy(o, over),
                                   **_hyper(g, UNFOLD_TRANSPOSE, over))


def _factor_options(o: dict, over: dict, names: tuple[str, ...]) -> dict:
    return {name: over.pop(name, o[name]) for name in names if name in o or name in over}


_KFC = ("reduction", "bias", "group_average", "structure", "dtype", "max_intermediate",
        "strategy")
_REDUCE = _KFC[:5] + ("strategy",)
_PATCH = ("dtype", "strategy")


def _functional(name: str, names: tuple[str, ...]) -> Callable[..., Any]:
    def call(g, t, o, over):
        options = _factor_options(o, over, names)
        return getattr(TF, name)(t["x"], **_hyper(g, FUNCTIONAL, over), **options)
    return call


def module_of(g: Geometry, bias: bool) -> torch.nn.Module:
    """torch's Conv / ConvTranspose module of `g` (N ≤ 3, padding in a module's form)."""
    n = g.ndim
    if g.transposed:
        return getattr(torch.nn, f"ConvTranspose{n}d")(
            g.in_channels, g.out_channels, g.kernel, stride=g.stride, padding=g.padding,
            output_padding=g.output_padding, groups=g.groups, bias=bias, dilation=g.dilation)
    return getattr(torch.nn, f"Conv{n}d")(
        g.in_channels, g.out_channels, g.kernel, stride=g.stride, padding=g.padding,
        dilation=g.dilation, groups=g.groups, bias=bias, padding_mode=g.mode)


def _module(name: str, names: tuple[str, ...]) -> Callable[..., Any]:
    def call(g, t, o, over):
        conv = module_of(g, o["module_bias"])
        for attribute, value in over.pop("module", {}).items():
            setattr(conv, attribute, value)
        options = _factor_options(o, over, names)
        return getattr(tnconv, name)(conv, t["x"], **options)
    return call


def _compiled(operation: str, roles: tuple[str, ...], names: tuple[str, ...]) -> Callable:
    def call(g, t, o, over):
        options = {name: over.pop(name, o[name]) for name in names}
        strategy = over.pop("strategy", o["strategy"])
        spec = tnconv.ConvSpec(g.in_channels, g.out_channels, g.kernel, g.size,
                               **{**g.hyper(), **over})
        compiled = tnconv.compile(operation, spec, strategy=strategy, **options)
        return compiled(*[t[role] for role in roles])
    return call


# -------------------------------------------------------------------- options
CONV = ("stride", "padding", "dilation", "groups", "padding_mode")
UNFOLD = ("kernel_size", "stride", "padding", "dilation", "padding_mode")
TRANSPOSED = ("stride", "padding", "output_padding", "groups", "dilation")
FOLD = ("output_size", "kernel_size", "dilation", "padding", "stride")
UNFOLD_TRANSPOSE = ("kernel_size", "stride", "padding", "output_padding", "dilation")
FUNCTIONAL = ("kernel_size", "stride", "padding", "dilation", "groups", "padding_mode",
              "transposed", "output_padding")
STRATEGY = st.sampled_from(["auto", "tn"])


def _opts(**extra: Any) -> Any:
    return st.fixed_dictionaries({"strategy": STRATEGY, **extra})


def _factor_strategy(name: str, module: bool) -> Any:
    reductions = ("mean", "batch", "sum") if name == "kfc" else ("mean", "sum")
    extra = dict(reduction=st.sampled_from(reductions), group_average=st.booleans(),
                 structure=st.sampled_from(["full", "diagonal"]),
                 dtype=st.sampled_from([None, torch.float64, torch.float32]))
    if name == "kfc":
        extra["max_intermediate"] = st.sampled_from([None, 1, 64])
    if module:
        extra.update(module_bias=st.booleans(), bias=st.sampled_from([None, True, False]))
    else:
        extra["bias"] = st.booleans()
    return _opts(**extra)


#: The registered operations `tnconv.compile(...)(...)` is fuzzed on: their options.
COMPILED_OPERATIONS = {
    "forward": {}, "unfold": {}, "input_vjp": {}, "weight_vjp": {"per_sample": st.booleans()},
    "input_jvp": {}, "weight_jvp": {}, "fold": {}, "patches": {}, "averaged_patches": {},
    **{name: {"reduction": st.sampled_from(reductions), "group_average": st.booleans(),
              "structure": st.sampled_from(["full", "diagonal"])}
       for name, reductions in (("kfc", ("mean", "batch", "sum")),
                                ("kfac_reduce", ("mean", "sum")))},
    "batch_l2": {}, "sum_grad_squared": {}, "variance": {},
    "ggn_diagonal": {"classes": st.integers(1, 3)}, "ggn_gram": {"classes": st.integers(1, 3)},
    "hessian_diagonal_weight": {}, "hessian_diagonal_input": {},
}
SPEC_FIELDS = ("stride", "padding", "dilation", "groups", "padding_mode", "output_padding")


def _compiled_entry(operation: str) -> Entry:
    roles = tnconv.compile(operation, tnconv.ConvSpec(1, 1, 1, (1,))).arguments
    options = COMPILED_OPERATIONS[operation]
    geometry = dict(transposed=None if operation != "fold" else False)
    if operation == "fold":
        geometry["modes"] = ("zeros",)
    return Entry(f"compile.{operation}", operation, roles,
                 _compiled(operation, roles, tuple(options)), SPEC_FIELDS, _opts(**options),
                 geometry,
                 scales_with_output=operation not in ("kfac_reduce", "averaged_patches"))

_CONV_FAMILY = dict(empty_batch=True)
ENTRIES: dict[str, Entry] = {e.name: e for e in [
    Entry("conv", "forward", ("x", "weight"), _conv, CONV,
          _opts(with_bias=st.booleans(), unbatched=st.booleans()), _CONV_FAMILY),
    Entry("unfold", "unfold", ("x",), _unfold, UNFOLD, _opts(), _CONV_FAMILY),
    Entry("conv_input_vjp", "input_vjp", ("weight", "grad_output"), _input_vjp, CONV,
          _opts(), _CONV_FAMILY),
    Entry("conv_weight_vjp", "weight_vjp", ("input", "grad_output"), _weight_vjp, CONV,
          _opts(per_sample=st.booleans()), _CONV_FAMILY),
    Entry("conv_input_jvp", "input_jvp", ("input_tangent", "weight"), _input_jvp, CONV,
          _opts(), _CONV_FAMILY),
    Entry("conv_weight_jvp", "weight_jvp", ("input", "weight_tangent"), _weight_jvp, CONV,
          _opts(), _CONV_FAMILY),
    Entry("conv_transpose", "forward", ("x", "weight"), _conv_transpose, TRANSPOSED,
          _opts(with_bias=st.booleans(), unbatched=st.booleans()),
          dict(transposed=True, empty_batch=True)),
    Entry("conv_transpose_input_vjp", "input_vjp", ("weight", "grad_output"),
          _transpose_input_vjp, TRANSPOSED, _opts(), dict(transposed=True, empty_batch=True)),
    Entry("conv_transpose_weight_vjp", "weight_vjp", ("input", "grad_output"),
          _transpose_weight_vjp, TRANSPOSED, _opts(per_sample=st.booleans()),
          dict(transposed=True, empty_batch=True)),
    Entry("fold", "fold", ("x",), _fold, FOLD, _opts(),
          dict(modes=("zeros",), empty_batch=True)),
    Entry("unfold_transpose", "unfold", ("x",), _unfold_transpose, UNFOLD_TRANSPOSE, _opts(),
          dict(transposed=True, empty_batch=True)),
    *[Entry(name, name, ("x",), _module(name, _KFC if name == "kfc" else
                                        _REDUCE if name == "kfac_reduce" else _PATCH),
            (), _factor_strategy(name, True) if name in ("kfc", "kfac_reduce")
            else _opts(dtype=st.sampled_from([None, torch.float32]), module_bias=st.booleans()),
            dict(ndims=(1, 2, 3), transposed=None, module_padding=True), factor=True,
            scales_with_output=name in ("kfc", "patches"))
      for name in ("kfc", "kfac_reduce", "patches", "averaged_patches")],
    *[Entry(f"functional.{name}", name, ("x",),
            _functional(name, _KFC if name == "kfc" else
                        _REDUCE if name == "kfac_reduce" else _PATCH), FUNCTIONAL,
            _factor_strategy(name, False) if name in ("kfc", "kfac_reduce")
            else _opts(dtype=st.sampled_from([None, torch.float32])),
            dict(transposed=None), factor=True, scales_with_output=name in ("kfc", "patches"))
      for name in ("kfc", "kfac_reduce", "patches", "averaged_patches")],
    *[_compiled_entry(operation) for operation in COMPILED_OPERATIONS],
]}
