"""`Sample`: which leg of a network to sample, how much to keep, and the draws.

Tensor dropout estimates an operation from a random subset of one leg of its
network, rescaled so that the estimate is unbiased:

- ``scheme="bernoulli"`` keeps each index with probability q and weighs it 1/q;
- ``scheme="fixed"`` keeps exactly max(1, round(q·size)) indices, drawn
  uniformly without replacement, each weighed size/count.

Each index is then kept with probability q and weighed 1/q (in expectation), so
the mean of the estimates is the exact result, whatever the operation (it is
linear in each sampled sum). The estimator's variance grows like 1/keep (the
(1/q − 1)-weighted sum of squared terms, per leg).

The spatial leg of an N-d convolution is N legs (o1 … oN). `spatial_dims` says
which are sliced: by default only the leading one (rows in 2d, frames in 3d),
each index kept with q = keep; `spatial_dims="all"` (or a tuple of dims) slices
several, independently, each with q = keep ** (1/count), so the kept share of
positions is `keep` either way. Slicing one leg leaves a convolution over the
other dims, which runs at full speed on fewer rows; slicing every leg gathers
each kept window on its own, which costs more than the exact VJP saves on most
layers. A whole row shares one draw, so its terms are dropped together: at the
same `keep` the variance is larger than with independent positions (by at most
the row's length, where the row's terms all point the same way).

The subset is drawn per call, from `generator` or torch's global generator
(`torch.manual_seed` makes a run reproducible). With "bernoulli" the number
kept is random: it is padded up to a bucket (the next multiple of
ceil(size/16), at most the size) with entries of weight 0, so that a leg has at
most 17 compiled programs; with "fixed" it is one.

>>> import torch
>>> sample = Sample("spatial", keep=0.25, scheme="fixed", generator=torch.Generator().manual_seed(0))
>>> counts, indices, weights = draw(sample, (8, 6))      # two legs: q = 0.5 each
>>> counts, indices.shape, weights.tolist()[:4]
((4, 3), torch.Size([7]), [2.0, 2.0, 2.0, 2.0])
>>> Sample("spatial", keep=0.5).spatial_dims, Sample("spatial", 0.5, spatial_dims="all").spatial_dims
((0,), 'all')
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, isfinite
from numbers import Real
from typing import Any, Optional, Sequence, Union

import torch

from tnconv.errors import argument_error
from tnconv.ops.sampling import check_spatial_dims

__all__ = ["Sample", "LEGS", "SCHEMES", "ROUTES", "draw", "typical_counts", "bucket"]

#: The legs a sample may name (each operation accepts some of them).
LEGS = ("spatial", "channel", "batch")
SCHEMES = ("bernoulli", "fixed")
#: How a draw is evaluated: "sliced" contracts the smaller network, "masked" the exact one
#: on the masked argument (a weight VJP only), "auto" the cheaper of the two by the cost
#: model, or, for a large draw on CPU, the faster as timed on its first calls
#: (`tnconv.sampled`, `tnconv.trials`).
ROUTES = ("auto", "sliced", "masked")
#: A leg of size L pads a Bernoulli draw to a multiple of ceil(L / BUCKETS).
BUCKETS = 16


@dataclass(frozen=True)
class Sample:
    """Sample leg `leg` ("spatial", "channel" or "batch"), keeping a share `keep` in (0, 1]
    by `scheme` ("bernoulli" or "fixed"), drawing from `generator` (a `torch.Generator`,
    or None for torch's global one), evaluated by `route` ("auto", "sliced" or "masked",
    `ROUTES`: the estimate is the same, only its cost differs). A spatial sample slices
    the spatial dims `spatial_dims` (0-based; default the leading one, "all" for every
    one; ignored by the other legs). See the module docstring for the statistics."""

    leg: str
    keep: float
    generator: Optional[torch.Generator] = None
    scheme: str = "bernoulli"
    route: str = "auto"
    spatial_dims: Union[str, tuple[int, ...]] = (0,)

    def __post_init__(self) -> None:
        op = "tnconv.Sample"
        if self.leg not in LEGS:
            raise argument_error(op, "leg", self.leg, ", ".join(repr(x) for x in LEGS))
        keep = self.keep
        if (not isinstance(keep, Real) or isinstance(keep, bool) or not isfinite(keep)
                or not 0 < keep <= 1):
            raise argument_error(op, "keep", keep, "a number in (0, 1]")
        if self.scheme not in SCHEMES:
            raise argument_error(op, "scheme", self.scheme, ", ".join(repr(s) for s in SCHEMES))
        if self.route not in ROUTES:
            raise argument_error(op, "route", self.route, ", ".join(repr(r) for r in ROUTES))
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise argument_error(op, "generator", self.generator, "None or a torch.Generator")
        object.__setattr__(self, "spatial_dims", check_spatial_dims(op, self.spatial_dims))

    def per_leg(self, legs: int) -> float:
        """The keep probability of each of `legs` independently sliced legs."""
        return float(self.keep) ** (1.0 / legs) if legs else 1.0

    def __repr__(self) -> str:
        source = "" if self.generator is None else ", generator=<torch.Generator>"
        route = "" if self.route == "auto" else f", route={self.route!r}"
        dims = ("" if self.spatial_dims == (0,) or self.leg != "spatial"
                else f", spatial_dims={self.spatial_dims!r}")
        return (f"Sample(leg={self.leg!r}, keep={self.keep!r}, scheme={self.scheme!r}"
                f"{route}{dims}{source})")


def bucket(kept: int, size: int) -> int:
    """The padded count of a Bernoulli draw that kept `kept` of `size` indices."""
    step = ceil(size / BUCKETS)
    return min(max(ceil(kept / step), 1) * step, size)


def typical_counts(sample: Sample, sizes: Sequence[int]) -> tuple[int, ...]:
    """The counts of a draw that keeps the expected share of each leg (the program shown
    by `explain` and `render`)."""
    q = sample.per_leg(len(sizes))
    fixed = tuple(max(1, round(q * size)) for size in sizes)
    return fixed if sample.scheme == "fixed" else tuple(
        bucket(kept, size) for kept, size in zip(fixed, sizes))


def _leg(sample: Sample, size: int, q: float, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, weights) of one leg, in increasing order of index, padded for Bernoulli."""
    generator = sample.generator
    if sample.scheme == "fixed":
        count = max(1, round(q * size))
        chosen = torch.randperm(size, generator=generator, device=device)[:count]
        index = chosen.sort().values
        return index, torch.full((count,), size / count, dtype=torch.float64, device=device)
    index = (torch.rand(size, generator=generator, device=device) < q).nonzero()[:, 0]
    kept = index.numel()
    padding = bucket(kept, size) - kept
    weights = torch.full((kept + padding,), 1.0 / q, dtype=torch.float64, device=device)
    if padding:
        weights[kept:] = 0.0
        index = torch.cat([index, index.new_zeros(padding)])
    return index, weights


def draw(sample: Sample, sizes: Sequence[int]) -> tuple[tuple[int, ...], torch.Tensor,
                                                        torch.Tensor]:
    """One draw for legs of `sizes`: the counts, all indices (int64) and all weights
    (float64), leg after leg, on the generator's device (the CPU for the global one)."""
    device = sample.generator.device if sample.generator is not None else torch.device("cpu")
    q = sample.per_leg(len(sizes))
    legs = [_leg(sample, size, q, device) for size in sizes]
    counts = tuple(index.numel() for index, _ in legs)
    return counts, torch.cat([i for i, _ in legs]), torch.cat([w for _, w in legs])
