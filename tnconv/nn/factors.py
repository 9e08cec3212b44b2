"""The factor front-end: options validated once, then the compiled operation runs.

`factor_runner` turns (factor name, spec, options) into a function of the input
x: the compiled "kfc" / "kfac_reduce" operation (whatever route `strategy`
selects is the compiler's business), run in chunks of the batch where the
unfolded input would be large (KFC), with the bias column appended from the
compiled "averaged_patches" and low-precision inputs computed in float32.

>>> import torch
>>> from tnconv.spec import ConvSpec
>>> spec = ConvSpec(2, 2, kernel_size=3, input_size=(5, 5), padding=1)
>>> x = torch.rand(4, 2, 5, 5, dtype=torch.float64)
>>> run = factor_runner("kfac_reduce", spec, x.dtype, op="demo")
>>> u = torch.nn.functional.unfold(x, 3, padding=1).mean(2)      # [N, D]
>>> torch.allclose(run(x)[0], u.T @ u / 4)
True
"""

from __future__ import annotations

from math import prod
from typing import Any, Callable, Optional

import torch

from tnconv.compiler import STRATEGIES, compile
from tnconv.errors import argument_error, positive_int
from tnconv.ops.kfac import REDUCTIONS, STRUCTURES
from tnconv.sampled import check_sample
from tnconv.spec.conv_spec import ConvSpec
from tnconv.nn.validate import float_dtype, guard_sizes

__all__ = ["factor_runner", "factor", "patch_matrix", "empty_batch_runner"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)
#: Upper bound of the default chunk (elements of the unfolded input of one chunk).
_DEFAULT_CHUNK_ELEMENTS = 2 ** 22
#: Below this many unfolded elements (1 MiB in fp32) one chunk is cheaper than several.
_SMALL_UNFOLD_ELEMENTS = 2 ** 18

Runner = Callable[[torch.Tensor], torch.Tensor]


def _compute_dtype(op: str, x_dtype: torch.dtype, dtype: Optional[torch.dtype]) -> torch.dtype:
    float_dtype(op, "x", x_dtype)
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
    _check_strategy(op, strategy)
    if max_intermediate is not None:
        positive_int(op, "max_intermediate", max_intermediate, "None or a positive int")


def _check_strategy(op: str, strategy: Any) -> None:
    if strategy not in STRATEGIES:
        raise argument_error(op, "strategy", strategy, ", ".join(repr(s) for s in STRATEGIES))


