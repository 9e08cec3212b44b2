"""The committed diagram gallery (diagrams/) shows what the code draws today.

Graphviz lays out the same diagram differently from one version to the next,
so the SVGs are compared by what they show (node ids and texts, edges and their
labels, captions), never byte for byte: a changed diagram fails whatever
Graphviz version drew the committed files.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.diagram_reading import drawing_summary, svg_summary
from tnconv.cli import main
from tnconv.errors import TNConvError
from tnconv.ir.network import Network
from tnconv.ops import OPERATIONS
from tnconv.render.drawing import draw
from tnconv.render.gallery import gallery_entries, gallery_networks, gallery_readme

COMMITTED = Path(__file__).resolve().parent.parent / "diagrams"
REGENERATE = "run `tnconv gallery diagrams/` and commit the result"
needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="Graphviz's 'dot' program is not installed (apt-get install graphviz), so the gallery "
           "cannot be redrawn here; CI installs it and never takes this skip")


@pytest.fixture(scope="module")
def drawn():
    return gallery_networks()


def _version(readme: str) -> str:
    found = re.search(r"\(Graphviz ([^)]*)\)", readme)
    assert found, "README.md does not name the Graphviz version that drew it"
    return found.group(1)


def test_entries_cover_every_operation_and_the_examples():
    files = [d.file for d in gallery_entries()]
    assert len(files) == len(set(files))
    assert {f"{name}.svg" for name in OPERATIONS} <= set(files)
    assert {"forward-1d.svg", "forward-3d.svg", "rewrite-before.svg",
            "rewrite-after.svg"} <= set(files)
    stages = {d.file: d.stage for d in gallery_entries()}
    assert (stages["rewrite-before.svg"], stages["rewrite-after.svg"]) == ("input", "rewritten")


def test_committed_files_are_the_gallery(drawn):
    assert COMMITTED.is_dir(), f"diagrams/ is missing: {REGENERATE}"
    expected = sorted([d.file for d, net in drawn if isinstance(net, Network)] + ["README.md"])
    assert sorted(p.name for p in COMMITTED.iterdir()) == expected, (
        f"diagrams/ holds other files than the gallery: {REGENERATE}")


def test_committed_readme_is_what_the_code_writes(drawn):
    committed = (COMMITTED / "README.md").read_text(encoding="utf-8")
    assert committed == gallery_readme(drawn, _version(committed)), (
        f"diagrams/README.md is out of date: {REGENERATE}")


@pytest.mark.parametrize("entry", gallery_entries(), ids=lambda d: d.file)
def test_committed_svg_shows_what_the_code_draws(entry, drawn):
    network = dict((d.file, net) for d, net in drawn)[entry.file]
    if isinstance(network, TNConvError):  # no file: the README says why (checked above)
        assert not (COMMITTED / entry.file).exists()
        return
    committed = svg_summary((COMMITTED / entry.file).read_bytes())
    expected = drawing_summary(draw(network))
    assert committed.caption == expected.caption, f"diagrams/{entry.file}: {REGENERATE}"
    assert committed.nodes == expected.nodes, f"diagrams/{entry.file}: nodes differ; {REGENERATE}"
    assert committed.edges == expected.edges, f"diagrams/{entry.file}: edges differ; {REGENERATE}"


@needs_dot
def test_gallery_command_redraws_the_committed_gallery(tmp_path, capsys):
    assert main(["gallery", str(tmp_path)]) == 0
    written = capsys.readouterr().out.splitlines()
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert written == [f"wrote {tmp_path / name}" for name in
                       [d.file for d in gallery_entries() if (tmp_path / d.file).exists()]
                       + ["README.md"]]
    assert fresh == sorted(p.name for p in COMMITTED.iterdir()), f"file lists differ: {REGENERATE}"
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    committed = (COMMITTED / "README.md").read_text(encoding="utf-8")
    assert readme.replace(f"(Graphviz {_version(readme)})", "") == committed.replace(
        f"(Graphviz {_version(committed)})", ""), f"README.md differs: {REGENERATE}"
    for name in fresh:
        if name != "README.md":
            assert f"]({name})" in readme
            assert svg_summary((tmp_path / name).read_bytes()) == svg_summary(
                (COMMITTED / name).read_bytes()), f"diagrams/{name} differs: {REGENERATE}"
