"""Shared test configuration: hypothesis profile and the device fixture."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

from tests.helpers import DEVICE

settings.register_profile("tnconv", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("tnconv")


@pytest.fixture
def device() -> torch.device:
    return DEVICE
