"""Shared test configuration: hypothesis profile and the device fixture."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

from tests.helpers import DEVICE

settings.register_profile("tnconv", deadline=None, max_examples=25, derandomize=True)
# A long local run of tests/test_fuzz.py: pytest tests/test_fuzz.py --hypothesis-profile=fuzz-long
settings.register_profile("fuzz-long", deadline=None, max_examples=500)
settings.load_profile("tnconv")


@pytest.fixture
def device() -> torch.device:
    return DEVICE


@pytest.fixture
def without_conv_kernels(monkeypatch):
    """The schedule's rules without `conv_rule`, plan caches cleared on both sides: tests of
    the steps torch's convolution kernels would otherwise take (the windows family)."""
    import tnconv
    from tnconv.lower.schedule import builder

    tnconv.clear_caches()
    monkeypatch.setattr(builder, "RULES",
                        tuple(rule for rule in builder.RULES if rule.__name__ != "conv_rule"))
    yield
    tnconv.clear_caches()
