"""A small progress bar on stderr (one line redrawn on a terminal, one line per step otherwise).

>>> import io
>>> stream = io.StringIO()
>>> bar = Progress(2, stream=stream)
>>> bar.start("resnet_3x3 forward"); bar.start("resnet_3x3 kfc"); bar.close()
>>> stream.getvalue().splitlines()[-1].startswith("[##############################] 2/2")
True
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Counts finished steps out of `total` and shows the step now running."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, width: int = 30) -> None:
        self.total = max(total, 1)
        self.done = -1
        self.stream = stream
        self.width = width
        self.started = time.perf_counter()
        self.tty = getattr(stream, "isatty", lambda: False)()

    def _line(self, label: str) -> str:
        filled = self.width * max(self.done, 0) // self.total
        elapsed = time.perf_counter() - self.started
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {max(self.done, 0)}/{self.total} {elapsed:5.0f}s {label}"

    def _show(self, label: str) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self._line(label)[:150])
        else:
            self.stream.write(self._line(label) + "\n")
        self.stream.flush()

    def start(self, label: str) -> None:
        """The previous step is finished; `label` is running now."""
        self.done += 1
        self._show(label)

    def close(self) -> None:
        self.done += 1
        self._show("done")
        if self.tty:
            self.stream.write("\n")
        self.stream.flush()
