"""The tensor-network IR: `Tensor`, `Network`, validation and a networkx view.

A network is a tuple of tensors, each a node with named legs (indices), a size
for every index, the open (output) indices and an overall scalar factor. It is
immutable, compares structurally and hashes, so compiled results can be cached
on it. Data tensors (input, weight, cotangents, …) are the arguments of the
compiled operation, in the order they appear; constant tensors carry a symbolic,
hashable `value` (an `IndexPattern`, or a fused constant) that execution
materialises.

>>> from tnconv.spec.index_pattern import IndexPattern
>>> pi = IndexPattern(3, 1, 1, (0, 0), input_size=5, output_size=3)
>>> net = Network(
...     tensors=(Tensor("X", ("n", "i"), "input"), Tensor("Π1", ("k", "o", "i"), "pattern", pi)),
...     sizes=(("n", 2), ("i", 5), ("k", 3), ("o", 3)),
...     output=("n", "k", "o"),
... ).validate()
>>> net.shape_of(net.tensor("Π1"))
(3, 3, 5)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Hashable, Iterable, Optional

from tnconv.errors import TNConvError, argument_error

__all__ = ["Tensor", "Network", "CONSTANT_ROLES"]

#: Roles of tensors whose value is known symbolically (not passed by the caller).
CONSTANT_ROLES = ("pattern", "constant")


@dataclass(frozen=True)
class Tensor:
    """One node: a name unique in its network, its legs, its role and (for constants) its value.

    A data tensor may carry a `view` (a `tnconv.ir.views.View`): the caller's
    argument is reshaped to the view's base shape and the view's steps are
    applied before the contraction; `indices` are then the legs of the view.
    """

    name: str
    indices: tuple[str, ...]
    role: str
    value: Optional[Hashable] = None
    view: Optional[Hashable] = None

    @property
    def is_constant(self) -> bool:
        return self.role in CONSTANT_ROLES


@dataclass(frozen=True)
class Network:
    """Immutable tensor network: tensors, index sizes, open indices, scalar factor."""

    tensors: tuple[Tensor, ...]
    sizes: tuple[tuple[str, int], ...]
    output: tuple[str, ...]
    scale: float = 1.0
    name: str = field(default="", compare=False)

    # ------------------------------------------------------------ queries
    @cached_property
    def size_map(self) -> dict[str, int]:
        return dict(self.sizes)

    def size(self, index: str) -> int:
        return self.size_map[index]

    def shape_of(self, tensor: Tensor) -> tuple[int, ...]:
        return tuple(self.size_map[i] for i in tensor.indices)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.size_map[i] for i in self.output)

    def tensor(self, name: str) -> Tensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise argument_error("Network.tensor", "name", name,
                             ", ".join(repr(t.name) for t in self.tensors))

    def with_role(self, role: str) -> Tensor:
        """The single tensor with `role`."""
        found = [t for t in self.tensors if t.role == role]
        if len(found) != 1:
            raise KeyError(f"network has {len(found)} tensors with role {role!r}")
        return found[0]

    @property
    def data_tensors(self) -> tuple[Tensor, ...]:
        return tuple(t for t in self.tensors if not t.is_constant)

    @property
    def constant_tensors(self) -> tuple[Tensor, ...]:
        return tuple(t for t in self.tensors if t.is_constant)

    @cached_property
    def graph(self) -> Any:
        """The network as a bipartite `networkx.Graph` (`to_networkx`), built once: graph
        questions (carriers, degrees, components) are asked of it."""
        return self.to_networkx()

    def carriers(self, index: str, exclude: Iterable[str] = ()) -> tuple[Tensor, ...]:
        """The tensors that carry `index`, in network order (those named in `exclude` left out)."""
        if ("index", index) not in self.graph:
            return ()
        names = {name for kind, name in self.graph[("index", index)] if kind == "tensor"}
        names.difference_update(exclude)
        return tuple(t for t in self.tensors if t.name in names)

    def index_degree(self) -> Counter:
        """How many tensors carry each index."""
        graph = self.graph
        return Counter({i: sum(kind == "tensor" for kind, _ in graph[("index", i)])
                        for i, _ in self.sizes})

    def hyper_edges(self) -> tuple[str, ...]:
        """Indices carried by three or more tensors (or two plus the output): the index
        nodes of degree three or more in `graph`, the output counting as a node."""
        return tuple(i for i, _ in self.sizes if self.graph.degree(("index", i)) >= 3)

    # ------------------------------------------------------------ editing
    def replace(self, **changes: Any) -> "Network":
        """A copy with some fields changed (the original is untouched)."""
        return replace(self, **changes)

    def without(self, name: str) -> "Network":
        return self.replace(tensors=tuple(t for t in self.tensors if t.name != name))

    def with_tensors(self, tensors: Iterable[Tensor]) -> "Network":
        return self.replace(tensors=tuple(tensors))

    def pruned_sizes(self) -> "Network":
        """Drop sizes of indices that no tensor and no output uses."""
        used = {i for t in self.tensors for i in t.indices} | set(self.output)
        return self.replace(sizes=tuple((i, s) for i, s in self.sizes if i in used))

    # ---------------------------------------------------------- validation
    def validate(self) -> "Network":
        """Check internal consistency; return self or raise `TNConvError`."""
        names = [t.name for t in self.tensors]
        if len(set(names)) != len(names):
            raise TNConvError(f"network {self.name!r}: tensor names repeat: {names}")
        declared = [i for i, _ in self.sizes]
        if len(set(declared)) != len(declared):
            raise TNConvError(f"network {self.name!r}: index sizes declared twice: {declared}")
        for index, size in self.sizes:
            if not isinstance(size, int) or size < 1:
                raise TNConvError(f"network {self.name!r}: index {index!r} has size {size!r}")
        for t in self.tensors:
            self._validate_tensor(t)
        carried = {i for t in self.tensors for i in t.indices}
        missing = [i for i in self.output if i not in carried]
        if missing or len(set(self.output)) != len(self.output):
            raise TNConvError(
                f"network {self.name!r}: output {self.output} must be distinct indices "
                f"carried by some tensor (missing {missing})")
        return self

    def _validate_tensor(self, t: Tensor) -> None:
        unknown = [i for i in t.indices if i not in self.size_map]
        if unknown:
            raise TNConvError(f"network {self.name!r}: tensor {t.name!r} has undeclared "
                              f"indices {unknown}")
        if len(set(t.indices)) != len(t.indices):
            raise TNConvError(f"network {self.name!r}: tensor {t.name!r} repeats an index "
                              f"{t.indices}")
        if t.is_constant and t.value is None:
            raise TNConvError(f"network {self.name!r}: constant {t.name!r} has no value")
        expected = getattr(t.value, "shape", None)
        if t.is_constant and expected is not None and tuple(expected) != self.shape_of(t):
            raise TNConvError(f"network {self.name!r}: constant {t.name!r} has shape "
                              f"{tuple(expected)} but its indices have sizes {self.shape_of(t)}")
        if t.view is not None and tuple(t.view.shape) != self.shape_of(t):
            raise TNConvError(f"network {self.name!r}: view of {t.name!r} has shape "
                              f"{tuple(t.view.shape)} but its indices have sizes {self.shape_of(t)}")

    # ------------------------------------------------------------- views
    def to_networkx(self) -> Any:
        """Bipartite `networkx.Graph`: tensor nodes ('tensor', name), index nodes ('index', name).

        Open indices are linked to a node ('output', '').
        """
        import networkx as nx

        graph = nx.Graph()
        for t in self.tensors:
            graph.add_node(("tensor", t.name), role=t.role, indices=t.indices)
        for index, size in self.sizes:
            graph.add_node(("index", index), size=size)
        for t in self.tensors:
            for i in t.indices:
                graph.add_edge(("tensor", t.name), ("index", i))
        if self.output:
            graph.add_node(("output", ""))
            for i in self.output:
                graph.add_edge(("output", ""), ("index", i))
        return graph

    def describe(self) -> str:
        """One line per tensor: name, role and legs with sizes."""
        lines = []
        for t in self.tensors:
            legs = ", ".join(f"{i}={self.size_map[i]}" for i in t.indices)
            extra = f"  [{t.value.describe()}]" if hasattr(t.value, "describe") else ""
            extra += f"  [view: {t.view.describe()}]" if t.view is not None else ""
            lines.append(f"  {t.name:<8} {t.role:<14} ({legs}){extra}")
        out = ", ".join(f"{i}={self.size_map[i]}" for i in self.output)
        lines.append(f"  output   ({out})" + (f"  × {self.scale:g}" if self.scale != 1 else ""))
        return "\n".join(lines)
