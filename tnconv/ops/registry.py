"""`Operation`: what `tnconv.compile` needs to know about one named operation.

An operation is a builder (spec, batch size, options) -> `Network`, the data
roles it takes as arguments (in call order), the user-facing shapes of those
arguments and of its result, and optionally a native torch route for
`strategy="auto"`, named as "module:function" (signature (spec, options, *tensors),
returning `NotImplemented` where it does not apply).

>>> from tnconv.ops import get_operation
>>> get_operation("forward").arguments
('input', 'weight')
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable, Optional

from tnconv.errors import argument_error
from tnconv.ir.network import Network


__all__ = ["Operation", "register", "get_operation", "OPERATIONS"]

Shapes = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Operation:
    """A named operation around a convolution."""

    name: str
    build: Callable[..., Network]
    arguments: tuple[str, ...]
    argument_shapes: Callable[..., Shapes]
    result_shape: Callable[..., tuple[int, ...]]
    description: str
    defaults: tuple[tuple[str, Any], ...] = ()
    #: The values each option may take (compared with their types: 1 is not True).
    choices: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    batch_argument: int = 0
    native: Optional[str] = None
    #: How the built network is rewritten, "module:function" with signature (operation,
    #: spec, batch, options) -> `RewriteResult`; None: `best_rewrite` of the built network.
    rewriter: Optional[str] = None
    #: A pure function of the lowered program returning one line for `Compiled.explain`
    #: about the plan the compiler chose (e.g. which contraction form a path took).
    explain_plan: Optional[Callable[[Any], str]] = None

    def native_route(self) -> Optional[Callable[..., Any]]:
        """The native torch route, imported on first use ("module:function" in `native`).

        Kept as a name so the builders stay free of torch imports; the compiled
        object resolves it once, so the per-call path does no import.
        """
        return _resolve(self.native)

    def rewriter_route(self) -> Optional[Callable[..., Any]]:
        """The operation's own rewrite ("module:function" in `rewriter`), or None."""
        return _resolve(self.rewriter)

    def options(self, given: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        """Merge `given` into the defaults; reject unknown names. Sorted and hashable."""
        merged = dict(self.defaults)
        for key, value in given.items():
            if key not in merged:
                allowed = ", ".join(sorted(merged)) or "none"
                raise argument_error(f"compile({self.name!r})", key, value,
                                     f"these options: {allowed}")
            merged[key] = value
        for key, allowed in self.choices:
            value = merged[key]
            if not any(type(value) is type(a) and value == a for a in allowed):
                raise argument_error(f"compile({self.name!r})", key, value,
                                     ", ".join(repr(a) for a in allowed))
        return tuple(sorted(merged.items()))


def _resolve(name: Optional[str]) -> Optional[Callable[..., Any]]:
    if name is None:
        return None
    module, _, function = name.partition(":")
    return getattr(import_module(module), function)


OPERATIONS: dict[str, Operation] = {}


def register(operation: Operation) -> Operation:
    OPERATIONS[operation.name] = operation
    return operation


def get_operation(name: str) -> Operation:
    """The operation registered under `name`, or a `TNConvError` listing the known ones."""
    if not isinstance(name, str) or name not in OPERATIONS:
        raise argument_error("compile", "op", name,
                             ", ".join(repr(n) for n in sorted(OPERATIONS)))
    return OPERATIONS[name]


