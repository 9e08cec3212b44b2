"""`tnconv.compile`: an operation on a spec, compiled once and callable on tensors.

>>> import torch, tnconv
>>> spec = tnconv.ConvSpec(3, 4, kernel_size=3, input_size=(8, 8), padding=1)
>>> fwd = tnconv.compile("forward", spec, strategy="tn")
>>> x, w = torch.rand(2, 3, 8, 8), torch.rand(4, 3, 3, 3)
>>> fwd(x, w).shape
torch.Size([2, 4, 8, 8])
>>> print(tnconv.compile("forward", spec, rewrite=False).program.equation)  # as built
abcef,bdcgh,gie,hjf->abdij
>>> [step.rule for step in fwd.rewrite_result().steps]  # what the rewrites did
['squeeze_size_one', 'squeeze_size_one', 'selection_lowering', 'selection_lowering']
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import torch

from tnconv.cache import LRUCache, kept
from tnconv.errors import TNConvError, argument_error, positive_int
from tnconv.ir.network import Network
from tnconv.ir.selection import SELECTION_ROLE
from tnconv.lower import EinsumProgram, Schedule, build_schedule, lower, price
from tnconv.ops import Operation, get_operation
from tnconv.lower.schedule.conv_views import runs_by_kernels
from tnconv.rewrite.driver import (EXPORT_RULES, GATHER_ORDER, RewriteResult, best_rewrite,
                                   rewrite)
from tnconv.rewrite.rules import scatter_to_gather
from tnconv.runtime.interpreter import Bound, bound
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["Compiled", "compile", "STRATEGIES"]

STRATEGIES = ("auto", "tn")
_COMPILED = LRUCache(name="compiled")


class Compiled:
    """One operation on one `ConvSpec`; programs are built per batch size and cached.

    Call it with the operation's arguments (torch tensors, in the order of
    `.arguments`). `.program` is the program for `batch_size` (default 1),
    `.explain()` a readable account of how it was built.
    """

    def __init__(self, operation: Operation, spec: ConvSpec, options: tuple,
                 *, strategy: str = "auto", rewrite: bool = True, batch_size: int = 1) -> None:
        self.operation = operation
        self.spec = spec
        self.options = dict(options)
        self.strategy = strategy
        self.rewrite = rewrite
        self.batch_size = batch_size
        self._programs = LRUCache(maxsize=16)
        self._rewrites = LRUCache(maxsize=16)
        self._exports = LRUCache(maxsize=16)
        self._plans: dict[tuple, Bound] = {}
        self._native = operation.native_route() if strategy == "auto" else None
        self._lock = threading.Lock()

    @property
    def arguments(self) -> tuple[str, ...]:
        return self.operation.arguments

    # ----------------------------------------------------------- building
    def input_network(self, batch_size: int | None = None) -> Network:
        """The network as the builder made it, before any rewrite."""
        batch = self.batch_size if batch_size is None else batch_size
        return self.operation.build(self.spec, batch, **self.options)

    def rewrite_result(self, batch_size: int | None = None) -> RewriteResult:
        """The rewrite of the builder's network: result and steps, cached per batch size."""
        batch = self.batch_size if batch_size is None else batch_size
        own = self.operation.rewriter_route()
        if own is not None:  # e.g. the sampled operations: the exact one's rewrite, then sampled
            return self._rewrites.get_or_create(
                batch, lambda: own(self.operation, self.spec, batch, self.options))
        return self._rewrites.get_or_create(batch, lambda: self._best_rewrite(batch))

    def _best_rewrite(self, batch: int) -> RewriteResult:
        """The cheapest rewrite by the network cost (`best_rewrite`); for a network that
        scatters, its fully gathered form instead where the schedule runs that by torch's
        kernels alone (a transposed convolution: the dilated cotangent's zeros, which the
        network cost counts, are never multiplied)."""
        net = self.input_network(batch)
        best = best_rewrite(net)
        if scatter_to_gather(net) is None:
            return best
        gathered = rewrite(net, GATHER_ORDER)
        result = self.operation.result_shape(self.spec, batch, **self.options)
        schedule = build_schedule(lower(gathered.network, self.operation.arguments, result))
        return gathered if runs_by_kernels(schedule) else best

    def network(self, batch_size: int | None = None) -> Network:
        """The network that is lowered (after the rewrites, when enabled)."""
        if not self.rewrite:
            return self.input_network(batch_size)
        return self.rewrite_result(batch_size).network

    def program_for(self, batch_size: int) -> EinsumProgram:
        positive_int(f"Compiled({self.operation.name!r}).program_for", "batch_size", batch_size)

        def build() -> EinsumProgram:
            result = self.operation.result_shape(self.spec, batch_size, **self.options)
            return lower(self.network(batch_size), self.operation.arguments, result)

        return self._programs.get_or_create(batch_size, build)

    def export_program(self, batch_size: int | None = None) -> EinsumProgram:
        """The program as a plain einsum (every operand a dense array, no data views), for export.

        With rewrites on, only the rules that introduce no views run (`EXPORT_RULES`).
        """
        batch = self.batch_size if batch_size is None else batch_size

        def build() -> EinsumProgram:
            net = self.input_network(batch)
            if self.rewrite:
                net = rewrite(net, EXPORT_RULES).network
            result = self.operation.result_shape(self.spec, batch, **self.options)
            return lower(net, self.operation.arguments, result)

        return self._exports.get_or_create(batch, build)

    @property
    def program(self) -> EinsumProgram:
        return self.program_for(self.batch_size)

    def schedule(self, batch_size: Optional[int] = None) -> Schedule:
        """The `Schedule` that runs the program for `batch_size` (default: `.batch_size`):
        typed steps over registers, as the runtime interprets them."""
        return build_schedule(self.program_for(self.batch_size if batch_size is None else batch_size))

    # ---------------------------------------------------------- executing
    def _check(self, tensors: tuple[torch.Tensor, ...]) -> int:
        """The boundary checks of `tnconv.nn.validate` for these tensors: count, types,
        shapes, one real floating dtype, one device, and the size guard; the batch size."""
        from tnconv.nn.validate import floating, guard_sizes

        op = self.operation
        name = f"tnconv.compile({op.name!r})"
        if len(tensors) != len(op.arguments):
            raise TNConvError(f"{name}: expected {len(op.arguments)} tensors "
                              f"({', '.join(op.arguments)}), got {len(tensors)}")
        batched = op.batch_argument
        floating(name, (op.arguments[batched], tensors[batched]),
                 *[(role, t) for i, (role, t) in enumerate(zip(op.arguments, tensors))
                   if i != batched and role != SELECTION_ROLE])
        batch = tensors[batched].shape[0] if tensors[batched].dim() else 0
        expected = op.argument_shapes(self.spec, batch, **self.options)
        for position, (role, t, shape) in enumerate(zip(op.arguments, tensors, expected)):
            if tuple(t.shape) != tuple(shape):
                shown = ("N", *shape[1:]) if position == batched else tuple(shape)
                raise argument_error(name, role, f"tensor of shape {tuple(t.shape)}",
                                     f"shape ({', '.join(map(str, shown))}) for {self.spec}")
            if role == SELECTION_ROLE and t.dtype != torch.int64:  # tnconv.ir.selection
                raise argument_error(name, role, f"tensor of dtype {t.dtype}",
                                     "torch.int64 (indices of the kept positions)")
        guard_sizes(name, self, batch)
        return batch

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        self._check(tensors)
        return self.run(*tensors)

    def run(self, *tensors: torch.Tensor) -> torch.Tensor:
        """Evaluate without checking the arguments (for callers that validated their shapes)."""
        batch = tensors[self.operation.batch_argument].shape[0]
        first = tensors[0]
        if batch == 0:
            return self._empty_batch(first)
        if self._native is not None:
            result = self._native(self.spec, self.options, *tensors)
            if result is not NotImplemented:
                return result
        return self._plan(batch, first.device, first.dtype)(*tensors)

    def _empty_batch(self, first: torch.Tensor) -> torch.Tensor:
        """The result for a batch of no samples, as torch gives it: an empty tensor where the
        result keeps the batch, zeros where the batch is summed (a weight VJP, a summed
        factor); a mean over no samples is an error."""
        op = self.operation
        shape = op.result_shape(self.spec, 0, **self.options)
        reduction = self.options.get("reduction")
        if 0 not in shape and reduction in ("mean", "batch"):
            raise argument_error(f"tnconv.compile({op.name!r})", op.arguments[op.batch_argument],
                                 "a tensor with no samples (batch size 0)",
                                 f"at least one sample for reduction={reduction!r}")
        return torch.zeros(shape, dtype=first.dtype, device=first.device)

    def runner_for(self, *tensors: torch.Tensor) -> Callable[..., torch.Tensor]:
        """What `run` calls for tensors like these (same batch size, device, dtype): the
        bound schedule itself where no native route applies, so callers that cache per
        input skip `run`'s dispatch."""
        if self._native is not None:
            return self.run
        first = tensors[0]
        return self._plan(tensors[self.operation.batch_argument].shape[0], first.device,
                          first.dtype)

    def _plan(self, batch: int, device: torch.device, dtype: torch.dtype) -> Bound:
        key = (batch, device, dtype)
        plan = self._plans.get(key)
        if plan is None:
            with self._lock:
                plan = kept(self._plans, key,
                            lambda: bound(self.schedule(batch), device, dtype))
        return plan

    # ---------------------------------------------------------- reporting
    def explain(self) -> str:
        """Spec, the rules that fired (cost before and after), network, equation, path and costs."""
        net = self.network()
        if self.rewrite:
            steps = self.rewrite_result()
            rewrites = [f"rewrites ({len(steps.steps)} steps):", steps.describe()]
        else:
            rewrites = ["rewrites: off (rewrite=False)"]
        lines = [
            f"operation {self.operation.name}: {self.operation.description}",
            f"spec      {self.spec}",
            f"options   {self.options or '{}'}  strategy={self.strategy!r} "
            f"rewrite={self.rewrite}  batch_size={self.batch_size}",
            *rewrites,
            "network (before lowering):",
            net.describe(),
            self.program.describe(),
            f"cost     {price(self.program).describe()}",
            *([f"plan     {self.operation.explain_plan(self.program)}"]
              if self.operation.explain_plan is not None else []),
            "schedule (what runs, per call unless marked 'once'):",
            self.schedule().describe(),
        ]
        return "\n".join(lines)

    # ------------------------------------------------- diagrams and export
    def to_dot(self, stage: str = "rewritten") -> str:
        """Graphviz DOT source of the network at `stage` ("input" or "rewritten")."""
        from tnconv.render.dot import stage_network, to_dot

        return to_dot(stage_network(self, stage))

    def render(self, path: Any, stage: str = "rewritten") -> Any:
        """Draw the network at `stage` to `path` (SVG or PNG, from the suffix); returns the path."""
        from tnconv.render.dot import render, stage_network

        return render(stage_network(self, stage), path)

    def to_einsum(self, batch_size: int | None = None) -> Any:
        """The program as a framework-free `ExportedEinsum` (numpy constants, no torch).

        With no `batch_size` the export is batch-free: the batch leg stays an open
        index and `evaluate` takes any batch size. `batch_size=n` exports fixed
        shapes for batch size n.
        """
        from tnconv.export.exported import from_compiled

        if SELECTION_ROLE in self.operation.arguments:
            raise argument_error(f"to_einsum ({self.operation.name})", "op",
                                 self.operation.name, "an operation without selections: its "
                                 "argument 'selection' holds indices, which no einsum takes")
        return from_compiled(self, batch_size)

    def __repr__(self) -> str:
        return f"Compiled({self.operation.name!r}, {self.spec})"


