"""`tnconv.compile`: an operation on a spec, compiled once and callable on tensors.

>>> import torch, tnconv
>>> spec = tnconv.ConvSpec(3, 4, kernel_size=3, input_size=(8, 8), padding=1)
>>> fwd = tnconv.compile("forward", spec, strategy="tn")
>>> x, w = torch.rand(2, 3, 8, 8), torch.rand(4, 3, 3, 3)
>>> fwd(x, w).shape
torch.Size([2, 4, 8, 8])
>>> print(fwd.program.equation)
abcef,bdcgh,gie,hjf->abdij
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from .cache import LRUCache
from .errors import TNConvError, argument_error
from .execute import ExecutionPlan, plan_for
from .lower import EinsumProgram, lower
from .network import Network
from .ops import Operation, get_operation
from .spec import ConvSpec

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
        self._plans: dict[tuple, ExecutionPlan] = {}
        self._lock = threading.Lock()

    @property
    def arguments(self) -> tuple[str, ...]:
        return self.operation.arguments

    # ----------------------------------------------------------- building
    def input_network(self, batch_size: int | None = None) -> Network:
        """The network as the builder made it, before any rewrite."""
        batch = self.batch_size if batch_size is None else batch_size
        return self.operation.build(self.spec, batch, **self.options)

    def network(self, batch_size: int | None = None) -> Network:
        """The network that is lowered (after the rewrites, when enabled)."""
        return self.input_network(batch_size)

    def program_for(self, batch_size: int) -> EinsumProgram:
        def build() -> EinsumProgram:
            result = self.operation.result_shape(self.spec, batch_size, **self.options)
            return lower(self.network(batch_size), self.operation.arguments, result)

        return self._programs.get_or_create(batch_size, build)

    def export_program(self, batch_size: int | None = None) -> EinsumProgram:
        """The program as a plain einsum (every operand a dense array), for export."""
        return self.program_for(self.batch_size if batch_size is None else batch_size)

    @property
    def program(self) -> EinsumProgram:
        return self.program_for(self.batch_size)

    # ---------------------------------------------------------- executing
    def _check(self, tensors: tuple[torch.Tensor, ...]) -> int:
        op = self.operation
        name = f"tnconv.compile({op.name!r})"
        if len(tensors) != len(op.arguments):
            raise TNConvError(f"{name}: expected {len(op.arguments)} tensors "
                              f"({', '.join(op.arguments)}), got {len(tensors)}")
        for role, t in zip(op.arguments, tensors):
            if not isinstance(t, torch.Tensor):
                raise argument_error(name, role, type(t).__name__, "a torch.Tensor")
        batched = tensors[op.batch_argument]
        batch = batched.shape[0] if batched.dim() else 0
        expected = op.argument_shapes(self.spec, batch, **self.options)
        for role, t, shape in zip(op.arguments, tensors, expected):
            if tuple(t.shape) != tuple(shape):
                raise argument_error(name, role, f"tensor of shape {tuple(t.shape)}",
                                     f"shape {tuple(shape)} for {self.spec}")
        return batch

    def __call__(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch = self._check(tensors)
        first = tensors[0]
        if self.strategy == "auto" and self.operation.native is not None:
            result = self.operation.native(self.spec, self.options, *tensors)
            if result is not NotImplemented:
                return result
        key = (batch, first.device, first.dtype)
        plan = self._plans.get(key)
        if plan is None:
            with self._lock:
                plan = plan_for(self.program_for(batch), first.device, first.dtype)
                if len(self._plans) >= 16:
                    self._plans.clear()
                self._plans[key] = plan
        return plan(*tensors)

    # ---------------------------------------------------------- reporting
    def explain(self) -> str:
        """Spec, network, equation, path and costs, as text."""
        net = self.network()
        lines = [
            f"operation {self.operation.name}: {self.operation.description}",
            f"spec      {self.spec}",
            f"options   {self.options or '{}'}  strategy={self.strategy!r} "
            f"rewrite={self.rewrite}  batch_size={self.batch_size}",
            "network (before lowering):",
            net.describe(),
            self.program.describe(),
        ]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Compiled({self.operation.name!r}, {self.spec})"


def compile(op: str, spec: ConvSpec, *, strategy: str = "auto", rewrite: bool = True,
            batch_size: int = 1, **options: Any) -> Compiled:
    """Compile operation `op` (e.g. ``"forward"``, ``"unfold"``) for `spec`.

    The result is cached on (op, spec, options): compiling twice returns the
    same object, so its programs and execution plans are reused.
    """
    operation = get_operation(op)
    if not isinstance(spec, ConvSpec):
        raise argument_error(f"compile({op!r})", "spec", type(spec).__name__, "a tnconv.ConvSpec")
    if strategy not in STRATEGIES:
        raise argument_error(f"compile({op!r})", "strategy", strategy,
                             ", ".join(repr(s) for s in STRATEGIES))
    if not isinstance(batch_size, int) or batch_size < 1:
        raise argument_error(f"compile({op!r})", "batch_size", batch_size, "a positive int")
    opts = operation.options(options)
    key = (op, spec, opts, strategy, bool(rewrite), batch_size)
    return _COMPILED.get_or_create(
        key, lambda: Compiled(operation, spec, opts, strategy=strategy,
                              rewrite=bool(rewrite), batch_size=batch_size))
