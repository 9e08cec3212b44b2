"""Data-parallel KFAC factors: combine each rank's factor with `torch.distributed.all_reduce`.

Each rank computes `tnconv.kfc` or `tnconv.kfac_reduce` on its shard of the
batch; `all_reduce_factor` turns those into the factor of the whole batch, the
same as one process would compute on all samples, for every `reduction` and
for shards of unequal sizes. Every normalised factor is a per-sample average
(KFC "mean" S/(N·∏O), "batch" S/N; KFAC-reduce "mean" (1/N) Σ ū ūᵀ, its
bias column included), so the whole-batch factor is the average of the ranks'
factors weighted by their sample counts: Σ_r N_r F_r / Σ_r N_r; a "sum" is
the plain sum. Two `all_reduce` calls: the weighted factor and the count.

    import torch.distributed as dist, tnconv
    dist.init_process_group("nccl")                  # or "gloo"; one rank per process
    A = tnconv.kfc(conv, x_shard)                    # this rank's samples
    A = tnconv.distributed.all_reduce_factor(A, reduction="mean",
                                             batch_size=x_shard.shape[0])

>>> import torch
>>> try:  # outside a process group it says what to do
...     all_reduce_factor(torch.eye(2), batch_size=3)
... except TNConvError as err:
...     print(str(err)[:70])
tnconv.distributed.all_reduce_factor: torch.distributed is not initial
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.distributed as dist

from tnconv.errors import TNConvError, argument_error

__all__ = ["all_reduce_factor", "REDUCTIONS"]

#: Reductions of `tnconv.kfc` and `tnconv.kfac_reduce`.
REDUCTIONS = ("mean", "batch", "sum")
_OP = "tnconv.distributed.all_reduce_factor"


def _checked(factor: Any, reduction: Any, batch_size: Any) -> None:
    if not isinstance(factor, torch.Tensor) or not factor.dtype.is_floating_point:
        shown = f"tensor of dtype {factor.dtype}" if isinstance(factor, torch.Tensor) \
            else type(factor).__name__
        raise argument_error(_OP, "factor", shown, "a floating-point torch.Tensor")
    if reduction not in REDUCTIONS:
        raise argument_error(_OP, "reduction", reduction, ", ".join(map(repr, REDUCTIONS))
                             + ", the reduction the factor was computed with")
    if reduction != "sum" and (not isinstance(batch_size, int) or isinstance(batch_size, bool)
                               or batch_size < 0):
        raise argument_error(_OP, "batch_size", batch_size,
                             "the number of samples of this rank's shard (an int >= 0), "
                             f"needed for reduction={reduction!r}")
    if not (dist.is_available() and dist.is_initialized()):
        raise TNConvError(f"{_OP}: torch.distributed is not initialised; call "
                          "torch.distributed.init_process_group first (one process per rank)")


def all_reduce_factor(factor: torch.Tensor, reduction: str = "mean", *,
                      batch_size: Optional[int] = None, group: Any = None) -> torch.Tensor:
    """The factor of the whole batch from this rank's `factor` of its `batch_size` samples.

    `reduction` is the one `factor` was computed with: "mean" or "batch" (the
    ranks' factors averaged, weighted by `batch_size`, which may differ between
    ranks; a rank with no samples passes zeros and `batch_size=0`) or "sum"
    (summed; `batch_size` is not needed). Works for `tnconv.kfc` and
    `tnconv.kfac_reduce` factors with any options (bias column, groups,
    `group_average`, `structure="diagonal"`). Every rank of `group` (default:
    the world) must call it; returns a new tensor, `factor` is left as it is.
    """
    _checked(factor, reduction, batch_size)
    if reduction == "sum":
        total = factor.clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total
    count = torch.tensor([batch_size], dtype=torch.float64, device=factor.device)
    dist.all_reduce(count, op=dist.ReduceOp.SUM, group=group)
    if count.item() == 0:
        raise argument_error(_OP, "batch_size", batch_size,
                             "at least one sample on some rank (every rank passed 0)")
    weighted = factor * batch_size
    dist.all_reduce(weighted, op=dist.ReduceOp.SUM, group=group)
    return weighted.div_(count.to(weighted.dtype))
