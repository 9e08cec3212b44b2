"""Read back what a diagram shows: node ids with their texts, edges with their labels, the caption.

The same summary comes from an SVG that Graphviz drew (`svg_summary`), from DOT
source (`dot_summary`) and from the code's `Drawing` (`drawing_summary`), so a
test compares them whatever Graphviz version laid the SVG out: layout
(coordinates, sizes) differs between versions, the nodes, labels and edges do not.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

from tnconv.render.drawing import Drawing

_SVG = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True)
class Summary:
    """Caption, sorted (node id, texts shown on it), sorted (tail, head, edge label)."""

    caption: str
    nodes: tuple[tuple[str, tuple[str, ...]], ...]
    edges: tuple[tuple[str, str, str], ...]


def drawing_summary(drawing: Drawing) -> Summary:
    """What the code's drawing should show once drawn."""
    nodes = [(n.id, n.label + ((n.xlabel,) if n.xlabel else ())) for n in drawing.nodes]
    edges = [(e.tail, e.head, e.label) for e in drawing.edges]
    return Summary(drawing.caption, tuple(sorted(nodes)), tuple(sorted(edges)))


def _texts(group: ElementTree.Element) -> tuple[str, ...]:
    """The texts of a group; Graphviz writes the second of two spaces as a no-break space."""
    return tuple((t.text or "").replace("\xa0", " ") for t in group.findall(f"{_SVG}text"))


def _split_edge(title: str, ids: set[str]) -> tuple[str, str]:
    for found in re.finditer("--", title):
        tail, head = title[:found.start()], title[found.end():]
        if tail in ids and head in ids:
            return tail, head
    raise AssertionError(f"edge {title!r} does not join two nodes of the SVG")


def svg_summary(svg: bytes) -> Summary:
    """What an SVG drawn by Graphviz from tnconv's DOT shows."""
    root = ElementTree.fromstring(svg)
    graph = root.find(f"{_SVG}g")
    assert graph is not None and graph.get("class") == "graph", "no Graphviz graph in the SVG"
    groups = {kind: [g for g in graph.findall(f"{_SVG}g") if g.get("class") == kind]
              for kind in ("node", "edge")}
    nodes = [(g.findtext(f"{_SVG}title"), _texts(g)) for g in groups["node"]]
    ids = {node_id for node_id, _ in nodes}
    edges = []
    for group in groups["edge"]:
        tail, head = _split_edge(group.findtext(f"{_SVG}title"), ids)
        edges.append((tail, head, " ".join(_texts(group))))
    return Summary(" ".join(_texts(graph)), tuple(sorted(nodes)), tuple(sorted(edges)))


_DOT_STRING = r'"((?:[^"\\]|\\.)*)"'
_DOT_LABEL = r'label=' + _DOT_STRING


def _unquote(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _dot_lines(label: str) -> tuple[str, ...]:
    """Lines of a DOT label: split at '\\n' escapes, other escapes undone."""
    lines = [""]
    for piece in re.finditer(r"\\(.)|[^\\]+", label):
        if piece[1] == "n":
            lines.append("")
        else:
            lines[-1] += piece[1] if piece[1] is not None else piece[0]
    return tuple(lines) if label else ()


def dot_summary(dot: str) -> Summary:
    """What DOT source written by `tnconv.render.to_dot` shows (one statement per line)."""
    caption = re.search(rf"^\t{_DOT_LABEL}$", dot, flags=re.M)
    nodes, edges = [], []
    for line in dot.splitlines():
        edge = re.match(rf'^\t{_DOT_STRING} -- {_DOT_STRING}(?: \[{_DOT_LABEL}\])?$', line)
        node = re.match(rf'^\t{_DOT_STRING} \[{_DOT_LABEL}(.*)\]$', line)
        if edge:
            edges.append((_unquote(edge[1]), _unquote(edge[2]), _unquote(edge[3] or "")))
        elif node:
            xlabel = re.search(rf"\bx{_DOT_LABEL}", node[3])
            texts = _dot_lines(node[2]) + (_dot_lines(xlabel[1]) if xlabel else ())
            nodes.append((_unquote(node[1]), texts))
    assert caption is not None, "no caption in the DOT source"
    return Summary(_unquote(caption[1]), tuple(sorted(nodes)), tuple(sorted(edges)))
