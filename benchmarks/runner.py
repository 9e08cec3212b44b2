"""Runs the suite: every (layer, operation) cell, timed and checked, then the factors' memory.

>>> import torch
>>> config = Config(device=torch.device("cpu"), layers=[LAYERS["resnet_1x1_down"]],
...                 ops=[OPS["forward"]], repeats=1, warmup=0, budget=1.0, memory=False)
>>> [cell.results["ref"].status for cell in run_suite(config)]
['ok']
"""

from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import torch

from .case import make_case
from .layers import LAYERS, Layer
from .memory import cuda_peak_of, measure_cpu_layer
from .ops import OPS, Op, route_calls
from .progress import Progress
from .summary import Cell
from .timing import RouteResult, time_cell

__all__ = ["Config", "run_suite", "device_sync", "MEMORY_ROUTES", "APART_ROUTES"]

#: Routes whose extra peak memory is measured (factors only).
MEMORY_ROUTES = ("ref", "auto", "tn")
#: Diagnostic routes timed after the interleaved rounds, on their own (`time_cell`).
APART_ROUTES = ("tn_norewrite",)


@dataclass
class Config:
    device: torch.device
    layers: list[Layer]
    ops: list[Op]
    repeats: int
    warmup: int
    budget: float
    memory: bool = True


def device_sync(device: torch.device) -> Callable[[], None]:
    """What waits for `device`'s queued work: `torch.cuda.synchronize` on a GPU, nothing on
    the CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


@contextlib.contextmanager
def _full_float32(device: torch.device) -> Iterator[None]:
    """No TF32 on CUDA while the suite runs: float32 results on every device, as on the CPU."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _run_cell(config: Config, case, op: Op) -> Cell:
    calls = route_calls(op, case)
    if all(isinstance(calls[r], str) for r in calls if r != "ref"):
        calls["ref"] = calls["ref"] if isinstance(calls["ref"], str) else "n/a"
    results = time_cell(calls, config.repeats, config.warmup, config.budget, device_sync(config.device),
                        apart=APART_ROUTES)
    if config.memory and op.factor and config.device.type == "cuda":
        for route in MEMORY_ROUTES:
            call = calls.get(route)
            if results[route].status in ("ok", "wrong") and not isinstance(call, str):
                results[route].memory = cuda_peak_of(call, config.device)
    return Cell(case.layer.name, op.name, results)


def _cpu_memory(config: Config, layer: Layer, cells: list[Cell]) -> None:
    """Fill in the factors' extra peak memory from a fresh subprocess for this layer."""
    factor_cells = [c for c in cells if OPS[c.op].factor
                    and any(r.status in ("ok", "wrong") for r in c.results.values())]
    if not factor_cells:
        return
    found = measure_cpu_layer(layer.name, layer.batch, [c.op for c in factor_cells],
                              list(MEMORY_ROUTES), torch.get_num_threads())
    for cell in factor_cells:
        for route, peak in found.get(cell.op, {}).items():
            res: Optional[RouteResult] = cell.results.get(route)
            if res is not None and res.status in ("ok", "wrong"):
                res.memory = peak


def run_suite(config: Config, progress: Optional[Progress] = None,
              on_layer: Optional[Callable[[list[Cell]], None]] = None) -> list[Cell]:
    """Every cell of `config`, in layer order; `on_layer(cells so far)` after each layer."""
    with _full_float32(config.device):
        return _run_layers(config, progress, on_layer)


def _run_layers(config: Config, progress: Optional[Progress],
                on_layer: Optional[Callable[[list[Cell]], None]]) -> list[Cell]:
    cells: list[Cell] = []
    cpu_memory = config.memory and config.device.type == "cpu"
    for layer in config.layers:
        case = make_case(layer, config.device)
        layer_cells = []
        for op in config.ops:
            if progress:
                progress.start(f"{layer.name} {op.name}")
            layer_cells.append(_run_cell(config, case, op))
        del case
        gc.collect()
        if cpu_memory and any(op.factor for op in config.ops):
            if progress:
                progress.start(f"{layer.name} peak memory (subprocess)")
            _cpu_memory(config, layer, layer_cells)
        cells += layer_cells
        if on_layer:
            on_layer(cells)
    return cells


def steps(config: Config) -> int:
    """Number of progress steps `run_suite` takes."""
    per_layer = len(config.ops)
    if config.memory and config.device.type == "cpu" and any(op.factor for op in config.ops):
        per_layer += 1
    return per_layer * len(config.layers)
