"""`python -m benchmarks.curvature`'s machinery: its routes agree (float64, tiny layers,
grouped and transposed), the report marks the bars, the command writes its table. No
timing is asserted."""

from __future__ import annotations

import doctest
import importlib

import pytest
import torch

from benchmarks.case import make_case
from benchmarks.curvature import main
from benchmarks.curvature_report import markdown
from benchmarks.curvature_routes import QUANTITIES, make_extras, route_calls
from benchmarks.layers import Layer
from benchmarks.timing import RouteResult
from tests.helpers import assert_close

TINY = Layer("tiny", "test", 4, 6, 3, (7, 6), batch=3, stride=(2, 1), padding=1, groups=2)
TINY_REFLECT = Layer("tiny_reflect", "test", 2, 3, 3, (9,), batch=2, padding=2,
                     padding_mode="reflect")
TINY_T = Layer("tiny_t", "test", 4, 6, 3, (5, 4), batch=3, stride=2, padding=1, groups=2,
               transposed=True, output_padding=1)


@pytest.mark.parametrize("name", ["benchmarks.curvature", "benchmarks.curvature_routes",
                                  "benchmarks.curvature_report"])
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("layer", [TINY, TINY_REFLECT, TINY_T], ids=lambda layer: layer.name)
@pytest.mark.parametrize("quantity", QUANTITIES)
def test_routes_agree(layer, quantity):
    case = make_case(layer, torch.device("cpu"), dtype=torch.float64)
    calls = route_calls(quantity, case, make_extras(case, classes=2))
    expected = calls["unfold"]()
    for route in ("tnconv", "vmap"):
        if not isinstance(calls[route], str):
            assert_close(calls[route](), expected, rtol=1e-11)


def test_report_marks_the_bars():
    from benchmarks.curvature import Row
    fast = {"unfold": RouteResult("ok", seconds=1.0), "tnconv": RouteResult("ok", seconds=0.4),
            "vmap": RouteResult("ok", seconds=2.0)}
    slow = {**fast, "tnconv": RouteResult("ok", seconds=1.5)}
    rows = [Row("a", "batch_l2", fast, "gram", {"unfold": 4 << 20, "tnconv": 1 << 20}),
            Row("b", "batch_l2", slow, "per_sample", {"unfold": 4 << 20, "tnconv": 4 << 20})]
    text = markdown(rows, {"command": "test"})
    assert "0.77 (bar ≤ 0.5: missed)" in text and "1.50 (bar ≤ 1.0: missed)" in text
    assert "0.50 (bar ≤ 0.5: passed)" in text  # memory: geometric mean of 0.25 and 1.0


def test_command_writes_its_table(tmp_path):
    out = tmp_path / "curvature.md"
    status = main(["--layers", "resnet_1x1_down", "--quantities", "batch_l2,ggn_diagonal",
                   "--repeats", "1", "--warmup", "0", "--classes", "2", "--no-memory",
                   "--out", str(out)])
    text = out.read_text()
    assert status == 0 and "| resnet_1x1_down |" in text and "### ggn_diagonal" in text
    assert "load average" in text
