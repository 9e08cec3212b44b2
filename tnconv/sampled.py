"""`compile(op, spec, sample=Sample(...))`: an operation estimated from a fresh subset per call.

The compiled object keeps the exact operation (its arguments, checks, and the
route for keep = 1) and, per tuple of kept counts, the registered sampled
operation ("sampled_weight_vjp", "sampled_kfc": `tnconv.ops.sampling`), whose
network slices the sampled legs with selection tensors. The drawn indices are
call arguments, not constants, so a program depends only on the counts
("fixed": one per spec; "bernoulli": a few buckets per leg, `tnconv.sampling`).
`explain()`, `render()` and `to_dot()` show the program of a typical draw.

>>> import torch, tnconv
>>> spec = tnconv.ConvSpec(3, 4, kernel_size=3, input_size=(8, 8), padding=1)
>>> vjp = tnconv.compile("weight_vjp", spec, sample=tnconv.Sample("spatial", keep=0.25,
...                      scheme="fixed"))
>>> vjp(torch.rand(2, 3, 8, 8), torch.rand(2, 4, 8, 8)).shape
torch.Size([4, 3, 3, 3])
>>> sorted(t.name for t in vjp.input_network().tensors if t.role == "selection")
['R_o1[V]', 'R_o1[Π1]', 'R_o2[V]', 'R_o2[Π2]']
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from tnconv.cache import LRUCache, kept
from tnconv.compiler import Compiled
from tnconv.errors import argument_error
from tnconv.ir.network import Network
from tnconv.lower import EinsumProgram, Schedule
from tnconv.ops.sampling import LEGS, SAMPLED, sampled_legs
from tnconv.sampling import Sample, draw, typical_counts
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["SampledCompiled", "compile_sampled", "check_sample"]

_SAMPLED = LRUCache(name="sampled")


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
        self._by_counts: dict[tuple[int, ...], Compiled] = {}

    @property
    def arguments(self) -> tuple[str, ...]:
        return self.exact.arguments

    def legs(self, batch_size: Optional[int] = None) -> tuple[tuple[str, int], ...]:
        """(name, size) of each leg a draw slices (at `batch_size`, default `.batch_size`)."""
        batch = self.exact.batch_size if batch_size is None else batch_size
        return sampled_legs(self.operation.name, self.spec, batch, self.sample.leg)

    def compiled_for(self, counts: tuple[int, ...]) -> Compiled:
        """The sampled operation for a draw keeping `counts` indices of each sliced leg."""
        from tnconv.compiler import compile

        return kept(self._by_counts, tuple(counts), lambda: compile(
            self._sampled.name, self.spec, strategy=self.exact.strategy,
            rewrite=self.exact.rewrite, batch_size=self.exact.batch_size,
            leg=self.sample.leg, counts=tuple(counts), **self.options), keep=64)

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
        if self._sampled.copies > 1:  # one root per identical copy of the sampled tensors
            weights = weights ** (1.0 / self._sampled.copies)
        return self.compiled_for(counts).run(*tensors, indices.to(first.device), weights)

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
                 f"(the program below; other draws compile their own counts)"]
        return "\n".join(lines) + "\n" + self.typical.explain()

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


def compile_sampled(op: str, spec: ConvSpec, sample: Any, *, strategy: str, rewrite: bool,
                    batch_size: int, **options: Any) -> SampledCompiled:
    """`compile(op, spec, sample=sample, …)` (cached on its arguments)."""
    from tnconv.compiler import compile

    check_sample(f"compile({op!r})", op, sample)
    exact = compile(op, spec, strategy=strategy, rewrite=rewrite, batch_size=batch_size,
                    **options)
    return _SAMPLED.get_or_create((exact, sample), lambda: SampledCompiled(exact, sample))