def _chunk(spec: ConvSpec, batch: int, max_intermediate: Optional[int]) -> int:
    """Samples per chunk of a KFC call: the unfolded input of a chunk (what the Gram
    product lays out) holds at most `max_intermediate` elements. By default a quarter
    batch (at most 2**22 elements), or the whole batch when its unfolded input is small."""
    per_sample = spec.in_channels * prod(spec.kernel_size) * prod(spec.output_size)
    if max_intermediate is None:
        total = batch * per_sample
        max_intermediate = (total if total <= _SMALL_UNFOLD_ELEMENTS
                            else min(_DEFAULT_CHUNK_ELEMENTS, -(-total // 4)))
    return max(1, min(batch, max_intermediate // per_sample))


def _chunked(spec: ConvSpec, options: dict, strategy: str,
             max_intermediate: Optional[int]) -> Runner:
    """KFC of x, `_chunk` samples at a time: the summed factors of the chunks, normalised."""
    whole = compile("kfc", spec, strategy=strategy, **options)
    summed = compile("kfc", spec, strategy=strategy, **{**options, "reduction": "sum"})

    def run(x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        chunk = _chunk(spec, batch, max_intermediate)
        if chunk >= batch:
            return whole.run(x)
        total = summed.run(x[:chunk])
        for start in range(chunk, batch, chunk):
            total += summed.run(x[start:start + chunk])
        count = {"mean": batch * prod(spec.output_size), "batch": batch, "sum": 1}
        return total.mul_(1.0 / count[options["reduction"]])

    return run


def _with_bias(name: str, spec: ConvSpec, options: dict, strategy: str, core: Runner) -> Runner:
    """`core`'s factor with the ones column appended: border c·Σ_n (mean patch), corner c·N
    (c the normalisation), the mean patch from the compiled "averaged_patches"."""
    mean_patches = compile("averaged_patches", spec, strategy=strategy)
    per_sample = prod(spec.output_size) if name == "kfc" else 1
    full, averaged = options["structure"] == "full", options["group_average"]

    def run(x: torch.Tensor) -> torch.Tensor:
        result, batch = core(x), x.shape[0]
        coefficient, count = {"mean": (1.0 / batch, 1),
                              "batch": (per_sample / batch, per_sample),
                              "sum": (float(per_sample), batch * per_sample)}[options["reduction"]]
        mean_patch = mean_patches.run(x).sum(0)  # [G, D]
        if averaged:
            mean_patch = mean_patch.mean(0, keepdim=True)
        border = mean_patch * coefficient
        corner = border.new_full((border.shape[0], 1), count)
        lead = () if averaged else (spec.groups,)
        if not full:
            return torch.cat([result.reshape(-1, border.shape[1]), corner], 1).reshape(*lead, -1)
        d = border.shape[1]
        out = result.new_empty(border.shape[0], d + 1, d + 1)  # every entry is written below
        out[:, :d, :d] = result.reshape(-1, d, d)
        out[:, :d, d] = out[:, d, :d] = border
        out[:, d, d] = corner[:, 0]
        return out.reshape(*lead, d + 1, d + 1)

    return run


class CompiledRunner:
    """A compiled factor network as a runner; `for_input(x)` is its plan for x's batch,
    device and dtype (`Compiled.runner_for`), which a per-input cache may keep."""

    def __init__(self, compiled: Any):
        self._compiled = compiled

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._compiled.run(x)

    def for_input(self, x: torch.Tensor) -> Runner:
        return self._compiled.runner_for(x)


def factor_runner(name: str, spec: ConvSpec, x_dtype: torch.dtype, *, op: str,
                  reduction: str = "mean", bias: bool = False, group_average: bool = False,
                  structure: str = "full", dtype: Optional[torch.dtype] = None,
                  max_intermediate: Optional[int] = None, strategy: str = "auto",
                  sample: Any = None) -> Runner:
    """Validate the options once; the returned function computes the factor of a batched x.

    `name` is "kfc" or "kfac_reduce"; `x_dtype` is the dtype the input will have. With a
    `sample` (KFC only), each call estimates the factor from a fresh subset in one piece
    (no chunks: the sliced network is the smaller one); the bias column stays exact.
    """
    _check_options(op, name, reduction, structure,
                   {"bias": bias, "group_average": group_average}, strategy, max_intermediate)
    if sample is not None:
        check_sample(op, name, sample)
    compute = _compute_dtype(op, x_dtype, dtype)
    wanted = dtype or compute
    options = {"reduction": reduction, "structure": structure, "group_average": group_average}
    guard_sizes(op, compile(name, spec, strategy=strategy, **options), 1)  # [G, D, D] and,
    # for KFC, one sample's unfolded input (the smallest chunk)
    core: Runner
    if sample is not None:
        core = compile(name, spec, strategy=strategy, sample=sample, **options).run
    elif name == "kfc":
        core = _chunked(spec, options, strategy, max_intermediate)
    else:
        core = CompiledRunner(compile(name, spec, strategy=strategy, **options))
    if bias:
        core = _with_bias(name, spec, options, strategy, core)
    if x_dtype == compute == wanted:  # nothing to convert: no wrapper on the per-call path
        return core

    def compute_factor(x: torch.Tensor) -> torch.Tensor:
        result = core(x if x.dtype == compute else x.to(compute))
        return result if result.dtype == wanted else result.to(wanted)

    return compute_factor


def empty_batch_runner(op: str, run: Runner, x: torch.Tensor, reduction: str) -> Runner:
    """The factor of an empty batch: zeros with reduction="sum" (a sum over no samples,
    so that shards of a batch still add up), undefined (an error) for a mean."""
    if reduction != "sum":
        raise argument_error(op, "x", f"tensor of shape {tuple(x.shape)} (no samples)",
                             f"at least one sample for reduction={reduction!r}; only "
                             "reduction='sum' is defined on an empty batch")
    like = run(x.new_zeros((1, *x.shape[1:])))  # the factor's shape and dtype
    return lambda t: torch.zeros(like.shape, dtype=like.dtype, device=t.device)


def factor(name: str, spec: ConvSpec, x: torch.Tensor, *, op: str, **options: Any) -> torch.Tensor:
    """Shared core of the functional forms: `name` is "kfc" or "kfac_reduce"."""
    run = factor_runner(name, spec, x.dtype, op=op, **options)
    if x.shape[0] == 0:
        run = empty_batch_runner(op, run, x, options.get("reduction", "mean"))
    return run(x)


def patch_matrix(name: str, spec: ConvSpec, x: torch.Tensor, *, op: str,
                 dtype: Optional[torch.dtype] = None, strategy: str = "auto") -> torch.Tensor:
    """Shared core of `patches` / `averaged_patches` ("patches" or "averaged_patches")."""
    _check_strategy(op, strategy)
    compute = _compute_dtype(op, x.dtype, dtype)
    compiled = compile(name, spec, strategy=strategy)
    guard_sizes(op, compiled, x.shape[0])
    return compiled(x.to(compute)).to(dtype or compute)
