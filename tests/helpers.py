"""Helpers for the tests: the device switch, float64 comparisons, schedules and their steps."""

from __future__ import annotations

import os
from typing import Any

import torch

#: Device the tests run on; set TNCONV_TEST_DEVICE=cuda on a GPU machine.
DEVICE = torch.device(os.environ.get("TNCONV_TEST_DEVICE", "cpu"))


def rand(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Random tensor (float64 by default) on the test device."""
    return torch.randn(*shape, dtype=dtype, device=DEVICE)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-12) -> None:
    """Relative error (max-norm) at most `rtol`, with identical shapes."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().clamp_min(1e-300)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= rtol, f"relative error {err:.3e} > {rtol:.0e}"


def schedule_of(op: str, spec: Any, batch: int, **options: Any) -> Any:
    """The public `Schedule` of `op` on `spec` for `batch` (the tensor-network route)."""
    import tnconv

    return tnconv.compile(op, spec, strategy="tn", **options).schedule(batch)


def step_types(schedule: Any) -> list[type]:
    """The classes of a schedule's per-call steps, in order."""
    return [type(step) for step in schedule.steps]


def run_step(step: Any, *tensors: torch.Tensor) -> torch.Tensor:
    """`step` bound by its family's runtime and run; `tensors` fill registers 0, 1, …
    (the slots up to the step's output are left empty)."""
    from tnconv.runtime.interpreter import BINDERS

    registers = list(tensors) + [None] * max(0, step.output + 1 - len(tensors))
    return BINDERS[step.family](step, registers, DEVICE)(registers)
