"""Shared fixtures: the device switch and float64 helpers."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("tnconv", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("tnconv")

#: Device the tests run on; set TNCONV_TEST_DEVICE=cuda on a GPU machine.
DEVICE = torch.device(os.environ.get("TNCONV_TEST_DEVICE", "cpu"))


@pytest.fixture
def device() -> torch.device:
    return DEVICE


def rand(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Random float64 tensor on the test device."""
    return torch.randn(*shape, dtype=dtype, device=DEVICE)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-12) -> None:
    """Relative error (max-norm) at most `rtol`, with identical shapes."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().clamp_min(1e-300)
    err = ((actual - expected).abs().max() / scale).item()
    assert err <= rtol, f"relative error {err:.3e} > {rtol:.0e}"
