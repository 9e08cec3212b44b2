"""The committed diagram gallery (diagrams/) is what `tnconv gallery` produces."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tnconv.cli import main
from tnconv.render.gallery import gallery_entries
from tnconv.ops import OPERATIONS

COMMITTED = Path(__file__).resolve().parent.parent / "diagrams"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's 'dot' program is not installed "
                                      "(apt-get install graphviz); gallery not checked")


def _version(readme: str) -> str:
    found = re.search(r"\(Graphviz ([^)]*)\)", readme)
    return found.group(1) if found else "unknown"


def test_entries_cover_every_operation_and_the_examples():
    files = [d.file for d in gallery_entries()]
    assert len(files) == len(set(files))
    assert {f"{name}.svg" for name in OPERATIONS} <= set(files)
    assert {"forward-1d.svg", "forward-3d.svg", "rewrite-before.svg",
            "rewrite-after.svg"} <= set(files)
    stages = {d.file: d.stage for d in gallery_entries()}
    assert (stages["rewrite-before.svg"], stages["rewrite-after.svg"]) == ("input", "rewritten")


@needs_dot
def test_committed_gallery_is_up_to_date(tmp_path, capsys):
    assert main(["gallery", str(tmp_path)]) == 0
    written = capsys.readouterr().out.splitlines()
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert len(written) == len(fresh) and "README.md" in fresh
    readme = (tmp_path / "README.md").read_text(encoding="utf-8")
    for name in fresh:
        if name != "README.md":
            assert f"]({name})" in readme
    assert COMMITTED.is_dir(), "diagrams/ is missing: run `tnconv gallery diagrams/`"
    committed = (COMMITTED / "README.md").read_text(encoding="utf-8")
    if _version(committed) != _version(readme):
        pytest.skip(f"diagrams/ was rendered with Graphviz {_version(committed)}, this machine "
                    f"has {_version(readme)}: layouts differ between versions")
    assert sorted(p.name for p in COMMITTED.iterdir()) == fresh, (
        "diagrams/ is out of date: run `tnconv gallery diagrams/`")
    for name in fresh:
        assert (COMMITTED / name).read_bytes() == (tmp_path / name).read_bytes(), (
            f"diagrams/{name} is out of date: run `tnconv gallery diagrams/`")
