"""What a network's diagram shows, as plain data: nodes with label lines, edges with labels.

`draw(net)` decides everything a picture of `net` shows (no Graphviz needed):
one node per tensor, a junction dot for every index shared by three or more
tensors (or two and the output), an end node for every open leg and for every
index summed on one tensor alone, and one edge per leg, labelled with the
index and its size. `tnconv.render.dot` turns a `Drawing` into a
`graphviz.Graph`; the gallery test compares the committed SVGs with it.

The style follows the tensor-network literature: data tensors are round nodes
coloured by role (a data tensor read through a view notes the view); index
patterns Π are amber boxes labelled with their spatial dimension and
hyper-parameters; other constants are grey dashed boxes.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> drawing = draw(forward_network(ConvSpec(2, 4, kernel_size=3, input_size=(5,), groups=2), 1))
>>> drawing.node("tensor W").label, drawing.node("tensor Π1").label[0]
(('W', 'weight'), 'Π1 · dim 1')
>>> sorted(e.label for e in drawing.edges if "junction g" in (e.tail, e.head))
['', '', 'g=2']
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from itertools import groupby

from tnconv.errors import argument_error
from tnconv.ir.network import Network, Tensor

__all__ = ["Node", "Edge", "Drawing", "draw", "node_id"]

_ROLE_COLOURS = {"input": "#cfe2ff", "weight": "#c8ecc8", "grad_output": "#ffd0d0",
                 "input_tangent": "#ffe0b3", "weight_tangent": "#e0f5b3"}
_OTHER_DATA = "#e6dcf5"
_WRAP = 22
#: Graphviz attributes (other than the label) of each kind of node.
_PATTERN_STYLE = (("shape", "box"), ("style", "filled"), ("fillcolor", "#ffe9a8"),
                  ("color", "#b8860b"))
_CONSTANT_STYLE = (("shape", "box"), ("style", "filled,dashed"), ("fillcolor", "#eeeeee"),
                   ("color", "#777777"))
_JUNCTION_STYLE = (("shape", "point"), ("width", "0.09"), ("color", "#333333"))
_OPEN_STYLE = (("shape", "none"), ("width", "0.05"), ("height", "0.05"))
_SUMMED_STYLE = (("shape", "circle"), ("fontsize", "8"), ("width", "0.22"),
                 ("fixedsize", "true"), ("color", "#777777"))


@dataclass(frozen=True)
class Node:
    """One node: its id, the lines of its label, an outside label and its Graphviz style."""

    id: str
    label: tuple[str, ...] = ()
    xlabel: str = ""
    style: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Edge:
    """One leg (undirected): the ids of its two ends and its label ('' for none)."""

    tail: str
    head: str
    label: str = ""


@dataclass(frozen=True)
class Drawing:
    """Everything a diagram shows; `open_ends` are drawn in the last rank (on the right)."""

    name: str
    caption: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    open_ends: tuple[str, ...]

    def node(self, id: str) -> Node:
        """The node called `id` (KeyError if none)."""
        for node in self.nodes:
            if node.id == id:
                return node
        raise KeyError(id)


def node_id(kind: str, name: str) -> str:
    """Id of a node: `kind` ('tensor', 'junction', 'open', 'summed') and a tensor or index name.

    Ids are for Graphviz only (labels show names as they are): a colon would read as a port
    in an edge and a final backslash would escape the closing quote, so ':' becomes '∶'
    (U+2236) and '\\' becomes '⧵' (U+29F5).
    """
    return f"{kind} {name.replace(':', '∶').replace(chr(92), '⧵')}"


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(text, _WRAP)


def _describe(value: object) -> str | None:
    describe = getattr(value, "describe", None)
    return describe() if callable(describe) else None


def _view_lines(view: object) -> list[str]:
    """'view of 2×3×8' and the kinds of its steps, repeats counted: 'pad×2 → window×2'."""
    kinds = [_describe(step) or type(step).__name__ for step in getattr(view, "steps", ())]
    kinds = [re.sub(r"\(.*", "", kind) for kind in kinds]
    runs = [f"{kind}×{n}" if n > 1 else kind
            for kind, n in ((k, len(list(group))) for k, group in groupby(kinds))]
    base = "×".join(map(str, getattr(view, "base_shape", ())))
    return [f"view of {base}", *_wrapped(" → ".join(runs))]


def _tensor_node(tensor: Tensor, shape: tuple[int, ...]) -> Node:
    id = node_id("tensor", tensor.name)
    if tensor.role == "pattern":
        dim = re.search(r"(\d+)'*$", tensor.name)
        head = f"{tensor.name} · dim {dim.group(1)}" if dim else tensor.name
        detail = _describe(tensor.value)
        return Node(id, (head, *(_wrapped(detail) if detail else [])), style=_PATTERN_STYLE)
    if tensor.is_constant:
        detail = _describe(tensor.value) or "×".join(map(str, shape)) or "scalar"
        return Node(id, (tensor.name, "constant", *_wrapped(detail)), style=_CONSTANT_STYLE)
    view = _view_lines(tensor.view) if tensor.view is not None else []
    colour = _ROLE_COLOURS.get(tensor.role, _OTHER_DATA)
    return Node(id, (tensor.name, tensor.role, *view),
                style=(("shape", "ellipse"), ("style", "filled"), ("fillcolor", colour)))


def _leg(net: Network, index: str) -> tuple[list[Node], list[Edge]]:
    """Nodes and edges that draw one index."""
    ends = [node_id("tensor", t.name) for t in net.carriers(index)]
    is_open = index in net.output
    label = f"{index}={net.size(index)}"
    nodes: list[Node] = []
    edges: list[Edge] = []
    if len(ends) + is_open >= 3:
        junction = node_id("junction", index)
        nodes.append(Node(junction, xlabel="" if is_open else label, style=_JUNCTION_STYLE))
        edges += [Edge(end, junction) for end in ends]
        if not is_open:  # the labelled junction is the whole leg
            return nodes, edges
        ends = [junction]
    if len(ends) == 2:
        return nodes, edges + [Edge(ends[0], ends[1], label)]
    if is_open:
        end = Node(node_id("open", index), style=_OPEN_STYLE)
    else:
        end = Node(node_id("summed", index), ("Σ",), style=_SUMMED_STYLE)
    return nodes + [end], edges + [Edge(ends[0], end.id, label)]


def draw(net: Network) -> Drawing:
    """The diagram of `net` (deterministic: the same network always gives the same drawing)."""
    if not isinstance(net, Network):
        raise argument_error("draw", "net", type(net).__name__, "a tnconv.Network")
    name = net.name or "network"
    caption = f"{name}: output ({', '.join(net.output)})"
    if net.scale != 1:
        caption += f"  × {net.scale:.6g}"
    nodes = [_tensor_node(t, net.shape_of(t)) for t in net.tensors]
    edges: list[Edge] = []
    for index in dict.fromkeys(i for t in net.tensors for i in t.indices):  # legs' order
        leg_nodes, leg_edges = _leg(net, index)
        nodes += leg_nodes
        edges += leg_edges
    open_ends = tuple(node_id("open", i) for i in net.output)
    return Drawing(name, caption, tuple(nodes), tuple(edges), open_ends)
