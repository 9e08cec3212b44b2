"""The spec, IR, operations, rewrite and lower (schedule) stages import no torch, and a
convolution of many dimensions compiles with bounded path search."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import torch

import tnconv
from tests.helpers import assert_close, rand

_BLOCK_TORCH = """
import importlib.abc, sys
class _NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, _NoTorch())
"""


def test_the_pure_stages_import_and_schedule_without_torch():
    script = _BLOCK_TORCH + textwrap.dedent("""
        import tnconv.spec, tnconv.ir, tnconv.ops, tnconv.rewrite, tnconv.lower
        import tnconv.lower.schedule, tnconv.export
        from tnconv.lower import build_schedule, lower
        from tnconv.ops import OPERATIONS
        from tnconv.rewrite import best_rewrite
        spec = tnconv.spec.ConvSpec(4, 6, 3, input_size=(8, 9), padding=1, groups=2)
        for name, op in sorted(OPERATIONS.items()):
            options = dict(op.defaults)
            net = best_rewrite(op.build(spec, 2, **options)).network
            program = lower(net, op.arguments, op.result_shape(spec, 2, **options))
            assert build_schedule(program).steps, name
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        print("ok", len(OPERATIONS))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok")


def test_the_blocker_blocks_torch():
    """The probe above can fail: importing torch under it raises."""
    done = subprocess.run([sys.executable, "-c", _BLOCK_TORCH + "import torch"],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "torch is blocked" in done.stderr


def test_a_17_dimensional_convolution_compiles_and_matches_a_2d_one():
    """Kernel 2 in two dimensions, 1 in fifteen: 19 operands, which exhaustive path search
    cannot plan in bounded time; the value equals the 2d convolution over the first two
    dimensions with the other fifteen folded into the batch."""
    n = 17
    kernel, size = (2, 2) + (1,) * (n - 2), (3, 3) + (2,) * (n - 2)
    x, w = rand(2, 2, *size), rand(3, 2, *kernel)
    y = tnconv.conv(x, w, padding=((1, 0), (0, 1)) + ((0, 0),) * (n - 2), strategy="tn")
    rest = 2 ** (n - 2)
    flat = x.reshape(2, 2, 3, 3, rest).permute(0, 4, 1, 2, 3).reshape(2 * rest, 2, 3, 3)
    expected = torch.nn.functional.conv2d(torch.nn.functional.pad(flat, (0, 1, 1, 0)),
                                          w.reshape(3, 2, 2, 2))
    expected = expected.reshape(2, rest, 3, 3, 3).permute(0, 2, 3, 4, 1)
    assert_close(y.reshape(2, 3, 3, 3, rest), expected)


def _module_imports() -> "networkx.DiGraph":
    """tnconv's modules and the tnconv modules each imports at module level."""
    import ast
    import pathlib

    import networkx

    root = pathlib.Path(tnconv.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = networkx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        for node in ast.parse(path.read_text()).body:
            targets = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tnconv"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names
                                           if f"{node.module}.{a.name}" in modules]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("tnconv")]
            graph.add_edges_from((name, t) for t in targets if t != name)
    return graph


def test_module_imports_have_no_cycles():
    import networkx

    graph = _module_imports()
    assert graph.number_of_edges() > 50  # the probe sees the imports
    assert [c for c in networkx.strongly_connected_components(graph) if len(c) > 1] == []
