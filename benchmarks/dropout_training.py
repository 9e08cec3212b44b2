"""`python -m benchmarks.dropout_training`: a small CNN trained with exact and with sampled backprop.

Synthetic data: 10 classes of 3×32×32 images, each a fixed random smooth pattern
of its class, shifted at random and drowned in noise. The CNN (four 3×3
convolutions, two of stride 2, ReLU, global average pooling, a linear layer) is
built from `tnconv.nn.Conv2d` modules, once with exact backprop and once per
keep probability with `backward_sample=tnconv.Sample("spatial", keep,
scheme="fixed")`: the weight gradients are estimated from a fresh subset of
output positions per step (unbiased; the input gradients stay exact; "fixed"
keeps one compiled program per layer, where a Bernoulli draw's bucketed counts
would compile a few dozen in the first steps). Every run starts from the same
weights and sees the same batches. Writes a plot of the training loss against
the step and against wall-clock time (`docs/images/dropout_training.png`) and a
table of the final losses and times (`benchmarks/results/dropout_training.md`).

>>> x, y = synthetic(4, torch.Generator().manual_seed(0))
>>> x.shape, y.shape
(torch.Size([4, 3, 32, 32]), torch.Size([4]))
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

import tnconv

from .cli import git_commit

__all__ = ["synthetic", "network", "train", "main"]

CLASSES = 10
_PATTERNS = torch.nn.functional.avg_pool2d(
    torch.randn(CLASSES, 3, 40, 40, generator=torch.Generator().manual_seed(123)), 5, 1, 2)


def synthetic(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of images (class pattern, randomly shifted, plus noise) and their labels."""
    labels = torch.randint(CLASSES, (batch,), generator=generator)
    shifts = torch.randint(0, 9, (batch, 2), generator=generator)
    images = torch.stack([_PATTERNS[c, :, i:i + 32, j:j + 32]
                          for c, (i, j) in zip(labels.tolist(), shifts.tolist())])
    noise = torch.randn(images.shape, generator=generator)
    return images * 3 + noise, labels


def network(sample: Optional[tnconv.Sample]) -> torch.nn.Module:
    """The CNN; its convolutions estimate their weight gradients with `sample` (None: exact)."""
    def conv(c_in: int, c_out: int, stride: int) -> torch.nn.Module:
        return tnconv.nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1,
                                backward_sample=sample)

    return torch.nn.Sequential(
        conv(3, 32, 1), torch.nn.ReLU(), conv(32, 64, 2), torch.nn.ReLU(),
        conv(64, 64, 1), torch.nn.ReLU(), conv(64, 64, 2), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(64, CLASSES))


def train(sample: Optional[tnconv.Sample], steps: int, batch: int,
          seed: int = 0) -> tuple[list[float], list[float]]:
    """Training losses and the wall-clock seconds at each step (the same initial weights and
    batches for every `sample`)."""
    torch.manual_seed(seed)
    model = network(sample)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    data = torch.Generator().manual_seed(seed + 1)
    losses, times, start = [], [], time.perf_counter()
    for _ in range(steps):
        x, y = synthetic(batch, data)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - start)
    return losses, times


def _smoothed(values: list[float], window: int = 10) -> list[float]:
    return [sum(values[max(0, n - window + 1):n + 1]) / (n + 1 - max(0, n - window + 1))
            for n in range(len(values))]


def plot(runs: dict[str, tuple[list[float], list[float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, (losses, times) in runs.items():
        smooth = _smoothed(losses)
        by_step.plot(range(1, len(losses) + 1), smooth, label=label)
        by_time.plot(times, smooth, label=label)
    by_step.set(xlabel="step", ylabel="training loss (moving average of 10 steps)")
    by_time.set(xlabel="wall-clock time (s)", ylabel="training loss (moving average of 10)")
    for axes in (by_step, by_time):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dropout_training",
                                description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--keeps", default="0.5,0.25", help="comma-separated keep probabilities")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: on a shared machine, 2-thread parallel "
                        "regions wait on each other)")
    p.add_argument("--plot", type=Path, default=Path("docs/images/dropout_training.png"))
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/dropout_training.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    runs = {"exact backprop": train(None, args.steps, args.batch)}
    for keep in (float(k) for k in args.keeps.split(",")):
        sample = tnconv.Sample("spatial", keep, generator=torch.Generator().manual_seed(7),
                               scheme="fixed")
        runs[f"sampled, keep={keep:g}"] = train(sample, args.steps, args.batch)
        print(f"keep {keep:g} done", flush=True)
    after = os.getloadavg()
    title = (f"4-conv CNN, synthetic 10-class 3×32×32 data, batch {args.batch}, SGD; "
             f"{args.threads} CPU thread{'s' if args.threads > 1 else ''}, load average "
             f"{load[0]:.1f} → {after[0]:.1f}")
    plot(runs, args.plot, title)
    lines = ["# Training with sampled backprop (tensor dropout)", "",
             f"- command: `python -m benchmarks.dropout_training`; plot: `{args.plot}`",
             f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, torch "
             f"{torch.__version__}, commit {git_commit()}",
             f"- {args.steps} steps, batch {args.batch}, {args.threads} torch threads; load "
             f"average (1 min) {load[0]:.2f} before, {after[0]:.2f} after (shared machine)", "",
             "| run | loss, first 10 steps | loss, last 10 steps | seconds | seconds / step |",
             "|---|---|---|---|---|"]
    for label, (losses, times) in runs.items():
        lines.append(f"| {label} | {sum(losses[:10]) / 10:.3f} | {sum(losses[-10:]) / 10:.3f} | "
                     f"{times[-1]:.1f} | {times[-1] / len(times):.4f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
