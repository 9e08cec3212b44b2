"""Diagrams: networks drawn with Graphviz (DOT source always; SVG/PNG with the `dot` program),
and the gallery of every operation's diagram.

>>> from tnconv.render import STAGES
>>> STAGES
('input', 'rewritten')
"""

from tnconv.render.dot import FORMATS, INSTALL_HINT, STAGES, render, stage_network, to_dot

__all__ = ["FORMATS", "INSTALL_HINT", "STAGES", "render", "stage_network", "to_dot"]
