"""`python -m benchmarks.frozen_memory`: peak memory of forward + backward through a frozen CNN.

The network: a trainable stem `Conv2d(3, C, 3)`, `--depth` frozen
`Conv2d(C, C, 3, padding=1)` layers (weights `requires_grad=False`, as in
fine-tuning a subset or training an input-side adapter), each followed by an
activation, then a trainable linear head. The stem is trainable, so every
frozen layer's input requires a gradient and torch's layers keep it for
backward; tnconv's twins (`tnconv.nn.convert`) keep only the weight.

Two activations: torch's `ReLU`, which keeps its output (the next layer's
input, so that memory stays alive whatever the convolutions do), and a ReLU
that keeps a one-byte mask, as the memory-saving layers published by BackPACK's
authors do; with it the saving of the frozen convolutions shows.

Columns: *kept* is what autograd saved for backward (unique storages seen by
`torch.autograd.graph.saved_tensors_hooks`, parameters excluded), *peak* the
extra peak memory of one forward + backward (CPU: resident set of a fresh
subprocess per row, see `benchmarks.memory`; CUDA: `max_memory_allocated`).
Writes `frozen_memory.md` into `--out` and prints it.

>>> args = parse_args(["--depth", "2", "--channels", "4"])
>>> args.depth, args.channels, args.batch
(2, 4, 32)
>>> model = frozen_cnn(channels=4, depth=2, activation="mask_relu", layers="tnconv")
>>> type(model.frozen[0]).__module__, model.frozen[0].weight.requires_grad
('tnconv.nn.modules', False)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch

import tnconv

from .cli import git_commit
from .memory import MALLOC_ENV, cpu_peak_of, cuda_peak_of

__all__ = ["MaskReLU", "frozen_cnn", "measure", "parse_args", "main"]

ROWS = [("torch", "relu"), ("tnconv", "relu"), ("torch", "mask_relu"), ("tnconv", "mask_relu")]
_NAMES = {"torch": "torch.nn", "tnconv": "tnconv.nn", "relu": "ReLU", "mask_relu": "mask ReLU"}
_ROOT = Path(__file__).resolve().parent.parent


class _MaskReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mask = x > 0
        ctx.save_for_backward(mask)
        return x * mask

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        return grad * mask


class MaskReLU(torch.nn.Module):
    """ReLU that keeps a bool mask for backward instead of its float output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _MaskReLUFunction.apply(x)


class FrozenCNN(torch.nn.Module):
    """Trainable stem, `depth` frozen 3×3 convolutions with activations, trainable head."""

    def __init__(self, channels: int, depth: int, activation: str) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, channels, 3, padding=1)
        self.frozen = torch.nn.ModuleList(
            torch.nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth))
        self.frozen.requires_grad_(False)
        self.act = torch.nn.ReLU() if activation == "relu" else MaskReLU()
        self.head = torch.nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.stem(x))
        for conv in self.frozen:
            h = self.act(conv(h))
        return self.head(h.mean((2, 3)))


def frozen_cnn(channels: int, depth: int, activation: str, layers: str) -> FrozenCNN:
    """The network with torch's layers (`layers="torch"`) or tnconv's (`"tnconv"`)."""
    model = FrozenCNN(channels, depth, activation)
    return tnconv.nn.convert(model) if layers == "tnconv" else model


def _kept_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves in one forward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return sum(storages.values())


def measure(layers: str, activation: str, batch: int, channels: int, size: int, depth: int,
            device: str = "cpu", threads: int = 2) -> dict[str, Optional[int]]:
    """{"kept": bytes, "peak": bytes or None} of one forward + backward, in this process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    dev = torch.device(device)
    model = frozen_cnn(channels, depth, activation, layers).to(dev)
    x = torch.randn(batch, 3, size, size, device=dev)

    def step() -> None:
        model(x).square().sum().backward()
        model.zero_grad(set_to_none=True)

    step()  # compiled plans, thread pools and caches in place: a steady-state call follows
    peak = cuda_peak_of(step, dev) if dev.type == "cuda" else cpu_peak_of(step)
    return {"kept": _kept_bytes(model, x), "peak": peak}


def _measure_in_subprocess(request: dict) -> dict[str, Optional[int]]:
    """`measure` in a fresh process whose allocator hands freed memory back (resident set)."""
    env = dict(os.environ, **MALLOC_ENV,
               PYTHONPATH=os.pathsep.join(filter(None, [str(_ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "benchmarks.frozen_memory", "--child",
                           json.dumps(request)], cwd=_ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"measurement failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.frozen_memory",
                                description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--size", type=int, default=32, help="input height and width")
    p.add_argument("--depth", type=int, default=8, help="frozen conv layers")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _mib(value: Optional[int]) -> str:
    return "n/a" if value is None else f"{value / 2 ** 20:.1f}"


def table(args: argparse.Namespace, argv: list[str], found: dict[tuple, dict]) -> str:
    """The markdown report: how it was run, then one row per (layers, activation)."""
    c, s = args.channels, args.size
    lines = [
        "# Frozen CNN: peak memory of forward + backward, tnconv.nn against torch.nn", "",
        "- command: `python -m benchmarks.frozen_memory "
        + " ".join(shlex.quote(a) for a in argv) + "`",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, torch {torch.__version__}, "
        f"commit {git_commit()}, {args.device}, {args.threads} torch threads",
        f"- network: trainable stem Conv2d(3, {c}, 3), {args.depth} frozen Conv2d({c}, {c}, 3, "
        f"padding=1) each followed by the activation, trainable Linear({c}, 10); input "
        f"{args.batch}×3×{s}×{s} float32",
        "- kept: storages autograd saved for backward (saved_tensors_hooks), parameters "
        "excluded; peak: extra peak memory of one forward + backward ("
        + ("max_memory_allocated" if args.device == "cuda"
           else "resident set of a fresh subprocess per row, benchmarks/memory.py") + ")",
        "", "| layers | activation | kept for backward (MiB) | peak (MiB) | peak / torch.nn |",
        "|---|---|---|---|---|",
    ]
    for layers, activation in ROWS:
        row, base = found[layers, activation], found["torch", activation]["peak"]
        ratio = f"{row['peak'] / base:.2f}" if row["peak"] and base else "n/a"
        lines.append(f"| {_NAMES[layers]} | {_NAMES[activation]} | {_mib(row['kept'])} | "
                     f"{_mib(row['peak'])} | {ratio} |")
    lines += ["", "torch's ReLU keeps its output, which is the next layer's input, so with it "
              "the inputs stay alive whichever layer runs; with a ReLU that keeps a one-byte "
              "mask the frozen tnconv layers keep no activation at all.", ""]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    sizes = dict(batch=args.batch, channels=args.channels, size=args.size, depth=args.depth,
                 device=args.device, threads=args.threads)
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return 0
    found = {}
    for layers, activation in ROWS:
        request = dict(sizes, layers=layers, activation=activation)
        print(f"measuring {_NAMES[layers]} with {_NAMES[activation]}", file=sys.stderr)
        found[layers, activation] = (measure(**request) if args.device == "cuda"
                                     else _measure_in_subprocess(request))
    text = table(args, argv, found)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frozen_memory.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
