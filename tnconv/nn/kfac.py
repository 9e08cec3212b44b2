"""Kronecker factors for KFAC of a conv layer: `kfc`, `kfac_reduce`, `patches`, `averaged_patches`.

`conv` is a `torch.nn.Conv{1,2,3}d` or `ConvTranspose{1,2,3}d` (every
hyper-parameter, `padding_mode` included, is read from it) and `x` its input.
Conventions (DESIGN.md): factors are [G, D, D] with D = C_in/G·∏K (+1 with a
bias column); `reduction="mean"` is S/(N·∏O) for KFC and (1/N) Σ ū ūᵀ for
KFAC-reduce; the bias column of KFAC-reduce is appended after averaging.

Non-finite inputs: the convolutions, their derivatives, unfold, fold and the patches
select the values each window reads (views, selections, scatter-adds), so an Inf or NaN
reaches exactly the entries whose windows read it, as in torch's kernels. The factors do
not: KFAC-reduce and the averaged patches sum the input against matrices of counts (the
patches are never formed), and KFC may meet the input with a pre-contracted pair of
patterns, so a non-finite pixel spreads through those matrix products (0·Inf is NaN) to
entries whose windows never read it. A factor of an input with a non-finite value is not
finite either way; only which of its entries are NaN rather than Inf differs from im2col.

>>> import torch, tnconv
>>> conv = torch.nn.Conv2d(4, 8, 3, padding=1, groups=2)
>>> x = torch.rand(3, 4, 6, 6)
>>> tnconv.kfc(conv, x).shape           # bias column: conv.bias is not None
torch.Size([2, 19, 19])
>>> tnconv.kfac_reduce(conv, x, bias=False, group_average=True).shape
torch.Size([18, 18])
>>> tnconv.patches(conv, x).shape
torch.Size([3, 2, 36, 18])
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Callable, Optional

import torch

from tnconv.cache import LRUCache
from tnconv.errors import argument_error
from tnconv.nn.call_cache import cached_call, value_types
from tnconv.nn.factors import empty_batch_runner, factor_runner, patch_matrix
from tnconv.nn.validate import floating
from tnconv.spec.conv_spec import ConvSpec, error_context
from tnconv.spec.modules import spec_from_module

__all__ = ["kfc", "kfac_reduce", "patches", "averaged_patches"]


def module_spec(op: str, conv: Any, x: Any) -> tuple[ConvSpec, torch.Tensor]:
    """The spec of `conv` at input `x` (cached on the module's hyper-parameters, its
    weight's shape and x's shape)."""
    build = lambda: spec_from_module(ConvSpec, conv, x, operation=op,  # noqa: E731
                                     argument="conv")
    module = _module_key(conv)
    if module is not None and isinstance(x, torch.Tensor):
        spec = cached_call(("module_spec", op, module, tuple(x.shape)), build)
    else:
        spec = build()
    return spec, (x.unsqueeze(0) if x.dim() == spec.ndim + 1 else x)


def _bias_flag(op: str, conv: Any, bias: Optional[bool]) -> bool:
    if bias is None:
        return getattr(conv, "bias", None) is not None
    if not isinstance(bias, bool):
        raise argument_error(op, "bias", bias, "None (follow conv.bias), True or False")
    return bias


#: The hyper-parameters of a conv module that its factors depend on, read in one call.
_MODULE_FIELDS = itemgetter("in_channels", "out_channels", "kernel_size", "stride", "padding",
                            "dilation", "groups", "padding_mode", "output_padding")
_MODULE_RUNNERS = LRUCache(name="module_factor_runners")


def _module_key(conv: Any) -> Optional[tuple]:
    """What a factor of `conv` depends on: class, hyper-parameters, bias, the weight's shape
    (validated against them on a miss; None: not a module).

    Read on every factor call, straight from the instance dict (no
    `nn.Module.__getattr__`, one C call for the fields): right after a large
    op has evicted the caches, every attribute read costs about a microsecond.
    A class that is no conv module is rejected when the set-up is built. The fields'
    types are part of the key: a module whose groups was set to True is checked again,
    not answered by the set-up of groups=1.
    """
    try:
        attrs = conv.__dict__
        parameters = attrs["_parameters"]
        fields = _MODULE_FIELDS(attrs)
        return (conv.__class__, fields, value_types(fields), parameters.get("bias") is None,
                parameters["weight"].shape)
    except (AttributeError, KeyError, TypeError, RuntimeError):  # RuntimeError: a lazy
        return None  # module's uninitialised weight has no shape yet


#: The options of each factor, in the order its public function passes them.
_OPTIONS = {"kfc": ("reduction", "group_average", "structure", "dtype", "max_intermediate",
                    "strategy", "sample"),
            "kfac_reduce": ("reduction", "group_average", "structure", "dtype", "strategy")}


def _module_factor(name: str, op: str, conv: Any, x: Any, bias: Optional[bool],
                   values: tuple, typed: tuple) -> torch.Tensor:
    """`name`'s factor of `conv` at `x`: validated and set up once per (module, x, options).

    `values` are the options in `_OPTIONS[name]`'s order; `typed` the classes of
    those that could compare equal across types (True == 1): a cached set-up
    never answers an argument it would reject. The set-up is specialised to x's
    batch size, dtype and device where the route allows (`for_input`). `x`'s dtype is
    checked on every call, before the look-up.
    """
    floating(op, ("x", x))
    module = _module_key(conv)
    key = None
    if module is not None:
        try:
            key = (op, module, x.shape, x.dtype, x.device, bias, bias.__class__, values, typed)
            run = _MODULE_RUNNERS.lookup(key)
        except (AttributeError, TypeError):  # x is no tensor, or an option is unhashable
            key = run = None
        if run is not None:
            return run(x)

    def build() -> Callable[[torch.Tensor], torch.Tensor]:
        with error_context(op):
            spec, batched = module_spec(op, conv, x)
            options = dict(zip(_OPTIONS[name], values))
            run = factor_runner(name, spec, x.dtype, op=op, bias=_bias_flag(op, conv, bias),
                                **options)
            if batched is not x:
                return lambda t: run(t.unsqueeze(0))
            if x.shape[0] == 0:
                return empty_batch_runner(op, run, x, options["reduction"])
            specialise = getattr(run, "for_input", None)
            return run if specialise is None else specialise(x)

    if key is None:
        return build()(x)
    return _MODULE_RUNNERS.get_or_create(key, build)(x)


def kfc(conv: Any, x: torch.Tensor, *, reduction: str = "mean", bias: Optional[bool] = None,
        group_average: bool = False, structure: str = "full",
        dtype: Optional[torch.dtype] = None, max_intermediate: Optional[int] = None,
        strategy: str = "auto", sample: Optional[Any] = None) -> torch.Tensor:
    """KFC (KFAC-expand) input factor of `conv` at input `x`: [G, D, D].

    `reduction`: "mean" (S/(N·∏O)), "batch" (S/N) or "sum" (S). `bias=None`
    appends the ones column iff `conv.bias is not None`. `group_average=True`
    averages the input over channel groups first and returns [D, D].
    `structure="diagonal"` returns only the diagonal [G, D]. fp16/bf16 inputs
    accumulate in fp32 and the result is fp32 unless `dtype` is given.
    `max_intermediate` (elements) bounds the unfolded chunk; by default a chunk
    is a quarter of the batch, at most 2**22 elements (the whole batch when its
    unfolded input has at most 2**18 elements).

    `sample=tnconv.Sample(leg, keep, …)` estimates the factor from a fresh random
    subset per call (tensor dropout): leg "spatial" keeps output positions (each
    spatial leg sliced independently with probability keep ** (1/N)), "batch"
    samples of the batch. The sum over the kept ones, rescaled, is unbiased (its
    mean over draws is the exact factor; the normalisation of `reduction` is the
    exact one's) and its variance grows like 1/keep; see `tnconv.sampling`. The
    factor is computed in one piece (`max_intermediate` does not apply); the bias
    column is exact.
    """
    return _module_factor("kfc", "tnconv.kfc", conv, x, bias,
                          (reduction, group_average, structure, dtype, max_intermediate, strategy,
                           sample),
                          (group_average.__class__, max_intermediate.__class__))


def kfac_reduce(conv: Any, x: torch.Tensor, *, reduction: str = "mean",
                bias: Optional[bool] = None, group_average: bool = False,
                structure: str = "full", dtype: Optional[torch.dtype] = None,
                strategy: str = "auto") -> torch.Tensor:
    """KFAC-reduce input factor (1/N) Σ_n ū ūᵀ, ū the patch averaged over positions: [G, D, D].

    Options as `kfc`; `reduction` is "mean" or "sum"; the bias 1 is appended
    after averaging. The unfolded input is never formed.
    """
    return _module_factor("kfac_reduce", "tnconv.kfac_reduce", conv, x, bias,
                          (reduction, group_average, structure, dtype, strategy),
                          (group_average.__class__,))


def patches(conv: Any, x: torch.Tensor, *, dtype: Optional[torch.dtype] = None,
            strategy: str = "auto") -> torch.Tensor:
    """Patch matrix of `conv` at input `x`: [N, G, ∏O, D]."""
    op = "tnconv.patches"
    floating(op, ("x", x))
    with error_context(op):
        spec, x = module_spec(op, conv, x)
        return patch_matrix("patches", spec, x, op=op, dtype=dtype, strategy=strategy)


def averaged_patches(conv: Any, x: torch.Tensor, *, dtype: Optional[torch.dtype] = None,
                     strategy: str = "auto") -> torch.Tensor:
    """Patches averaged over output positions: [N, G, D]."""
    op = "tnconv.averaged_patches"
    floating(op, ("x", x))
    with error_context(op):
        spec, x = module_spec(op, conv, x)
        return patch_matrix("averaged_patches", spec, x, op=op, dtype=dtype, strategy=strategy)
