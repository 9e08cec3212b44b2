"""Diagrams: DOT structure (one node per tensor, open legs, junctions), SVG/PNG, missing Graphviz."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import sys

import pytest

import tnconv
from tnconv.errors import TNConvError
from tnconv.ir.network import Network, Tensor
from tnconv.ops import OPERATIONS
from tnconv.render.dot import render, to_dot

SPEC = tnconv.ConvSpec(4, 6, kernel_size=3, input_size=(7, 6), stride=(2, 1), padding=1,
                       groups=2)
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's 'dot' program is not installed "
                                      "(apt-get install graphviz); SVG rendering not tested")


def _nodes(dot: str, prefix: str) -> list[str]:
    """Names of declared nodes '"<prefix>:name" [...]'."""
    return re.findall(rf'^  "{prefix}:([^"]+)" \[', dot, flags=re.M)


def _edges(dot: str) -> list[tuple[str, str, str]]:
    """(from, to, label) of every edge."""
    found = re.findall(r'^  "([^"]+)" -- "([^"]+)"(?: \[label="([^"]*)"\])?;', dot, flags=re.M)
    return [(a, b, label) for a, b, label in found]


def _check_structure(net: Network, dot: str) -> None:
    assert _nodes(dot, "T") == [t.name for t in net.tensors]
    assert sorted(_nodes(dot, "O")) == sorted(net.output)
    assert sorted(_nodes(dot, "J")) == sorted(net.hyper_edges())
    edges = _edges(dot)
    for index in net.output:
        into = [e for e in edges if e[1] == f"O:{index}"]
        assert len(into) == 1 and into[0][2] == f"{index}={net.size(index)}"
    for index in net.hyper_edges():
        carriers = sorted(a for a, b, _ in edges if b == f"J:{index}")
        assert carriers == sorted(f"T:{t.name}" for t in net.tensors if index in t.indices)
    degree = net.index_degree()
    plain = [i for i, _ in net.sizes if degree[i] == 2 and i not in net.output]
    for index in plain:
        assert sum(label == f"{index}={net.size(index)}" for _, _, label in edges) == 1


@pytest.mark.parametrize("name", sorted(OPERATIONS))
@pytest.mark.parametrize("stage", ["input", "rewritten"])
def test_dot_of_every_operation(name, stage):
    compiled = tnconv.compile(name, SPEC, strategy="tn", batch_size=3)
    net = compiled.input_network() if stage == "input" else compiled.network()
    dot = compiled.to_dot(stage)
    _check_structure(net, dot)
    assert dot == compiled.to_dot(stage) == to_dot(net.replace())  # deterministic
    assert dot.startswith("graph ") and dot.rstrip().endswith("}")


def test_pattern_labels_carry_dimension_and_hyper_parameters():
    dot = tnconv.compile("forward", SPEC).to_dot("input")
    assert "Π1 · dim 1\\nK=3 S=2 D=1 P=(1,1)\\nI=7 O=4 zeros" in dot
    assert "Π2 · dim 2" in dot and 'fillcolor="#ffe9a8"' in dot


def test_constants_summed_legs_scale_and_quoting():
    net = Network(
        tensors=(Tensor('X "q"', ("n", "i"), "input"), Tensor("C", ("i", "s"), "constant", "c1"),
                 Tensor("W", ("n",), "weight")),
        sizes=(("n", 2), ("i", 3), ("s", 4)), output=("n",), scale=0.5, name="toy")
    dot = to_dot(net)
    assert '"T:X \\"q\\""' in dot and "× 0.5" in dot
    assert '"T:C" [label="C\\nconstant\\n3×4"' in dot and 'style="filled,dashed"' in dot
    assert '"T:C" -- "S:s" [label="s=4"]' in dot  # summed on one tensor alone
    assert _nodes(dot, "J") == ["n"]  # two tensors plus the output


def test_bad_stage_and_suffix(tmp_path):
    compiled = tnconv.compile("forward", SPEC)
    with pytest.raises(TNConvError, match="stage"):
        compiled.to_dot(stage="final")
    with pytest.raises(TNConvError, match=r"\.svg"):
        compiled.render(tmp_path / "x.jpg")


def test_dot_file_needs_no_graphviz(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "graphviz", None)
    compiled = tnconv.compile("forward", SPEC)
    path = compiled.render(tmp_path / "x.dot")
    assert path.read_text(encoding="utf-8") == compiled.to_dot()
    with pytest.raises(TNConvError, match="apt-get install graphviz") as info:
        compiled.render(tmp_path / "x.svg")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_dot_program(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no 'dot' there
    with pytest.raises(TNConvError, match="brew install graphviz") as info:
        tnconv.compile("forward", SPEC).render(tmp_path / "x.svg")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert not (tmp_path / "x.svg").exists()


def test_import_without_graphviz():
    code = ("import sys; sys.modules['graphviz'] = None; import tnconv, tnconv.render.dot, "
            "tnconv.render.gallery; spec = tnconv.ConvSpec(1, 1, kernel_size=2, input_size=(3,)); "
            "print(tnconv.compile('forward', spec).to_dot().splitlines()[0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == 'graph "forward" {'


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
    titles = [html.unescape(t) for t in re.findall(r"<title>([^<]*)</title>", text)]
    assert [t for t in titles if t.startswith("T:") and "--" not in t] == [f"T:{t.name}" for t in net.tensors]


@needs_dot
def test_png_for_real(tmp_path):
    path = render(tnconv.compile("forward", SPEC).network(), tmp_path / "a.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
