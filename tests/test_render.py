"""Diagrams: what a drawing shows (one node per tensor, open legs, junctions, views), the DOT
source and SVG that show the same, PNG, and a missing Graphviz package or program."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

import tnconv
from tests.diagram_reading import dot_summary, drawing_summary, svg_summary
from tnconv.errors import TNConvError
from tnconv.ir.network import Network, Tensor
from tnconv.ops import OPERATIONS
from tnconv.render import draw, render, to_dot, to_graph
from tnconv.render.drawing import node_id

SPEC = tnconv.ConvSpec(4, 6, kernel_size=3, input_size=(7, 6), stride=(2, 1), padding=1,
                       groups=2)
#: A patch-embedding convolution: its rewritten network reads the input through a view.
PATCHES = tnconv.ConvSpec(3, 8, kernel_size=4, stride=4, input_size=(16, 16))
needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's 'dot' program is not installed (apt-get install graphviz), so no SVG or "
           "PNG can be drawn here; CI installs it and never takes this skip")


def _toy() -> Network:
    """Quotes, a backslash, a colon and '<…>' in names; a constant; summed and hyper legs."""
    return Network(
        tensors=(Tensor('X "q"', ("n", "i", "h"), "input"),
                 Tensor("C", ("i", "s"), "constant", "c1"),
                 Tensor("W", ("n", "h"), "weight"), Tensor("a:b\\", ("h",), "grad_output"),
                 Tensor("<V>", ("h",), "input_tangent")),
        sizes=(("n", 2), ("i", 3), ("s", 4), ("h", 5)), output=("n",), scale=0.5,
        name="toy").validate()


def _check_structure(net: Network) -> None:
    """The drawing of `net` has one node per tensor and draws every index as its kind asks."""
    drawing = draw(net)
    ids = [n.id for n in drawing.nodes]
    assert len(ids) == len(set(ids))
    assert [n.id for n in drawing.nodes if n.id.startswith("tensor ")] == [
        node_id("tensor", t.name) for t in net.tensors]
    assert drawing.open_ends == tuple(node_id("open", i) for i in net.output)
    assert {n.id for n in drawing.nodes if n.id.startswith("junction ")} == {
        node_id("junction", i) for i in net.hyper_edges()}
    labels = [e.label for e in drawing.edges]
    for index, size in net.sizes:
        carriers = {node_id("tensor", t.name) for t in net.carriers(index)}
        junction = node_id("junction", index)
        if index in net.hyper_edges():
            assert {e.tail for e in drawing.edges if e.head == junction} == carriers
        else:
            assert {end for e in drawing.edges if e.label == f"{index}={size}"
                    for end in (e.tail, e.head) if end.startswith("tensor ")} == carriers
        shown = labels.count(f"{index}={size}") + (drawing.node(junction).xlabel == f"{index}="
                                                   f"{size}" if junction in ids else 0)
        assert shown == 1, (index, shown)
        if index in net.output:
            assert [e.label for e in drawing.edges if e.head == node_id("open", index)] == [
                f"{index}={size}"]


@pytest.mark.parametrize("name", sorted(OPERATIONS))
@pytest.mark.parametrize("stage", ["input", "rewritten"])
def test_dot_of_every_operation(name, stage):
    compiled = tnconv.compile(name, SPEC, strategy="tn", batch_size=3)
    net = compiled.input_network() if stage == "input" else compiled.network()
    _check_structure(net)
    dot = compiled.to_dot(stage)
    assert dot_summary(dot) == drawing_summary(draw(net))
    assert dot == compiled.to_dot(stage) == to_dot(net.replace())  # deterministic
    assert dot.startswith(f"graph {net.name} {{") and dot.rstrip().endswith("}")


def test_graph_object_ranks_the_open_legs_last():
    net = tnconv.compile("forward", SPEC, batch_size=3).network()
    graph = to_graph(net)
    assert type(graph).__name__ == "Graph" and graph.name == "forward"
    ranked = graph.source.split("{\n\t\trank=max\n")[1].split("\t}")[0].splitlines()
    assert ranked == [f'\t\t"{node_id("open", i)}"' for i in net.output]


def test_pattern_labels_carry_dimension_and_hyper_parameters():
    net = tnconv.compile("forward", SPEC).input_network()
    assert draw(net).node("tensor Π1").label == ("Π1 · dim 1", "K=3 S=2 D=1 P=(1,1)",
                                                 "I=7 O=4 zeros")
    dot = to_dot(net)
    assert '"tensor Π1" [label="Π1 · dim 1\\nK=3 S=2 D=1 P=(1,1)\\nI=7 O=4 zeros"' in dot
    assert '"tensor Π2" [label="Π2 · dim 2' in dot and 'fillcolor="#ffe9a8"' in dot


def test_views_are_noted_on_the_tensor_they_read():
    compiled = tnconv.compile("forward", PATCHES, strategy="tn", batch_size=2)
    viewed = draw(compiled.network()).node("tensor X").label
    assert viewed == ("X", "input", "view of 2×1×3×16×16", "split×2 → reshape")
    assert draw(compiled.input_network()).node("tensor X").label == ("X", "input")


def test_constants_summed_legs_scale_and_quoting():
    net = _toy()
    _check_structure(net)
    drawing = draw(net)
    assert drawing.caption == "toy: output (n)  × 0.5"
    assert drawing.node("tensor C").label == ("C", "constant", "3×4")
    assert ("tensor C", "summed s", "s=4") in drawing_summary(drawing).edges
    assert drawing.node("summed s").label == ("Σ",)
    assert [n.id for n in drawing.nodes if n.id.startswith("junction")] == ["junction n",
                                                                            "junction h"]
    assert drawing.node("junction h").xlabel == "h=5"  # summed over four tensors: no Σ end
    assert drawing.node("tensor a∶b⧵").label == ("a:b\\", "grad_output")
    dot = to_dot(net)
    assert dot_summary(dot) == drawing_summary(drawing)
    assert '"tensor X \\"q\\""' in dot and 'style="filled,dashed"' in dot
    assert '"tensor <V>" [label="<V>\\ninput_tangent"' in dot


@pytest.mark.parametrize("function", [draw, to_dot, to_graph])
def test_bad_network_argument(function):
    with pytest.raises(TNConvError, match=rf"{function.__name__}: argument 'net' got 'str'"):
        function("net")


def test_bad_stage_and_suffix(tmp_path):
    compiled = tnconv.compile("forward", SPEC)
    with pytest.raises(TNConvError, match="stage"):
        compiled.to_dot(stage="final")
    with pytest.raises(TNConvError, match=r"\.svg"):
        compiled.render(tmp_path / "x.jpg")


def test_dot_source_needs_no_dot_program(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no 'dot' there
    compiled = tnconv.compile("forward", SPEC)
    path = compiled.render(tmp_path / "x.dot")
    assert path.read_text(encoding="utf-8") == compiled.to_dot()
    assert dot_summary(compiled.to_dot()) == drawing_summary(draw(compiled.network()))
    with pytest.raises(TNConvError, match="brew install graphviz") as info:
        compiled.render(tmp_path / "x.svg")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "'dot' program was not found" in str(info.value)
    assert not (tmp_path / "x.svg").exists()


def test_missing_graphviz_package_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    compiled = tnconv.compile("forward", SPEC)
    assert draw(compiled.network()).name == "forward"  # plain data: no package needed
    for call, operation in [(compiled.to_dot, "to_dot"),
                            (lambda: compiled.render(tmp_path / "x.dot"), "render"),
                            (lambda: compiled.render(tmp_path / "x.svg"), "render")]:
        with pytest.raises(TNConvError, match=rf"^{operation}: the Python package 'graphviz' "
                                              r"is not installed \(pip install graphviz\)") as info:
            call()
        assert info.value.__cause__ is None and info.value.__suppress_context__
    assert list(tmp_path.iterdir()) == []


def test_import_without_graphviz():
    code = ("import sys; sys.modules['graphviz'] = None; import tnconv, tnconv.render, "
            "tnconv.render.dot, tnconv.render.gallery; "
            "spec = tnconv.ConvSpec(1, 1, kernel_size=2, input_size=(3,)); "
            "compiled = tnconv.compile('forward', spec); "
            "print(tnconv.render.draw(compiled.input_network()).caption)\n"
            "try: compiled.to_dot()\nexcept tnconv.TNConvError as err: print(err)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "forward: output (n, g, c_out, o1)",
        "to_dot: the Python package 'graphviz' is not installed (pip install graphviz); "
        "tnconv needs it to draw diagrams"]


@needs_dot
@pytest.mark.parametrize("stage", ["input", "rewritten"])
def test_svg_for_real(tmp_path, stage):
    compiled = tnconv.compile("kfac_reduce", SPEC, batch_size=3)
    first = compiled.render(tmp_path / "a.svg", stage=stage).read_bytes()
    second = compiled.render(tmp_path / "b.SVG", stage=stage).read_bytes()
    assert first == second
    text = first.decode("utf-8")
    assert text.startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>")
    assert "graphviz version" not in text
    net = compiled.input_network() if stage == "input" else compiled.network()
    assert svg_summary(first) == drawing_summary(draw(net))


@needs_dot
def test_svg_of_awkward_names(tmp_path):
    path = render(_toy(), tmp_path / "toy.svg")
    assert svg_summary(path.read_bytes()) == drawing_summary(draw(_toy()))


@needs_dot
def test_png_for_real(tmp_path):
    path = render(tnconv.compile("forward", SPEC).network(), tmp_path / "a.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
