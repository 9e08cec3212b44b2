"""Per-call overhead: a cached `tnconv.conv` on a tiny input against `F.conv2d`.

The input is 1×4×8×8 with a 3×3 kernel (4 output channels, padding 1), so the
arithmetic is negligible and the time is the call path itself: argument checks,
the cache lookup and the dispatch. Blocks of `calls` calls per route are timed
in interleaved order (ref, auto, tn, ref, …); the per-call time is the median
block time divided by `calls`.

>>> times = measure_overhead(torch.device("cpu"), blocks=1, calls=2)
>>> sorted(times)
['auto', 'ref', 'tn']
"""

from __future__ import annotations

import time
from statistics import median
from typing import Callable

import torch
import torch.nn.functional as F

import tnconv

__all__ = ["measure_overhead"]


def _calls(device: torch.device) -> dict[str, Callable[[], torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=gen).to(device)
    w = torch.randn(4, 4, 3, 3, generator=gen).to(device)
    return {
        "ref": lambda: F.conv2d(x, w, padding=1),
        "auto": lambda: tnconv.conv(x, w, padding=1),
        "tn": lambda: tnconv.conv(x, w, padding=1, strategy="tn"),
    }


def measure_overhead(device: torch.device, blocks: int = 15, calls: int = 200) -> dict[str, float]:
    """Seconds per call of each route (median over interleaved blocks)."""
    routes = _calls(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for call in routes.values():
        for _ in range(10):
            call()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in routes}
    for _ in range(blocks):
        for name, call in routes.items():
            start = time.perf_counter()
            for _ in range(calls):
                call()
            sync()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: median(times) for name, times in samples.items()}
