"""The diagram gallery: one SVG per registered operation, a few more examples, and a README.

`write_gallery(directory)` (the command ``tnconv gallery diagrams/``) draws every
operation in `tnconv.ops.OPERATIONS` on a representative 2d convolution, then a
1d, a 3d and a transposed example and a before/after pair for the rewrites,
and writes ``README.md`` showing them all. `gallery_networks()` and
`gallery_readme()` give what it draws and writes without Graphviz, so the test
suite checks the committed gallery against the code whatever Graphviz version
drew it.

>>> [d.file for d in gallery_entries()][:1]
['forward.svg']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tnconv.errors import TNConvError
from tnconv.ir.network import Network
from tnconv.render.dot import INSTALL_HINT, import_graphviz, render, stage_network
from tnconv.spec.conv_spec import ConvSpec

__all__ = ["Diagram", "gallery_entries", "diagram_network", "gallery_networks", "gallery_readme",
           "write_gallery", "SPEC_2D", "BATCH"]

#: The representative convolution of the per-operation diagrams.
SPEC_2D = ConvSpec(in_channels=4, out_channels=8, kernel_size=3, input_size=(8, 8), stride=2,
                   padding=1, groups=2)
BATCH = 2
#: A patch-embedding convolution (kernel = stride, no padding): the rewrites simplify it.
_PATCHES = ConvSpec(in_channels=3, out_channels=8, kernel_size=4, stride=4, input_size=(16, 16))


@dataclass(frozen=True)
class Diagram:
    """One picture of the gallery: which operation, on which spec, at which stage."""

    file: str
    operation: str
    spec: ConvSpec
    stage: str
    title: str
    section: str
    caption: str


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name) + ".svg"


def gallery_entries() -> tuple[Diagram, ...]:
    """Every diagram of the gallery, in README order."""
    from tnconv.ops import OPERATIONS

    ops = ("Operations on a 2d convolution (C_in=4, C_out=8, K=3, S=2, P=1, groups=2, "
           f"8×8 input, batch {BATCH}), as built")
    entries = [Diagram(_file_name(name), name, SPEC_2D, "input", name, ops, "")
               for name in OPERATIONS]
    more = f"Other dimensions and the transposed convolution (forward, batch {BATCH}, as built)"
    entries += [
        Diagram("forward-1d.svg", "forward", ConvSpec(1, 4, kernel_size=5, stride=2, padding=2,
                                                      input_size=(32,)), "input", "1d", more,
                "C_in=1, C_out=4, K=5, S=2, P=2, 32 samples"),
        Diagram("forward-3d.svg", "forward", ConvSpec(3, 4, kernel_size=3, padding=1,
                                                      input_size=(6, 8, 8)), "input", "3d", more,
                "C_in=3, C_out=4, K=3, P=1, 6×8×8 input"),
        Diagram("forward-transposed.svg", "forward", SPEC_2D.replace(transposed=True), "input",
                "transposed 2d", more, "The 2d convolution above, transposed=True"),
    ]
    pair = (f"Before and after the rewrites (forward, C_in=3, C_out=8, K=S=4, no padding, "
            f"16×16 input, batch {BATCH})")
    entries += [
        Diagram("rewrite-before.svg", "forward", _PATCHES, "input", "before", pair,
                "Stage `input`: as built"),
        Diagram("rewrite-after.svg", "forward", _PATCHES, "rewritten", "after", pair,
                "Stage `rewritten`: after the rewrites"),
    ]
    return tuple(entries)


def _graphviz_version() -> str:
    graphviz = import_graphviz("tnconv gallery")
    try:
        return ".".join(map(str, graphviz.version()))
    except graphviz.ExecutableNotFound:
        raise TNConvError(f"tnconv gallery: Graphviz's 'dot' program was not found on PATH; "
                          f"{INSTALL_HINT}") from None


def diagram_network(diagram: Diagram) -> Network:
    """The network `diagram` draws (a `TNConvError` if its operation rejects the spec)."""
    from tnconv.compiler import compile

    compiled = compile(diagram.operation, diagram.spec, strategy="tn", batch_size=BATCH)
    return stage_network(compiled, diagram.stage)


def gallery_networks() -> tuple[tuple[Diagram, Network | TNConvError], ...]:
    """Every diagram with its network, or the error of an operation that rejects its spec."""
    drawn: list[tuple[Diagram, Network | TNConvError]] = []
    for diagram in gallery_entries():
        try:
            drawn.append((diagram, diagram_network(diagram)))
        except TNConvError as err:
            drawn.append((diagram, err))
    return tuple(drawn)


def _entry_text(diagram: Diagram, network: Network | TNConvError) -> str:
    """The README entry of one diagram (a note where its operation rejects the spec)."""
    from tnconv.ops import OPERATIONS

    heading = f"### {diagram.title}\n\n"
    if isinstance(network, TNConvError):
        return heading + f"Not drawn for this spec: {network}\n"
    caption = f" {diagram.caption}." if diagram.caption else ""
    description = OPERATIONS[diagram.operation].description
    return (heading + f"`{diagram.operation}`: {description}.{caption}\n\n"
            f"![{diagram.title}]({diagram.file})\n")


_INTRO = """\
# Diagrams

Tensor networks of tnconv's operations, written by `tnconv gallery diagrams/`
(Graphviz {version}). Do not edit by hand: a test checks that the nodes,
labels and edges of these files are what the code draws today.

How to read them: round nodes are data tensors (input X, weight W, cotangents
and tangents), coloured by role; a data tensor read through a view (after the
rewrites) notes the view's base shape and its steps. Amber boxes are index
patterns Π, labelled with their spatial dimension and hyper-parameters
(K kernel, S stride, D dilation, P padding, I input and O output size, padding
mode); grey dashed boxes are other constants. An edge is an index, labelled
with its name and size; a black dot joins an index shared by three or more
tensors (or by two and the output); edges that end on the right are the open
legs (the output, in the order the caption lists); a circled Σ is an index
summed on one tensor alone. Stage `input` is the network as built,
`rewritten` after the rewrites.
"""


def gallery_readme(drawn: tuple[tuple[Diagram, Network | TNConvError], ...], version: str) -> str:
    """The gallery's README.md for `drawn` (`gallery_networks()`), naming Graphviz `version`."""
    parts, section = [_INTRO.format(version=version)], None
    for diagram, network in drawn:
        if diagram.section != section:
            section = diagram.section
            parts.append(f"## {section}\n")
        parts.append(_entry_text(diagram, network))
    return "\n".join(parts)


def write_gallery(directory: str | Path) -> list[Path]:
    """(Re)write the gallery into `directory`; returns the files written."""
    directory = Path(directory)
    version = _graphviz_version()
    directory.mkdir(parents=True, exist_ok=True)
    drawn = gallery_networks()
    written = [render(network, directory / diagram.file) for diagram, network in drawn
               if isinstance(network, Network)]
    readme = directory / "README.md"
    readme.write_text(gallery_readme(drawn, version), encoding="utf-8")
    return written + [readme]
