"""The documentation in docs/: the site builds with `mkdocs build --strict`, every example of the
user guide runs, the API reference lists every public name, the worked example trains (a
shortened run) and its KFAC step is the Kronecker-factored solve, and the performance plot
reads the committed benchmark tables."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import tnconv
import tnconv.distributed
import tnconv.nn
import tnconv.nn.functional
from tnconv import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: The user guide: every page but the generated API reference.
PAGES = sorted(p for p in DOCS.rglob("*.md") if p.relative_to(DOCS).parts[0] != "reference")
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", flags=re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    language: str
    line: int
    code: str


def code_blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with the line each starts on."""
    text = page.read_text(encoding="utf-8")
    return [Block(m.group(1), text.count("\n", 0, m.start()) + 1, m.group(2))
            for m in FENCE.finditer(text)]


def _page_id(page: Path) -> str:
    return str(page.relative_to(DOCS))


def test_the_guide_has_examples():
    """The parser finds the examples (so the tests below cannot pass on nothing)."""
    languages = [b.language for page in PAGES for b in code_blocks(page)]
    assert languages.count("python") >= 30 and "bash" in languages
    assert set(languages) <= {"python", "bash"}, "a block the tests would not run"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_python_block_of_the_page_runs(page, monkeypatch):
    """The page's Python blocks run in order in one namespace (later blocks use earlier
    names), from the repository root; each failure names the page and line."""
    monkeypatch.chdir(ROOT)
    blocks = [block for block in code_blocks(page) if block.language == "python"]
    _skip_without_graphviz(" ".join(block.code for block in blocks))
    namespace: dict = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    for block in blocks:
        exec(compile(block.code, f"{page}:{block.line}", "exec"), namespace)


def _skip_without_graphviz(code: str) -> None:
    """An example that draws an SVG needs Graphviz's `dot` program, as the render tests do
    (`.ci/run` installs it)."""
    if ".svg" in code and shutil.which("dot") is None:
        pytest.skip("Graphviz's dot program is not installed (apt-get install graphviz)")


def _shell_commands() -> list[tuple[str, str]]:
    commands = []
    for page in PAGES:
        for block in code_blocks(page):
            if block.language == "bash":
                for line in block.code.splitlines():
                    command = line.split("  #")[0].strip()
                    if command:
                        commands.append((f"{_page_id(page)}:{block.line}", command))
    return commands


@pytest.mark.parametrize("where, command", _shell_commands(),
                         ids=[f"{w} {c[:40]}" for w, c in _shell_commands()])
def test_every_shell_command_of_the_guide(where, command, tmp_path, monkeypatch):
    """`tnconv ...` commands run (in a scratch folder); a script or module a command names
    exists; an extra it installs is declared; anything else is an unknown command."""
    words = shlex.split(command)
    monkeypatch.chdir(tmp_path)
    if words[0] == "tnconv":
        _skip_without_graphviz(command)
        assert cli.main(words[1:]) == 0, f"{where}: {command}"
    elif words[:2] == ["python", "-m"]:
        module = words[2]
        sys.path.insert(0, str(ROOT))
        try:
            assert importlib.util.find_spec(module) is not None, f"{where}: no module {module}"
        finally:
            sys.path.remove(str(ROOT))
    elif words[0] == "python":
        assert (ROOT / words[1]).is_file(), f"{where}: no file {words[1]}"
    elif command.startswith("pip install -e"):
        extras = re.findall(r"\[([\w,]+)\]", words[-1])
        pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
        section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
        declared = re.findall(r"^([\w-]+) = \[", section, flags=re.MULTILINE)
        assert all(e in declared for group in extras for e in group.split(",")), command
    else:
        pytest.fail(f"{where}: a command the documentation tests do not know: {command}")


# ------------------------------------------------------------------------------ the site
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site as the README's command builds it (`mkdocs build --strict`), elsewhere."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                             "--site-dir", str(out)], cwd=ROOT, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_the_site_builds_with_the_gallery_the_plots_and_the_tables(site):
    assert (site / "index.html").is_file()
    for svg in (ROOT / "diagrams").glob("*.svg"):
        assert (site / "diagrams" / svg.name).read_bytes() == svg.read_bytes()
    assert (site / "images" / "benchmarks.png").stat().st_size > 10_000
    assert (site / "images" / "kfac_digits.png").stat().st_size > 10_000
    performance = (site / "performance" / "index.html").read_text(encoding="utf-8")
    assert "Every layer and operation" in performance and "KFAC-reduce against its floor" \
        in performance
    assert "include benchmarks" not in performance  # every include marker was replaced


