"""`compile(op, spec, sample=Sample(...))`: an operation estimated from a fresh subset per call.

The compiled object keeps the exact operation (its arguments, checks, and the
route for keep = 1) and, per tuple of kept counts, the registered sampled
operation ("sampled_weight_vjp", "sampled_kfc": `tnconv.ops.sampling`), whose
network slices the sampled legs with selection tensors. The drawn indices are
call arguments, not constants, so a program depends only on the counts
("fixed": one per spec; "bernoulli": a few buckets per leg, `tnconv.sampling`).
`explain()`, `render()` and `to_dot()` show the program of a typical draw.

Slicing saves work only where the sliced network is cheaper than the exact one:
gathering a spatial subset of overlapping windows (a depthwise layer's, whose
exact VJP reads the windows in place) can cost more than it saves. A weight
VJP's spatial draw therefore runs, where the cost model prices the sliced
network at no less than the exact one, the exact operation on the cotangent (the
input, for a transposed convolution) times the draw's rescaled mask: the same
estimate, at the exact operation's cost. `route()` and `explain()` say which.
With strategy "auto" a channel draw of a convolution's weight VJP, and a spatial draw
of one dim that leaves a convolution over the others, run the sampled operation's
native route: torch's weight-gradient kernel on the kept channels, or on the strips
the kept rows read (`tnconv.runtime.native.sampled_weight_vjp`). Its time falls with
`keep` where the work does; where the data it copies does not shrink enough (the
strips of a depthwise 3×3 layer at keep 0.5 are 1.5x its input), the masked route
(the exact VJP on the input masked by channel) can be faster. A large draw on CPU
(its exact operation priced at `TIMED_MIN_COST` or more) with `route="auto"` therefore
times both on its first calls and keeps the faster (`tnconv.trials`).

>>> import torch, tnconv
>>> spec = tnconv.ConvSpec(3, 4, kernel_size=3, input_size=(8, 8), padding=1)
>>> vjp = tnconv.compile("weight_vjp", spec, sample=tnconv.Sample("spatial", keep=0.25,
...                      scheme="fixed"))
>>> vjp(torch.rand(2, 3, 8, 8), torch.rand(2, 4, 8, 8)).shape
torch.Size([4, 3, 3, 3])
>>> sorted(t.name for t in vjp.input_network().tensors if t.role == "selection")
['R_o1[V]', 'R_o1[Π1]']
"""

from __future__ import annotations

from typing import Any, Optional

import time

import torch

from tnconv.cache import LRUCache, kept
from tnconv.compiler import Compiled
from tnconv.errors import argument_error
from tnconv.ir.network import Network
from tnconv.lower import EinsumProgram, Schedule
from tnconv.ops.sampling import LEGS, SAMPLED, check_spatial_dims, sampled_legs
from tnconv.sampling import Sample, draw, typical_counts
from tnconv.spec.conv_spec import ConvSpec
from tnconv.trials import RouteTrials

__all__ = ["SampledCompiled", "compile_sampled", "check_sample", "MASKABLE", "TIMED_MIN_COST"]

_SAMPLED = LRUCache(name="sampled")
#: (operation, leg) pairs whose draw can run as the exact operation on a masked argument.
MASKABLE = {("weight_vjp", "spatial"), ("weight_vjp", "channel")}
#: With route "auto", draws on CPU whose exact operation is priced at least this (FLOPs plus
#: bytes moved, `tnconv.lower.price`) time the masked and sliced routes on their first
#: calls (`tnconv.trials`); smaller ones, where a call costs microseconds, keep the static
#: choice.
TIMED_MIN_COST = 1 << 23


def check_sample(operation: str, op: str, sample: Any) -> Sample:
    """`sample` itself, after checking `op` can be sampled along its leg (`operation` names
    the caller in the error)."""
    if not isinstance(sample, Sample):
        raise argument_error(operation, "sample", sample, "None or a tnconv.Sample")
    if op not in SAMPLED:
        raise argument_error(operation, "sample", sample,
                             f"None: {op!r} takes no sample (operations that do: "
                             f"{', '.join(repr(name) for name in SAMPLED)})")
    if sample.leg not in LEGS[op]:
        raise argument_error(operation, "sample", sample,
                             f"a tnconv.Sample of leg {' or '.join(map(repr, LEGS[op]))} "
                             f"for {op!r}")
    if sample.route == "masked" and (op, sample.leg) not in MASKABLE:
        raise argument_error(operation, "sample", sample,
                             "a tnconv.Sample of route 'auto' or 'sliced': only a weight VJP "
                             "has an argument to mask")
    return sample


