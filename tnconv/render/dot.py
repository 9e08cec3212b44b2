"""Drawing networks: `Network` -> Graphviz DOT source -> SVG / PNG.

The style follows the tensor-network literature: data tensors (input, weight,
cotangents, …) are round nodes coloured by role; index patterns Π are amber
boxes labelled with their spatial dimension and hyper-parameters; other
constants are grey dashed boxes; an index on three or more tensors (or two and
the output) meets at a small junction dot; open legs are dangling edges to
the right; every edge carries its index name and size. The DOT source is a
pure function of the network, so the same network always gives the same file.
Rendering runs Graphviz's ``dot`` through the `graphviz` package, imported
only when a picture is drawn.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> dot = to_dot(forward_network(ConvSpec(2, 4, kernel_size=3, input_size=(5,), groups=2), 1))
>>> dot.splitlines()[0]
'graph "forward" {'
>>> '"T:W" -- "J:g"' in dot, '"J:g" -- "O:g" [label="g=2"]' in dot, '"T:Π1" -- "O:o1"' in dot
(True, True, True)
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from tnconv.errors import TNConvError, argument_error, path_argument
from tnconv.ir.network import Network, Tensor

__all__ = ["to_dot", "render", "stage_network", "STAGES", "FORMATS", "INSTALL_HINT"]

#: Network stages a compiled operation can draw.
STAGES = ("input", "rewritten")
#: File suffixes `render` writes (``.dot`` / ``.gv`` need no Graphviz program).
FORMATS = (".svg", ".png", ".dot", ".gv")
INSTALL_HINT = ("install Graphviz: 'apt-get install graphviz' (Debian/Ubuntu), "
                "'brew install graphviz' (macOS) or 'conda install -c conda-forge graphviz'; "
                "to_dot() works without it")

_ROLE_COLOURS = {"input": "#cfe2ff", "weight": "#c8ecc8", "grad_output": "#ffd0d0",
                 "input_tangent": "#ffe0b3", "weight_tangent": "#e0f5b3"}
_OTHER_DATA = "#e6dcf5"
_HEADER = [
    'graph [rankdir=LR, bgcolor="white", fontname="Helvetica", fontsize=12, labelloc=b, '
    'nodesep=0.35, ranksep=0.6];',
    'node [fontname="Helvetica", fontsize=11, penwidth=1.2];',
    'edge [fontname="Helvetica", fontsize=9, color="#555555", fontcolor="#333333"];',
]


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _attributes(**attributes: str) -> str:
    return ", ".join(f"{key}={_quote(value)}" for key, value in attributes.items())


def _pattern_label(tensor: Tensor) -> str:
    dim = re.search(r"(\d+)'*$", tensor.name)
    head = f"{tensor.name} · dim {dim.group(1)}" if dim else tensor.name
    describe = getattr(tensor.value, "describe", None)
    lines = textwrap.wrap(describe(), 22) if callable(describe) else []
    return "\n".join([head, *lines])


def _tensor_node(tensor: Tensor, shape: tuple[int, ...]) -> str:
    if tensor.role == "pattern":
        style = _attributes(label=_pattern_label(tensor), shape="box", style="filled",
                            fillcolor="#ffe9a8", color="#b8860b")
    elif tensor.is_constant:
        describe = getattr(tensor.value, "describe", None)
        detail = describe() if callable(describe) else "×".join(map(str, shape)) or "scalar"
        label = "\n".join([tensor.name, "constant", *textwrap.wrap(detail, 22)])
        style = _attributes(label=label, shape="box", style="filled,dashed",
                            fillcolor="#eeeeee", color="#777777")
    else:
        style = _attributes(label=f"{tensor.name}\n{tensor.role}", shape="ellipse",
                            style="filled", fillcolor=_ROLE_COLOURS.get(tensor.role, _OTHER_DATA))
    return f"  {_quote('T:' + tensor.name)} [{style}];"


def _leg_lines(net: Network, index: str, size: int) -> list[str]:
    """Nodes and edges that draw one index."""
    carriers = [_quote("T:" + t.name) for t in net.tensors if index in t.indices]
    is_open = index in net.output
    label = f"{index}={size}"
    end = _quote(("O:" if is_open else "S:") + index)
    if len(carriers) + is_open >= 3:
        junction = _quote("J:" + index)
        attrs = dict(shape="point", width="0.09", color="#333333")
        lines = [f"  {junction} [{_attributes(**attrs, **({} if is_open else dict(xlabel=label)))}];"]
        lines += [f"  {c} -- {junction};" for c in carriers]
        carriers = [junction]
    else:
        lines = []
    if len(carriers) == 2:
        return lines + [f"  {carriers[0]} -- {carriers[1]} [{_attributes(label=label)}];"]
    if is_open:
        lines.append(f"  {end} [shape=none, label=\"\", width=0.05, height=0.05];")
    else:
        lines.append(f"  {end} [shape=circle, label=\"Σ\", fontsize=8, width=0.22, "
                     "fixedsize=true, color=\"#777777\"];")
    return lines + [f"  {carriers[0]} -- {end} [{_attributes(label=label)}];"]


def to_dot(net: Network) -> str:
    """Graphviz DOT source of `net` (deterministic; needs no Graphviz program)."""
    title = net.name or "network"
    caption = f"{title}: output ({', '.join(net.output)})"
    if net.scale != 1:
        caption += f"  × {net.scale:.6g}"
    lines = [f"graph {_quote(title)} {{", *("  " + h for h in _HEADER),
             f"  label={_quote(caption)};"]
    lines += [_tensor_node(t, net.shape_of(t)) for t in net.tensors]
    for index in dict.fromkeys(i for t in net.tensors for i in t.indices):  # not sizes' order
        lines += _leg_lines(net, index, net.size(index))
    if net.output:
        ends = " ".join(_quote("O:" + i) + ";" for i in net.output)
        lines.append(f"  {{ rank=max; {ends} }}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _run_dot(source: str, file_format: str) -> bytes:
    """Run Graphviz's ``dot``; a missing package or program becomes a `TNConvError`."""
    try:
        import graphviz
    except ImportError:
        raise TNConvError("render: the Python package 'graphviz' is not importable "
                          f"(pip install graphviz), and {INSTALL_HINT}") from None
    try:
        data = graphviz.Source(source).pipe(format=file_format)
    except graphviz.ExecutableNotFound:
        raise TNConvError("render: Graphviz's 'dot' program was not found on PATH; "
                          f"{INSTALL_HINT}") from None
    except graphviz.CalledProcessError as err:
        raise TNConvError(f"render: Graphviz's 'dot' failed: {err.stderr!r:.300}") from None
    if file_format == "svg":  # the only volatile part: the Graphviz version comment
        data = re.sub(rb"<!-- Generated by graphviz version [^>]*-->\n", b"", data)
    return data


def render(net: Network, path: str | Path) -> Path:
    """Draw `net` to `path`: SVG or PNG through Graphviz, or the DOT source (.dot/.gv)."""
    if not isinstance(net, Network):
        raise argument_error("render", "net", type(net).__name__, "a tnconv.Network")
    path = path_argument("render", path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise argument_error("render", "path", str(path),
                             "a file name ending in " + ", ".join(FORMATS))
    source = to_dot(net)
    data = source.encode("utf-8") if suffix in (".dot", ".gv") else _run_dot(source, suffix[1:])
    try:
        path.write_bytes(data)
    except OSError as err:
        raise TNConvError(f"render: cannot write {str(path)!r}: {err}") from None
    return path


def stage_network(compiled: Any, stage: str) -> Network:
    """The network of a compiled operation at `stage`: "input" (as built) or "rewritten"."""
    if stage == "input":
        return compiled.input_network()
    if stage == "rewritten":
        return compiled.network()
    raise argument_error(f"render ({compiled.operation.name})", "stage", stage,
                         ", ".join(repr(s) for s in STAGES))