def compile(op: str, spec: ConvSpec, *, strategy: str = "auto", rewrite: bool = True,
            batch_size: int = 1, sample: Any = None, **options: Any) -> Compiled:
    """Compile operation `op` (e.g. ``"forward"``, ``"unfold"``) for `spec`.

    The result is cached on (op, spec, options): compiling twice returns the
    same object, so its programs and execution plans are reused. With a
    `tnconv.Sample` ("weight_vjp", "kfc"), each call estimates the result from a
    fresh random subset of one leg (`tnconv.sampled.SampledCompiled`).
    """
    if sample is not None:
        from tnconv.sampled import compile_sampled

        return compile_sampled(op, spec, sample, strategy=strategy, rewrite=rewrite,
                               batch_size=batch_size, **options)
    operation = get_operation(op)
    if not isinstance(spec, ConvSpec):
        raise argument_error(f"compile({op!r})", "spec", type(spec).__name__, "a tnconv.ConvSpec")
    if strategy not in STRATEGIES:
        raise argument_error(f"compile({op!r})", "strategy", strategy,
                             ", ".join(repr(s) for s in STRATEGIES))
    positive_int(f"compile({op!r})", "batch_size", batch_size)
    if not isinstance(rewrite, bool):
        raise argument_error(f"compile({op!r})", "rewrite", rewrite, "True or False")
    opts = operation.options(options)
    try:
        hash(opts)
    except TypeError:
        name, value = next((k, v) for k, v in opts if not _hashable(v))
        raise argument_error(f"compile({op!r})", name, value, "a hashable value (a tuple, "
                             "not a list)") from None
    key = (op, spec, opts, strategy, rewrite, batch_size)
    return _COMPILED.get_or_create(
        key, lambda: Compiled(operation, spec, opts, strategy=strategy,
                              rewrite=rewrite, batch_size=batch_size))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
