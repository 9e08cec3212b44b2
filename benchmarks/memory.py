"""Extra peak memory of one call: the most memory in use during it, above what was in use before.

The result the call returns counts (it is the same for every route; the report
shows its size next to the ratios, since a [G, D, D] factor can outweigh the
unfolded input).

CUDA: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, in
process; it counts every tensor the call allocates.

CPU: torch keeps no allocation statistics on the CPU, so the measurement is the
resident set size of a fresh subprocess (`python -m benchmarks.memory`), one per
layer. Why this is reliable:

- the subprocess starts with glibc's ``MALLOC_MMAP_THRESHOLD_=65536``,
  ``MALLOC_TRIM_THRESHOLD_=0``, ``MALLOC_TOP_PAD_=0`` and ``MALLOC_ARENA_MAX=1``, so
  buffers of 64 KiB or more are their own mmaps, handed back to the kernel when
  freed, and the heap is trimmed after each free (glibc's default raises the mmap
  threshold after large frees and then keeps freed memory in its heap, which
  would hide a second call's allocations); buffers below ~1 MiB can still be
  served from freed heap memory, so results under 1 MiB are noise (the report
  gives no memory ratio where the reference's extra peak is below 1 MiB);
- each route is called twice first, so compilation, cached constants and thread
  pools are in place and the measured call is a steady-state call;
- the kernel's high-water mark is then reset (``5`` into ``/proc/self/clear_refs``)
  and read back (``VmHWM``) after the call: the extra peak is VmHWM minus the RSS
  before the call. The kernel updates the mark before every unmap, so short-lived
  intermediates count.

`torch.profiler`'s memory view was not used: it only sees allocations made through
torch's allocator (not the workspaces of the BLAS / oneDNN kernels) and slows the call.
If ``clear_refs`` is not writable, the CPU numbers are reported as unavailable.

>>> def call():  # a 64 MiB temporary, then a 4 MiB result
...     return torch.ones(16 * 1024 * 1024)[: 1024 * 1024].clone()
>>> peak = cpu_peak_of(call)
>>> peak is None or 63 * 2 ** 20 < peak < 84 * 2 ** 20
True
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import torch

__all__ = ["MALLOC_ENV", "cpu_peak_of", "cuda_peak_of", "measure_cpu_layer"]

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")
#: glibc settings of a measuring subprocess: freed buffers go back to the kernel (see above).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0",
              "MALLOC_TOP_PAD_": "0", "MALLOC_ARENA_MAX": "1"}


def _read_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise OSError(f"{field} not in {_STATUS}")


def cpu_peak_of(call: Callable[[], object]) -> Optional[int]:
    """Extra peak resident memory (bytes) of one `call()` in this process, or None."""
    gc.collect()
    try:
        before = _read_kib("VmRSS")
        _CLEAR.write_text("5")
    except OSError:
        return None
    result = call()
    peak = _read_kib("VmHWM")
    del result
    return max(peak - before, 0)


def cuda_peak_of(call: Callable[[], object], device: torch.device) -> int:
    """Extra peak CUDA memory (bytes) allocated by one `call()`."""
    torch.cuda.synchronize(device)
    gc.collect()
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = call()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del result
    return max(peak - before, 0)


def _measure(layer_name: str, batch: int, op_names: list[str], routes: list[str],
             threads: int) -> dict:
    """In the subprocess: {op: {route: bytes or None}} for one layer and batch size."""
    from dataclasses import replace

    from .case import make_case
    from .layers import LAYERS
    from .ops import OPS, route_calls

    torch.set_num_threads(threads)
    case = make_case(replace(LAYERS[layer_name], batch=batch), torch.device("cpu"))
    return {name: peaks_of(route_calls(OPS[name], case, tuple(routes))) for name in op_names}


def peaks_of(calls: dict) -> dict[str, Optional[int]]:
    """The extra peak of each route's call (`cpu_peak_of`), after two untimed calls; routes
    that are skipped (a reason string) or fail are left out: the timing phase reports them."""
    found: dict[str, Optional[int]] = {}
    for route, call in calls.items():
        if isinstance(call, str):
            continue
        try:
            call(), call()
        except Exception:  # noqa: BLE001 — the timing phase reports the error
            continue
        found[route] = cpu_peak_of(call)
    return found


def measure_cpu_layer(layer_name: str, batch: int, op_names: list[str], routes: list[str],
                      threads: int, timeout: float = 600) -> dict:
    """Run `_measure` in a fresh subprocess; {} if it fails (reported as unavailable)."""
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, **MALLOC_ENV,
               PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    request = json.dumps([layer_name, batch, op_names, routes, threads])
    try:
        done = subprocess.run([sys.executable, "-m", "benchmarks.memory", request], cwd=root,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {}
    if done.returncode != 0:
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_measure(*json.loads(sys.argv[1]))))