class SampledCompiled:
    """An exact operation and its sampled form; each call draws a fresh subset.

    Call it with the exact operation's arguments (`.arguments`). `.exact` is the
    exact compiled operation; `.compiled_for(counts)` the sampled one for a draw's
    counts; `.network()`, `.program`, `.schedule()`, `.explain()`, `.render()` and
    `.to_dot()` describe the program of a typical draw (`typical_counts`).
    """

    def __init__(self, exact: Compiled, sample: Sample) -> None:
        self.exact, self.sample = exact, sample
        self.spec, self.options = exact.spec, exact.options
        self.operation = exact.operation
        self._sampled = SAMPLED[exact.operation.name]
        self._spatial_dims = check_spatial_dims(f"compile({exact.operation.name!r})",
                                                sample.spatial_dims, self.spec.ndim) \
            if sample.leg == "spatial" else "all"
        self._by_counts: dict[tuple[int, ...], Compiled] = {}
        self._masked: dict[tuple[tuple[int, ...], int], int] = {}
        self._trials: dict[int, Optional[RouteTrials]] = {}

    @property
    def arguments(self) -> tuple[str, ...]:
        return self.exact.arguments

    def legs(self, batch_size: Optional[int] = None) -> tuple[tuple[str, int], ...]:
        """(name, size) of each leg a draw slices (at `batch_size`, default `.batch_size`)."""
        batch = self.exact.batch_size if batch_size is None else batch_size
        return sampled_legs(self.operation.name, self.spec, batch, self.sample.leg,
                            self._spatial_dims)

    def compiled_for(self, counts: tuple[int, ...]) -> Compiled:
        """The sampled operation for a draw keeping `counts` indices of each sliced leg."""
        from tnconv.compiler import compile

        return kept(self._by_counts, tuple(counts), lambda: compile(
            self._sampled.name, self.spec, strategy=self.exact.strategy,
            rewrite=self.exact.rewrite, batch_size=self.exact.batch_size,
            leg=self.sample.leg, counts=tuple(counts), spatial_dims=self._spatial_dims,
            **self.options), keep=64)

    @property
    def typical(self) -> Compiled:
        """The sampled operation of a draw keeping the expected share of each leg."""
        sizes = [size for _, size in self.legs()]
        return self.compiled_for(typical_counts(self.sample, sizes))

    # ------------------------------------------------------------- calling
    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        self.exact._check(tensors)
        return self.run(*tensors)

    def run(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Evaluate on a fresh draw, without checking the arguments."""
        batch = tensors[self.operation.batch_argument].shape[0]
        legs = self.legs(batch) if batch else ()
        if self.sample.keep == 1 or not legs:
            return self.exact.run(*tensors)
        counts, indices, weights = draw(self.sample, [size for _, size in legs])
        first = tensors[0]
        weights = weights.to(device=first.device, dtype=first.dtype)
        indices = indices.to(first.device)
        trials = self.trials(batch) if first.device.type == "cpu" else None
        if trials is None or trials.choice is not None:
            carrier = self._masked_carrier(counts, batch)
            return self._run_route(tensors, carrier, counts, indices, weights)
        route = trials.next()
        start = time.perf_counter()
        result = self._run_route(tensors, self._carrier() if route == "masked" else None,
                                 counts, indices, weights)
        trials.record(route, time.perf_counter() - start)
        return result

    def _run_route(self, tensors: tuple[torch.Tensor, ...], carrier: Optional[int],
                   counts: tuple[int, ...], indices: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
        """The draw masked on argument `carrier`, or sliced where it is None."""
        if carrier is not None:
            return self._run_masked(tensors, carrier, counts, indices, weights)
        if self._sampled.copies > 1:  # one root per identical copy of the sampled tensors
            weights = weights ** (1.0 / self._sampled.copies)
        return self.compiled_for(counts).run(*tensors, indices, weights)

    def trials(self, batch: int) -> Optional[RouteTrials]:
        """The timing of the masked and sliced routes at `batch` (`tnconv.trials`), or None
        where the route is not timed: asked for, not maskable, a draw whose exact operation
        is priced below `TIMED_MIN_COST`, or torch's deterministic algorithms on (the two
        routes round differently, so a draw repeated with the same seed during the trials
        could differ in its last bits)."""
        if batch not in self._trials:
            self._trials[batch] = RouteTrials(("sliced", "masked")) if self._timed(batch) \
                else None
        return self._trials[batch]

    def _timed(self, batch: int) -> bool:
        from tnconv.lower import price

        return (self.sample.route == "auto" and not torch.are_deterministic_algorithms_enabled()
                and (self.operation.name, self.sample.leg) in MASKABLE
                and price(self.exact.program_for(batch)).total >= TIMED_MIN_COST)

    def _carrier(self) -> int:
        """The argument a draw's mask goes on: the cotangent for a spatial draw (the input
        of a transposed convolution), the input for a channel draw."""
        return 1 if self.sample.leg == "spatial" and not self.spec.transposed else 0

    # ------------------------------------------------------ masked or sliced
    def _masked_carrier(self, counts: tuple[int, ...], batch: int) -> Optional[int]:
        """The argument a mask goes on (`_carrier`) where the draw runs masked, else None
        (slice): as asked; as the route trials chose (`trials`); else where the cost model
        prices the sliced network at no less than the exact one (slicing would save
        nothing).

        Only a weight VJP has such an argument: a spatial leg's positions are the spatial
        dims of the cotangent (of the input, for a transposed convolution), a channel leg's
        the input's channels, so the masked estimate is the exact VJP of the masked,
        rescaled argument."""
        route = self.sample.route
        if route == "sliced" or (self.operation.name, self.sample.leg) not in MASKABLE:
            return None
        if route == "masked":
            return self._carrier()
        trials = self._trials.get(batch)
        if trials is not None and trials.choice is not None:
            return self._carrier() if trials.choice == "masked" else None
        carrier = kept(self._masked, (tuple(counts), batch), lambda: self._masking_pays(
            counts, batch), keep=64)
        return None if carrier < 0 else carrier

    def _masking_pays(self, counts: tuple[int, ...], batch: int) -> int:
        """The carrier argument where masking pays, else -1 (always -1 where the sliced
        network runs as a torch kernel: its work falls with `keep`)."""
        from tnconv.lower import price
        from tnconv.runtime.native import sampled_weight_vjp_applies

        compiled = self.compiled_for(counts)
        if self.sample.leg == "channel" or (compiled.strategy == "auto" and
                                            sampled_weight_vjp_applies(self.spec,
                                                                       compiled.options)):
            return -1  # a smaller network or kernel: its work falls with keep (trials aside)
        sliced = price(compiled.program_for(batch)).total
        exact = price(self.exact.program_for(batch)).total
        return self._carrier() if sliced >= exact else -1

    def _run_masked(self, tensors: tuple[torch.Tensor, ...], carrier: int,
                    counts: tuple[int, ...], indices: torch.Tensor,
                    weights: torch.Tensor) -> torch.Tensor:
        """The exact operation on the argument times the draw's rescaled mask."""
        masked = list(tensors)
        masked[carrier] = tensors[carrier] * self._mask(tensors[carrier], counts, indices,
                                                        weights)
        return self.exact.run(*masked)

    def _mask(self, data: torch.Tensor, counts: tuple[int, ...], indices: torch.Tensor,
              weights: torch.Tensor) -> torch.Tensor:
        """The draw's rescaled mask, broadcasting against `data`: a channel draw's weights
        on the kept channels of every group, or the product of each sliced spatial dim's
        weights on its kept positions."""
        spatial = data.dim() - 2
        if self.sample.leg == "channel":
            groups = self.spec.groups
            per_group = _scattered(data, data.shape[1] // groups, indices, weights)
            return per_group.repeat(groups).view(-1, *(1,) * spatial)
        mask, start = data.new_ones((1,) * spatial), 0
        for (name, size), count in zip(self.legs(data.shape[0]), counts):
            dim = int(name[1:]) - 1  # o1, o2, … (i1, … when transposed): spatial dim 0, 1, …
            leg = _scattered(data, size, indices[start:start + count],
                             weights[start:start + count])
            mask = mask * leg.view((1,) * dim + (size,) + (1,) * (spatial - dim - 1))
            start += count
        return mask

    def route(self, counts: Optional[tuple[int, ...]] = None,
              batch_size: Optional[int] = None) -> str:
        """'masked' or 'sliced': how a draw keeping `counts` (default: the typical draw)
        runs at `batch_size` (default `.batch_size`)."""
        batch = self.exact.batch_size if batch_size is None else batch_size
        counts = typical_counts(self.sample, [size for _, size in self.legs(batch)]) \
            if counts is None else tuple(counts)
        return "sliced" if self._masked_carrier(counts, batch) is None else "masked"

    # ----------------------------------------------------------- reporting
    def network(self, batch_size: Optional[int] = None) -> Network:
        return self.typical.network(batch_size)

    def input_network(self, batch_size: Optional[int] = None) -> Network:
        return self.typical.input_network(batch_size)

    @property
    def program(self) -> EinsumProgram:
        return self.typical.program

    def schedule(self, batch_size: Optional[int] = None) -> Schedule:
        return self.typical.schedule(batch_size)

    def explain(self) -> str:
        """The sample, the legs it slices, then the typical draw's `Compiled.explain`."""
        legs = self.legs()
        q = self.sample.per_leg(len(legs))
        sliced = ", ".join(f"{name} ({size})" for name, size in legs) or "none (nothing to drop)"
        lines = [f"sample    {self.sample!r}: each call slices {sliced}, "
                 f"each leg kept with probability {q:.4g}",
                 f"typical  counts {typical_counts(self.sample, [s for _, s in legs])} "
                 f"(the program below; other draws compile their own counts)",
                 f"route    {self.route()} ({self._why()}): "
                 + ("each draw runs the exact operation on its masked, rescaled "
                            "argument; the sliced network below is not run"
                            if self.route() == "masked" else
                            "each draw runs the sliced network below")]
        return "\n".join(lines) + "\n" + self.typical.explain()

    def _why(self) -> str:
        """How `route()` was chosen, for `explain`."""
        if self.sample.route != "auto":
            return "asked"
        trials = self.trials(self.exact.batch_size)
        if trials is None:
            return "the cost model's choice"
        if trials.choice is None:
            return "the cost model's choice until the first calls have timed both routes"
        return f"timed on the first calls: {trials.describe()}"

    def to_dot(self, stage: str = "rewritten") -> str:
        return self.typical.to_dot(stage)

    def render(self, path: Any, stage: str = "rewritten") -> Any:
        return self.typical.render(path, stage)

    def to_einsum(self, batch_size: Optional[int] = None) -> Any:
        raise argument_error(f"to_einsum ({self.operation.name})", "sample", self.sample,
                             "None: a sampled operation draws its subset per call, so it has "
                             "no fixed einsum to export")

    def __repr__(self) -> str:
        return f"SampledCompiled({self.operation.name!r}, {self.spec}, {self.sample!r})"


def _scattered(like: torch.Tensor, size: int, indices: torch.Tensor,
               weights: torch.Tensor) -> torch.Tensor:
    """`weights` added at `indices` into zeros of length `size` (`like`'s dtype and device)."""
    return like.new_zeros(size).index_put_((indices,), weights, accumulate=True)


def compile_sampled(op: str, spec: ConvSpec, sample: Any, *, strategy: str, rewrite: bool,
                    batch_size: int, **options: Any) -> SampledCompiled:
    """`compile(op, spec, sample=sample, …)` (cached on its arguments)."""
    from tnconv.compiler import compile

    check_sample(f"compile({op!r})", op, sample)
    exact = compile(op, spec, strategy=strategy, rewrite=rewrite, batch_size=batch_size,
                    **options)
    return _SAMPLED.get_or_create((exact, sample), lambda: SampledCompiled(exact, sample))
