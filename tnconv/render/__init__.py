"""Diagrams: networks drawn with the `graphviz` package (DOT source always; SVG/PNG with the
`dot` program), and the gallery of every operation's diagram.

`draw(net)` is what a diagram shows, as plain data; `to_graph(net)` builds it as a
`graphviz.Graph`; `to_dot` and `render` write it out.

>>> from tnconv.render import STAGES
>>> STAGES
('input', 'rewritten')
"""

from tnconv.render.dot import FORMATS, INSTALL_HINT, STAGES, render, stage_network, to_dot, to_graph
from tnconv.render.drawing import Drawing, Edge, Node, draw

__all__ = ["FORMATS", "INSTALL_HINT", "STAGES", "render", "stage_network", "to_dot", "to_graph",
           "Drawing", "Edge", "Node", "draw"]
