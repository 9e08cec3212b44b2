"""Kronecker factors for KFAC of a conv layer: `kfc`, `kfac_reduce`, `patches`, `averaged_patches`.

`conv` is a `torch.nn.Conv{1,2,3}d` or `ConvTranspose{1,2,3}d` (every
hyper-parameter, `padding_mode` included, is read from it) and `x` its input.
Conventions (DESIGN.md): factors are [G, D, D] with D = C_in/G·∏K (+1 with a
bias column); `reduction="mean"` is S/(N·∏O) for KFC and (1/N) Σ ū ūᵀ for
KFAC-reduce; the bias column of KFAC-reduce is appended after averaging.

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

from math import prod
from operator import itemgetter
from typing import Any, Callable, Optional

import torch

from tnconv.runtime import kfac_native
from tnconv.spec.modules import spec_from_module
from tnconv.cache import LRUCache
from tnconv.nn.call_cache import cached_call
from tnconv.compiler import STRATEGIES, compile
from tnconv.errors import argument_error, positive_int
from tnconv.ops.kfac import REDUCTIONS, STRUCTURES
from tnconv.runtime.position_sums import reduce_runner
from tnconv.spec.conv_spec import ConvSpec, error_context

__all__ = ["kfc", "kfac_reduce", "patches", "averaged_patches", "factor", "patch_matrix"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
#: Upper bound of the default chunk (elements of the unfolded input of one chunk).
_DEFAULT_CHUNK_ELEMENTS = 2 ** 22
#: Below this many unfolded elements (1 MiB in fp32) one chunk is cheaper than several.
_SMALL_UNFOLD_ELEMENTS = 2 ** 18


def _module_spec(op: str, conv: Any, x: Any) -> tuple[ConvSpec, torch.Tensor]:
    """The spec of `conv` at input `x` (cached on the module's hyper-parameters and x's shape)."""
    build = lambda: spec_from_module(ConvSpec, conv, x, operation=op,  # noqa: E731
                                     argument="conv")
    module = _module_key(conv)
    if module is not None and isinstance(x, torch.Tensor):
        spec = cached_call(("module_spec", op, module, tuple(x.shape)), build)
    else:
        spec = build()
    return spec, (x.unsqueeze(0) if x.dim() == spec.ndim + 1 else x)


def _compute_dtype(op: str, x_dtype: torch.dtype, dtype: Optional[torch.dtype]) -> torch.dtype:
    if not x_dtype.is_floating_point:
        raise argument_error(op, "x", f"tensor of dtype {x_dtype}", "a floating-point tensor")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise argument_error(op, "dtype", dtype, "None or a floating-point torch.dtype")
    wanted = dtype or x_dtype
    return torch.float32 if wanted in _LOW_PRECISION else wanted


def _check_options(op: str, name: str, reduction: str, structure: str, flags: dict,
                   strategy: str, max_intermediate: Any) -> None:
    if reduction not in REDUCTIONS[name]:
        raise argument_error(op, "reduction", reduction,
                             ", ".join(repr(r) for r in REDUCTIONS[name]))
    if structure not in STRUCTURES:
        raise argument_error(op, "structure", structure, ", ".join(repr(s) for s in STRUCTURES))
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise argument_error(op, flag, value, "True or False")
    if strategy not in STRATEGIES:
        raise argument_error(op, "strategy", strategy, ", ".join(repr(s) for s in STRATEGIES))
    if max_intermediate is not None:
        positive_int(op, "max_intermediate", max_intermediate, "None or a positive int")


def _per_sample(spec: ConvSpec, strategy: str, options: dict) -> int:
    """Largest intermediate (elements) per sample of the KFC route that will run.

    Both routes lay the unfolded input out once (the TN route in its Gram step,
    which the planner's estimate does not count), so that is the floor.
    """
    unfolded = spec.in_channels * prod(spec.kernel_size) * prod(spec.output_size)
    if strategy == "auto" and kfac_native.supported(spec):
        return unfolded
    program = compile("kfc", spec, strategy="tn", **options).program_for(1)
    return max(unfolded, program.largest_intermediate)


def _chunk(spec: ConvSpec, batch: int, per_sample: int, max_intermediate: Optional[int]) -> int:
    """Samples per chunk: at most `max_intermediate` elements.

    By default a quarter batch (at most 2**22 elements), or the whole batch when
    its unfolded input is small anyway.
    """
    if max_intermediate is None:
        total = batch * per_sample
        max_intermediate = (total if total <= _SMALL_UNFOLD_ELEMENTS
                            else min(_DEFAULT_CHUNK_ELEMENTS, -(-total // 4)))
    return max(1, min(batch, max_intermediate // per_sample))


def _kfc_chunked(spec: ConvSpec, x: torch.Tensor, options: dict, strategy: str,
                 max_intermediate: Optional[int]) -> torch.Tensor:
    batch = x.shape[0]
    chunk = _chunk(spec, batch, _per_sample(spec, strategy, options), max_intermediate)
    if strategy == "auto" and kfac_native.supported(spec):
        return kfac_native.kfc(spec, options, x, chunk)
    if chunk >= batch:
        return compile("kfc", spec, strategy=strategy, **options)(x)
    summed = compile("kfc", spec, strategy=strategy, **{**options, "reduction": "sum"})
    total = summed(x[:chunk])
    for start in range(chunk, batch, chunk):
        total += summed(x[start:start + chunk])
    count = {"mean": batch * prod(spec.output_size), "batch": batch, "sum": 1}
    return total.mul_(1.0 / count[options["reduction"]])


def _append_bias(name: str, spec: ConvSpec, x: torch.Tensor, result: torch.Tensor,
                 options: dict, strategy: str) -> torch.Tensor:
    """Append the ones column: border c·Σ_n (mean patch), corner c·N, c the normalisation."""
    batch = x.shape[0]
    per_sample = prod(spec.output_size) if name == "kfc" else 1
    coefficient, count = {"mean": (1.0 / batch, 1), "batch": (per_sample / batch, per_sample),
                          "sum": (float(per_sample), batch * per_sample)}[options["reduction"]]
    mean_patch = compile("averaged_patches", spec, strategy=strategy)(x).sum(0)  # [G, D]
    if options["group_average"]:
        mean_patch = mean_patch.mean(0, keepdim=True)
    border = mean_patch * coefficient
    corner = border.new_full((border.shape[0], 1), count)
    lead = () if options["group_average"] else (spec.groups,)
    if options["structure"] == "diagonal":
        return torch.cat([result.reshape(-1, border.shape[1]), corner], 1).reshape(*lead, -1)
    d = border.shape[1]
    out = result.new_zeros(border.shape[0], d + 1, d + 1)
    out[:, :d, :d] = result.reshape(-1, d, d)
    out[:, :d, d] = out[:, d, :d] = border
    out[:, d, d] = corner[:, 0]
    return out.reshape(*lead, d + 1, d + 1)


def factor_runner(name: str, spec: ConvSpec, x_dtype: torch.dtype, *, op: str,
                  reduction: str = "mean", bias: bool = False, group_average: bool = False,
                  structure: str = "full", dtype: Optional[torch.dtype] = None,
                  max_intermediate: Optional[int] = None,
                  strategy: str = "auto") -> Callable[[torch.Tensor], torch.Tensor]:
    """Validate the options once; the returned function computes the factor of a batched x.

    `name` is "kfc" or "kfac_reduce"; `x_dtype` is the dtype the input will have.
    """
    _check_options(op, name, reduction, structure,
                   {"bias": bias, "group_average": group_average}, strategy, max_intermediate)
    compute = _compute_dtype(op, x_dtype, dtype)
    wanted = dtype or compute
    options = {"reduction": reduction, "structure": structure, "group_average": group_average}
    if name == "kfc":
        def core(x: torch.Tensor) -> torch.Tensor:
            result = _kfc_chunked(spec, x, options, strategy, max_intermediate)
            return _append_bias(name, spec, x, result, options, strategy) if bias else result
    elif strategy == "auto":  # the ones column joins the mean patch: one pass over x
        core = reduce_runner(spec, {**options, "bias": bias})
    elif not bias:  # the compiled network alone: callers may cache its plan per input
        core = _CompiledRun(compile(name, spec, strategy=strategy, **options))
    else:
        run = compile(name, spec, strategy=strategy, **options).run

        def core(x: torch.Tensor) -> torch.Tensor:
            return _append_bias(name, spec, x, run(x), options, strategy)

    if x_dtype == compute == wanted:  # nothing to convert: no wrapper on the per-call path
        return core

    def compute_factor(x: torch.Tensor) -> torch.Tensor:
        result = core(x if x.dtype == compute else x.to(compute))
        return result if result.dtype == wanted else result.to(wanted)

    return compute_factor


class _CompiledRun:
    """A compiled factor network as a runner; `for_input(x)` its plan for x's batch, device
    and dtype (`Compiled.runner_for`), which the module call-site cache keeps."""

    def __init__(self, compiled: Any):
        self._compiled = compiled

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._compiled.run(x)

    def for_input(self, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        return self._compiled.runner_for(x)


def factor(name: str, spec: ConvSpec, x: torch.Tensor, *, op: str, **options: Any) -> torch.Tensor:
    """Shared core of the functional forms: `name` is "kfc" or "kfac_reduce"."""
    run = factor_runner(name, spec, x.dtype, op=op, **options)
    return (_empty_batch(op, run, x, options.get("reduction", "mean")) if x.shape[0] == 0
            else run)(x)


def _empty_batch(op: str, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                 reduction: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The factor of an empty batch: zeros with reduction="sum" (a sum over no samples,
    so that shards of a batch still add up), undefined (an error) for a mean."""
    if reduction != "sum":
        raise argument_error(op, "x", f"tensor of shape {tuple(x.shape)} (no samples)",
                             f"at least one sample for reduction={reduction!r}; only "
                             "reduction='sum' is defined on an empty batch")
    like = run(x.new_zeros((1, *x.shape[1:])))  # the factor's shape and dtype
    return lambda t: torch.zeros(like.shape, dtype=like.dtype, device=t.device)


def patch_matrix(name: str, spec: ConvSpec, x: torch.Tensor, *, op: str,
                 dtype: Optional[torch.dtype] = None, strategy: str = "auto") -> torch.Tensor:
    """Shared core of `patches` / `averaged_patches` ("patches" or "averaged_patches")."""
    if strategy not in STRATEGIES:
        raise argument_error(op, "strategy", strategy, ", ".join(repr(s) for s in STRATEGIES))
    compute = _compute_dtype(op, x.dtype, dtype)
    return compile(name, spec, strategy=strategy)(x.to(compute)).to(dtype or compute)


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
    """What a factor of `conv` depends on: class, hyper-parameters, bias (None: not a module).

    Read on every factor call, straight from the instance dict (no
    `nn.Module.__getattr__`, one C call for the fields): right after a large
    op has evicted the caches, every attribute read costs about a microsecond.
    A class that is no conv module is rejected when the set-up is built.
    """
    try:
        attrs = conv.__dict__
        return (conv.__class__, _MODULE_FIELDS(attrs), attrs["_parameters"].get("bias") is None)
    except (AttributeError, KeyError, TypeError):
        return None


#: The options of each factor, in the order its public function passes them.
_OPTIONS = {"kfc": ("reduction", "group_average", "structure", "dtype", "max_intermediate",
                    "strategy"),
            "kfac_reduce": ("reduction", "group_average", "structure", "dtype", "strategy")}


def _module_factor(name: str, op: str, conv: Any, x: Any, bias: Optional[bool],
                   values: tuple, typed: tuple) -> torch.Tensor:
    """`name`'s factor of `conv` at `x`: validated and set up once per (module, x, options).

    `values` are the options in `_OPTIONS[name]`'s order; `typed` the classes of
    those that could compare equal across types (True == 1): a cached set-up
    never answers an argument it would reject. The set-up is specialised to x's
    batch size, dtype and device where the route allows (`for_input`).
    """
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
            spec, batched = _module_spec(op, conv, x)
            options = dict(zip(_OPTIONS[name], values))
            run = factor_runner(name, spec, x.dtype, op=op, bias=_bias_flag(op, conv, bias),
                                **options)
            if batched is not x:
                return lambda t: run(t.unsqueeze(0))
            if x.shape[0] == 0:
                return _empty_batch(op, run, x, options["reduction"])
            specialise = getattr(run, "for_input", None)
            return run if specialise is None else specialise(x)

    if key is None:
        return build()(x)
    return _MODULE_RUNNERS.get_or_create(key, build)(x)


def kfc(conv: Any, x: torch.Tensor, *, reduction: str = "mean", bias: Optional[bool] = None,
        group_average: bool = False, structure: str = "full",
        dtype: Optional[torch.dtype] = None, max_intermediate: Optional[int] = None,
        strategy: str = "auto") -> torch.Tensor:
    """KFC (KFAC-expand) input factor of `conv` at input `x`: [G, D, D].

    `reduction`: "mean" (S/(N·∏O)), "batch" (S/N) or "sum" (S). `bias=None`
    appends the ones column iff `conv.bias is not None`. `group_average=True`
    averages the input over channel groups first and returns [D, D].
    `structure="diagonal"` returns only the diagonal [G, D]. fp16/bf16 inputs
    accumulate in fp32 and the result is fp32 unless `dtype` is given.
    `max_intermediate` (elements) bounds the unfolded chunk; by default a chunk
    is a quarter of the batch, at most 2**22 elements (the whole batch when its
    unfolded input has at most 2**18 elements).
    """
    return _module_factor("kfc", "tnconv.kfc", conv, x, bias,
                          (reduction, group_average, structure, dtype, max_intermediate, strategy),
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
    with error_context(op):
        spec, x = _module_spec(op, conv, x)
        return patch_matrix("patches", spec, x, op=op, dtype=dtype, strategy=strategy)


def averaged_patches(conv: Any, x: torch.Tensor, *, dtype: Optional[torch.dtype] = None,
                     strategy: str = "auto") -> torch.Tensor:
    """Patches averaged over output positions: [N, G, D]."""
    op = "tnconv.averaged_patches"
    with error_context(op):
        spec, x = _module_spec(op, conv, x)
        return patch_matrix("averaged_patches", spec, x, op=op, dtype=dtype, strategy=strategy)
