"""MkDocs hooks (mkdocs.yml `hooks:`): what the site takes from the rest of the repository.

- The diagram gallery, `diagrams/*.svg` (written by `tnconv gallery diagrams/`), is
  served as `diagrams/<name>.svg`: pages show the committed pictures, never copies.
- The performance plot, `images/benchmarks.png`, is drawn at build time from the
  committed `benchmarks/results/results.md` by `benchmarks.replot`.
- A line `<!-- include PATH -->` in a page is replaced by the file PATH (relative to
  the repository root), its headings moved `INCLUDE_LEVELS` levels down, so the
  committed benchmark tables appear as they are. A missing file fails the build.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
INCLUDE = re.compile(r"^<!-- include (\S+) -->$", flags=re.MULTILINE)
INCLUDE_LEVELS = 2
_PLOT_DIR = tempfile.TemporaryDirectory(prefix="tnconv-docs-")


def on_config(config):
    if str(ROOT) not in sys.path:  # `benchmarks` is a folder of the repository, not installed
        sys.path.insert(0, str(ROOT))
    return config


def on_files(files, config):
    for svg in sorted((ROOT / "diagrams").glob("*.svg")):
        files.append(File.generated(config, f"diagrams/{svg.name}", abs_src_path=str(svg)))
    from benchmarks.replot import plot_results

    plot = Path(_PLOT_DIR.name) / "benchmarks.png"
    if not plot_results(ROOT / "benchmarks" / "results" / "results.md", plot):
        raise PluginError("docs/hooks.py: no benchmark plot drawn (is matplotlib installed? "
                          "pip install -e '.[docs]')")
    files.append(File.generated(config, "images/benchmarks.png", abs_src_path=str(plot)))
    return files


def _demoted(text: str) -> str:
    """`text` with every Markdown heading `INCLUDE_LEVELS` levels lower (at most level 6)."""
    def demote(match: re.Match) -> str:
        return "#" * min(6, len(match.group(1)) + INCLUDE_LEVELS) + " "

    return re.sub(r"^(#{1,6}) ", demote, text, flags=re.MULTILINE)


def on_page_markdown(markdown, page, config, files):
    def include(match: re.Match) -> str:
        path = ROOT / match.group(1)
        if not path.is_file():
            raise PluginError(f"{page.file.src_uri}: included file {match.group(1)} not found")
        return _demoted(path.read_text(encoding="utf-8"))

    return INCLUDE.sub(include, markdown)