def _public_names() -> set[str]:
    names = {f"tnconv.{name}" for name in tnconv.__all__}
    names |= {f"tnconv.nn.{name}" for name in tnconv.nn.__all__}
    names |= {f"tnconv.nn.functional.{name}" for name in tnconv.nn.functional.__all__}
    names |= {f"tnconv.distributed.{name}" for name in tnconv.distributed.__all__}
    return names


def test_the_api_reference_documents_every_public_name(site):
    """Each name of tnconv.__all__, tnconv.nn, tnconv.nn.functional and tnconv.distributed
    has its entry (the anchor mkdocstrings gives an object is its public path)."""
    anchors = set()
    for page in (site / "reference").rglob("*.html"):
        anchors |= set(re.findall(r'id="([^"]+)"', page.read_text(encoding="utf-8")))
    missing = sorted(_public_names() - anchors)
    assert not missing, f"not in the API reference: {missing}"


# -------------------------------------------------------------------- the worked example
def _example():
    """docs/examples/kfac_digits.py as a module (registered, as its dataclasses need)."""
    if "kfac_digits" not in sys.modules:
        spec = importlib.util.spec_from_file_location("kfac_digits", DOCS / "examples" /
                                                      "kfac_digits.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["kfac_digits"] = module
        spec.loader.exec_module(module)
    return sys.modules["kfac_digits"]


def test_the_worked_example_trains_every_optimizer(tmp_path):
    """A shortened run: every optimizer lowers the training loss, the plot is written."""
    example = _example()
    out = tmp_path / "kfac.png"
    threads = torch.get_num_threads()
    try:
        histories = example.main(["--steps", "20", "--eval-every", "10", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    assert [h.name for h in histories] == ["SGD", "Adam", "KFAC"]
    for h in histories:
        assert h.steps == [0, 10, 20]
        assert h.train_loss[-1] < 0.9 * h.train_loss[0], h
    assert out.stat().st_size > 10_000


def test_the_worked_example_kfac_step_is_the_kronecker_solve():
    """The example's factors against explicit references (unfolded patches, per-sample
    gradients) and its update against the solve with the explicit Kronecker product."""
    example = _example()
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    x = torch.rand(5, 2, 6, 6, dtype=torch.float64)
    target = torch.rand(5, 3, 3, 3, dtype=torch.float64)
    y = conv(x)
    y.retain_grad()
    F.mse_loss(y, target, reduction="none").sum((1, 2, 3)).mean().backward()

    patches = F.unfold(x, 3, stride=2, padding=1).mean(2)                      # [N, D]
    a = torch.cat([patches, torch.ones(5, 1, dtype=torch.float64)], 1)
    assert torch.allclose(example.input_factor(conv, x), a.T @ a / 5)
    per_sample = torch.stack([2 * (conv(x[n:n + 1]) - target[n:n + 1])[0].sum((1, 2))
                              for n in range(5)])                              # [N, C_out]
    B = example.output_factor(y.grad)
    assert torch.allclose(B, per_sample.T @ per_sample / 5)

    A = example.input_factor(conv, x)
    A_inv, B_inv = example.damped_inverses(A, B, damping=1e-2)
    G = example.with_bias_column(conv.weight.grad, conv.bias.grad)
    update = example.preconditioned(G, A_inv, B_inv)
    kron = torch.kron(torch.linalg.inv(A_inv), torch.linalg.inv(B_inv))       # damped A ⊗ B
    expected = torch.linalg.solve(kron, G.T.reshape(-1)).reshape(G.shape[1], -1).T
    assert torch.allclose(update, expected)


# ------------------------------------------------------------------- performance, README
def test_the_performance_plot_reads_every_committed_cell():
    """What the plot shows (the site test checks that it is drawn): every timed cell of the
    committed table, with its ratios."""
    sys.path.insert(0, str(ROOT))
    try:
        from benchmarks.replot import read_cells
    finally:
        sys.path.remove(str(ROOT))
    text = (ROOT / "benchmarks" / "results" / "results.md").read_text(encoding="utf-8")
    section = text.split("## Every layer and operation", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ")]
    timed = [r for r in rows[1:] if re.fullmatch(r"[\d.]+", r[2])]
    cells = read_cells(text)
    assert len(cells) == len(timed) > 50
    first, row = cells[0], timed[0]
    assert (first.layer, first.op) == (row[0], row[1])
    assert first.ratio("auto") == pytest.approx(float(row[3]))
    assert first.ratio("tn") == pytest.approx(float(row[4]))


def test_the_readme_points_to_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "mkdocs build --strict" in readme and "(docs/" in readme
    assert "(docs/images/kfac_digits.png)" in readme
    assert (ROOT / "docs" / "images" / "kfac_digits.png").is_file()
    assert "site/" in (ROOT / ".gitignore").read_text().splitlines()
