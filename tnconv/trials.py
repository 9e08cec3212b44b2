"""Timing two routes that compute the same thing on a call's first uses, then keeping the faster.

Where two routes give the same result (to rounding) and no price says which is
faster on this machine, the calls themselves decide: each route is run once
untimed (its first call builds what it caches), then `TIMED` times, taking
turns, and from then on the route with the smaller median runs. Every call in
between returns a correct result; only which route produced it varies.
`tnconv.sampled` uses it for a sampled weight VJP's masked and sliced routes,
the same estimate at different costs (the masked route is the exact VJP of a
masked argument, the sliced one a smaller network or torch's kernel on the kept
strips or channels), where the balance depends on the CPU's memory system.

>>> trials = RouteTrials(("sliced", "masked"))
>>> runs = []
>>> while trials.choice is None:
...     route = trials.next()
...     runs.append(route)
...     trials.record(route, 0.002 if route == "sliced" else 0.001)
>>> trials.choice, len(runs)
('masked', 8)
"""

from __future__ import annotations

import threading
from statistics import median
from typing import Hashable, Optional

__all__ = ["RouteTrials", "TIMED"]

#: Timed calls per route after its untimed first call.
TIMED = 3


class RouteTrials:
    """The trials of `routes`: `next()` says which to run, `record(route, seconds)` what it
    took; `choice` is None until every route has its timed calls, then the fastest."""

    def __init__(self, routes: tuple[Hashable, ...]) -> None:
        self.routes = routes
        self.times: dict[Hashable, list[float]] = {route: [] for route in routes}
        self._warm: set[Hashable] = set()
        self.choice: Optional[Hashable] = None
        self._lock = threading.Lock()

    def next(self) -> Hashable:
        """The route to run now: the chosen one, else the one with the fewest calls."""
        if self.choice is not None:
            return self.choice
        with self._lock:
            return min(self.routes, key=lambda r: (r in self._warm) + len(self.times[r]))

    def record(self, route: Hashable, seconds: float) -> None:
        """One call of `route` took `seconds` (its first call is not counted)."""
        with self._lock:
            if self.choice is not None:
                return
            if route not in self._warm:
                self._warm.add(route)
                return
            self.times[route].append(seconds)
            if all(len(t) >= TIMED for t in self.times.values()):
                self.choice = min(self.routes, key=lambda r: median(self.times[r]))

    def describe(self) -> str:
        """The medians timed so far, e.g. "sliced 3.1 ms, masked 2.0 ms"."""
        return ", ".join(f"{route} {median(t) * 1e3:.3g} ms" if t else f"{route} not timed"
                         for route, t in self.times.items())
