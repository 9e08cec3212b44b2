"""`python -m benchmarks`: the options, the run, the files written.

Writes `results.md` (how it was run, the bars with pass / miss, geometric means,
every cell) and `results.png` (time ratios per layer and operation) into `--out`,
prints the Markdown, and exits with status 1 if any tnconv result was wrong or
raised an error.

>>> args = parse_args(["--quick", "--ops", "forward,kfc"])
>>> args.quick, args.ops, args.threads, args.repeats
(True, 'forward,kfc', 2, 3)
"""

from __future__ import annotations

import argparse
import platform
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch

import tnconv

from .layers import LAYERS, select_layers
from .ops import OPS, select_ops
from .overhead import measure_overhead
from .plot import plot
from .progress import Progress
from .report import markdown
from .runner import Config, run_suite, steps

__all__ = ["main", "parse_args", "git_commit"]

_ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="4 layers, 3 repeats: under a minute on 2 CPU threads")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--ops", help=f"comma-separated subset of: {', '.join(OPS)}")
    p.add_argument("--layers", help=f"comma-separated subset of: {', '.join(LAYERS)}")
    p.add_argument("--repeats", type=int, help="timed rounds per cell (default 7, quick 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds after the check call")
    p.add_argument("--budget", type=float,
                   help="seconds of timed calls per route and cell before it sits out the "
                        "remaining rounds (default 1, quick 0.3)")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="folder for results.md and results.png")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--no-overhead", action="store_true", help="skip the per-call overhead")
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 7
    if args.budget is None:
        args.budget = 0.3 if args.quick else 1.0
    return args


def git_commit() -> str:
    """The checkout's short commit, marked when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=_ROOT, text=True,
                              capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=_ROOT, text=True,
                               capture_output=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + (" (with uncommitted changes)" if dirty else "")


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _meta(argv: list[str], args: argparse.Namespace, device: torch.device) -> dict[str, str]:
    return {
        "command": "`python -m benchmarks " + " ".join(shlex.quote(a) for a in argv) + "`",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "torch": torch.__version__,
        "tnconv": f"{tnconv.__version__}, commit {git_commit()}",
        "machine": f"{_machine(device)}, {args.threads} torch threads",
        "device kind": device.type,
        "timing": (f"{args.repeats} interleaved rounds of ref, auto, tn after {args.warmup} "
                   "warm-up, then tn rewrite=False on its own; medians"),
    }


def _device(name: str) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
    return torch.device(name)


def _write(args: argparse.Namespace, text: str, cells: list, device: torch.device) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text)
    title = f"tnconv / PyTorch time ratio ({device.type}, {args.threads} threads)"
    if not plot(cells, args.out / "results.png", title):
        print("no plot written (matplotlib missing or nothing timed)", file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = _device(args.device)
    config = Config(device, select_layers(args.layers, args.quick), select_ops(args.ops),
                    args.repeats, args.warmup, args.budget, memory=not args.no_memory)
    meta = _meta(argv, args, device)

    def partial(cells: list) -> None:  # keeps what is done if the run is stopped
        done = len({c.layer for c in cells})
        note = {"status": f"partial, {done} of {len(config.layers)} layers"}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(markdown(cells, None, {**meta, **note},
                                                      config.layers))

    progress = Progress(steps(config) + (0 if args.no_overhead else 1))
    cells = run_suite(config, progress, on_layer=partial)
    overhead = None
    if not args.no_overhead:
        progress.start("per-call overhead")
        overhead = measure_overhead(device, blocks=5 if args.quick else 15,
                                    calls=100 if args.quick else 200)
    progress.close()
    text = markdown(cells, overhead, meta, config.layers)
    print(text)
    _write(args, text, cells, device)
    bad = [(c.layer, c.op, r) for c in cells for r, res in c.results.items()
           if res.status in ("wrong", "error")]
    if bad:
        print(f"{len(bad)} wrong or failing results: {bad}", file=sys.stderr)
    return 1 if bad else 0
