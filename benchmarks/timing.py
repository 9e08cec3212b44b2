"""Interleaved timing of the routes of one (layer, operation) cell, with a correctness check.

Each route is called once and its result compared with the reference's
(relative error in the max norm); then `warmup` untimed rounds, then `repeats`
timed rounds in a fixed interleaved order (ref, auto, tn, ref, …), so that a
drift of the machine's speed hits every route alike. Routes named in `apart`
(the unrewritten network, a diagnostic) are timed afterwards, each on its own:
their intermediates of up to a GiB changed the allocator's and caches' state for
the route after them (C3D's unfold: ref 5.5 ms, auto 7.6 ms, tn 2.8 ms with
them interleaved, all about 1.8 ms without). The median of a route's samples is
its time. `fresh`, where given, runs untimed before every warmup and timed call
(to give each call new arguments, as each training step gives new activations).
A route whose timed calls have used up `budget` seconds is left out of the
remaining rounds (it keeps at least one sample), so a very slow unrewritten
network cannot stall the suite.

>>> import torch
>>> calls = {"ref": lambda: torch.ones(3), "auto": lambda: torch.ones(3),
...          "tn": lambda: torch.zeros(3), "tn_norewrite": "n/a (no tnconv.kfc)"}
>>> res = time_cell(calls, repeats=3, warmup=0, budget=1.0)
>>> res["auto"].status, res["auto"].samples, res["tn"].status, res["tn_norewrite"].status
('ok', 3, 'wrong', 'n/a')
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from statistics import median
from typing import Callable, Optional, Union

import torch

__all__ = ["RouteResult", "time_cell", "relative_error", "TOLERANCE"]

#: Largest accepted relative error (max norm) of a float32 result against the reference.
TOLERANCE = 1e-4


@dataclass
class RouteResult:
    """What one route of one cell gave: status, median time, error, extra peak memory (bytes)."""

    status: str  # "ok", "wrong", "error", "n/a", "skipped", "—"
    note: str = ""
    seconds: Optional[float] = None
    samples: int = 0
    error: Optional[float] = None
    memory: Optional[int] = None
    result_bytes: Optional[int] = None

    @property
    def timed(self) -> bool:
        return self.seconds is not None


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual − expected| / max |expected| (inf on a shape mismatch or non-finite value)."""
    if tuple(actual.shape) != tuple(expected.shape):
        return float("inf")
    diff = (actual.double() - expected.double()).abs().max()
    err = (diff / expected.double().abs().max().clamp_min(1e-30)).item()
    return err if err == err else float("inf")


def _status(reason: str) -> RouteResult:
    kind = reason.split(" ")[0]
    status = kind if kind in ("n/a", "skipped", "—") else "n/a"
    return RouteResult(status, reason)


def _first_calls(calls: dict, sync: Callable[[], None], tol: float):
    """Call every route once and check it against the first route's (the reference's) result.

    Returns the results so far, the runnable routes and the time of each first call.
    """
    results: dict[str, RouteResult] = {}
    active: dict[str, Callable[[], torch.Tensor]] = {}
    first: dict[str, float] = {}
    expected = None
    for position, (route, call) in enumerate(calls.items()):
        if isinstance(call, str):
            results[route] = _status(call)
            continue
        if position and expected is None:
            results[route] = RouteResult("n/a", "the reference failed")
            continue
        try:
            start = time.perf_counter()
            out = call()
            sync()
            first[route] = time.perf_counter() - start
        except Exception as err:  # noqa: BLE001 — reported in the table, not raised
            results[route] = RouteResult("error", f"{type(err).__name__}: {err}"[:200])
            continue
        if expected is None:
            expected = out
        err = relative_error(out, expected)
        results[route] = RouteResult("ok" if err <= tol else "wrong", error=err,
                                     result_bytes=out.numel() * out.element_size())
        active[route] = call
        del out
    return results, active, first


def _rounds(routes: dict[str, Callable[[], torch.Tensor]], first: dict[str, float],
            samples: dict[str, list[float]], repeats: int, warmup: int, budget: float,
            sync: Callable[[], None], fresh: Callable[[], None]) -> None:
    """`warmup` untimed and `repeats` timed rounds of `routes`, interleaved."""
    for _ in range(warmup):
        for route, call in routes.items():
            if first[route] <= budget:
                fresh()
                call()
                sync()
    for _ in range(repeats):
        for route, call in routes.items():
            if samples[route] and sum(samples[route]) > budget:
                continue
            fresh()
            sync()
            start = time.perf_counter()
            call()
            sync()
            samples[route].append(time.perf_counter() - start)


def time_cell(calls: dict[str, Union[Callable[[], torch.Tensor], str]], repeats: int,
              warmup: int, budget: float, sync: Callable[[], None] = lambda: None,
              tol: float = TOLERANCE, apart: tuple[str, ...] = (),
              fresh: Callable[[], None] = lambda: None) -> dict[str, RouteResult]:
    """Time every runnable route of `calls` (the first one is the reference), interleaved;
    the routes in `apart` after that, each on its own; `fresh()` untimed before each call."""
    results, active, first = _first_calls(calls, sync, tol)
    samples: dict[str, list[float]] = {route: [] for route in active}
    _rounds({r: c for r, c in active.items() if r not in apart}, first, samples, repeats,
            warmup, budget, sync, fresh)
    for route in apart:
        if route in active:
            _rounds({route: active[route]}, first, samples, repeats, warmup, budget, sync,
                    fresh)
    for route, times in samples.items():
        results[route].seconds = median(times) if times else None
        results[route].samples = len(times)
    return results
