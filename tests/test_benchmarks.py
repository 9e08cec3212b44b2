"""The benchmark suite's machinery on a tiny configuration (no timing assertions), its
PyTorch references against independent computations, and the doctests of its modules."""

from __future__ import annotations

import doctest
import importlib
import os
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from benchmarks import references as ref
from benchmarks.case import make_case
from benchmarks.cli import main
from benchmarks.floor import floor_call, measure_layer
from benchmarks.floor import main as floor_main
from benchmarks.layers import LAYERS, Layer
from benchmarks.memory import measure_cpu_layer
from benchmarks.ops import OPS
from benchmarks.runner import Config, run_suite
from benchmarks.summary import Cell, bar_rows
from benchmarks.timing import RouteResult, time_cell
from tests.helpers import DEVICE, assert_close

TINY = Layer("tiny", "test", 4, 6, 3, (7, 6), batch=3, stride=(2, 1), padding=1, groups=2)
TINY_T = Layer("tiny_t", "test", 4, 6, 3, (5, 4), batch=3, stride=2, padding=1, groups=2,
               transposed=True, output_padding=1)
MODULES = ["benchmarks", "benchmarks.layers", "benchmarks.case", "benchmarks.references",
           "benchmarks.ops", "benchmarks.timing", "benchmarks.memory", "benchmarks.overhead",
           "benchmarks.summary", "benchmarks.report", "benchmarks.plot", "benchmarks.progress",
           "benchmarks.runner", "benchmarks.cli", "benchmarks.floor", "benchmarks.compile_time"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


def test_tiny_suite_runs_and_every_result_matches_the_reference():
    config = Config(DEVICE, [TINY, TINY_T], list(OPS.values()), repeats=1, warmup=0,
                    budget=1.0, memory=False)
    cells = run_suite(config)
    assert len(cells) == 2 * len(OPS)
    for cell in cells:
        statuses = {route: res.status for route, res in cell.results.items()}
        assert statuses["ref"] in ("ok", "—"), (cell.layer, cell.op, statuses)
        assert not {"wrong", "error"} & set(statuses.values()), (cell.layer, cell.op, statuses)


def test_diagnostic_routes_are_timed_apart_after_the_interleaved_rounds():
    order = []

    def call(route):
        return lambda: order.append(route) or torch.ones(2)

    calls = {r: call(r) for r in ("ref", "auto", "tn", "tn_norewrite")}
    res = time_cell(calls, repeats=3, warmup=1, budget=10.0, apart=("tn_norewrite",))
    timed = order[4:]  # after the four check calls
    assert timed == ["ref", "auto", "tn"] * 4 + ["tn_norewrite"] * 4
    assert all(res[r].samples == 3 for r in calls)


def test_cli_writes_the_table_and_the_plot(tmp_path):
    argv = ["--quick", "--layers", "resnet_1x1_down", "--ops", "forward", "--repeats", "1",
            "--warmup", "0", "--no-memory", "--no-overhead", "--device", DEVICE.type,
            "--out", str(tmp_path)]
    assert main(argv) == 0
    text = (tmp_path / "results.md").read_text()
    assert "`python -m benchmarks --quick --layers resnet_1x1_down" in text
    assert f"torch: {torch.__version__}" in text and "| resnet_1x1_down | forward |" in text
    pytest.importorskip("matplotlib")
    assert (tmp_path / "results.png").stat().st_size > 0


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the subprocess measures CPU memory")
@pytest.mark.parametrize("layer", [TINY, TINY_T], ids=["tiny", "tiny_t"])
def test_floor_reads_the_input_and_writes_the_factors_shape(layer):
    case = make_case(layer, DEVICE)
    factor = ref.kfac_reduce(case)
    out = floor_call(case, factor.shape)()
    assert out.shape == factor.shape and out.dtype == factor.dtype
    assert torch.equal(out, torch.full_like(factor, case.x.sum().item()))
    ratios = measure_layer(layer, DEVICE, repeats=1, warmup=0)
    assert set(ratios) == {"auto", "tn", "floor"}
    assert all(r is not None and r > 0 for r in ratios.values()), ratios


def test_floor_cli_writes_its_table(tmp_path):
    assert floor_main(["--layers", "wav2vec2_frontend", "--repeats", "1", "--out",
                       str(tmp_path)]) == 0
    rows = (tmp_path / "floor.md").read_text().splitlines()
    assert any(row.startswith("| wav2vec2_frontend |") for row in rows)
    assert rows[-1].startswith("| **geometric mean** |")


def test_cpu_memory_subprocess_sees_the_unfolded_input():
    found = measure_cpu_layer("resnet_3x3", 1, ["kfac_reduce"], ["ref"], threads=1)
    unfolded = 64 * 9 * 56 * 56 * 4  # the im2col matrix, float32 (the result is tiny)
    peak = found.get("kfac_reduce", {}).get("ref")
    if peak is None:  # only where the kernel's high-water mark cannot be reset
        assert not os.access("/proc/self/clear_refs", os.W_OK)
    else:
        assert 0.9 * unfolded < peak < 3 * unfolded


def test_bars_pass_miss_and_wrong():
    def cell(layer, seconds, status="ok"):
        return Cell(layer, "unfold", {"ref": RouteResult("ok", seconds=1.0),
                                      "auto": RouteResult(status, seconds=seconds)})

    rows = {(r[1], r[2]): r[5] for r in bar_rows([cell("a", 0.5), cell("b", 0.5)], None, "cpu")
            if r[0] == "unfold"}
    assert rows[("auto", "time geomean")] == "pass" and rows[("tn", "time geomean")] == "n/a"
    rows = {(r[1], r[2]): r[5] for r in bar_rows([cell("a", 0.5), cell("b", 2.0)], None, "cpu")
            if r[0] == "unfold"}
    assert rows[("auto", "time max")] == "miss"
    rows = {(r[1], r[2]): r[5] for r in bar_rows([cell("a", 0.5, "wrong")], None, "cpu")
            if r[0] == "unfold"}
    assert rows[("auto", "time geomean")] == "n/a"  # a wrong result is never counted


# ------------------------------------------------------------ the references, in float64
def _case(layer):
    return make_case(layer, DEVICE, dtype=torch.float64)


def test_tensor_unfold_matches_F_unfold():
    for layer in (TINY, LAYERS["same_even_4x4"], replace(LAYERS["deeplab_dilated"], in_channels=2,
                                                          out_channels=2)):
        case = _case(replace(layer, batch=2) if layer is not TINY else layer)
        spec = case.spec
        expected = F.unfold(F.pad(case.x, [p for pair in reversed(spec.padding) for p in pair]),
                            spec.kernel_size, dilation=spec.dilation, stride=spec.stride)
        assert_close(ref.tensor_unfold(case.x, spec), expected)


def test_transposed_unfold_reproduces_the_transposed_convolution():
    case = _case(replace(TINY_T, groups=1))
    u = ref.unfold(case)  # [N, C_in·∏K, ∏O]
    w = case.w.reshape(case.w.shape[0], case.w.shape[1], -1)  # [C_in, C_out, ∏K]
    y = torch.einsum("iok,nikp->nop", w, u.reshape(u.shape[0], w.shape[0], w.shape[2], -1))
    assert_close(y.reshape(ref.conv_transpose(case).shape), ref.conv_transpose(case))


@pytest.mark.parametrize("layer", [TINY, TINY_T])
def test_factor_references_match_their_definitions(layer):
    case = _case(layer)
    u = ref.unfold(case)
    n, g = u.shape[0], case.spec.groups
    u = u.reshape(n, g, u.shape[1] // g, u.shape[2])  # [N, G, D, O]
    o = u.shape[3]
    kfc = sum(u[i, :, :, p, None] * u[i, :, None, :, p] for i in range(n) for p in range(o))
    assert_close(ref.kfc(case), kfc / (n * o))
    mean = u.mean(dim=3)
    reduce = sum(mean[i, :, :, None] * mean[i, :, None, :] for i in range(n))
    assert_close(ref.kfac_reduce(case), reduce / n)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("layer", [TINY, TINY_T, replace(LAYERS["same_even_4x4"], in_channels=3,
                                                           out_channels=2, input_size=(7, 6))])
def test_vjp_references_match_autograd(layer):
    case = _case(layer)
    x, w = case.x.clone().requires_grad_(), case.w.clone().requires_grad_()
    spec = case.spec
    if spec.transposed:
        y = F.conv_transpose2d(x, w, None, spec.stride, [p for p, _ in spec.padding],
                               spec.output_padding, spec.groups, spec.dilation)
    else:
        y = F.conv2d(x, w, None, spec.stride, case.layer.padding, spec.dilation, spec.groups)
    gx, gw = torch.autograd.grad(y, (x, w), case.gy)
    assert_close(ref.input_vjp(case), gx)
    assert_close(ref.weight_vjp(case), gw)


def test_every_layer_has_an_adjoint_that_recovers_its_input_size():
    """Where torch's transposed convolution can express it (symmetric zero padding)."""
    for layer in LAYERS.values():
        tspec = make_case(replace(layer, batch=1), torch.device("cpu")).tspec
        expressible = layer.symmetric and layer.padding_mode == "zeros"
        if expressible and not layer.transposed:
            assert tspec.output_size == layer.spec().input_size
        assert (tspec is not None) == (expressible or layer.transposed)
