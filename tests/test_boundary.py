"""The public boundary (issue 17): dtype, device, module attributes, messages in the caller's
terms, the size guard and the caches, each defect's reproducer turned into a test."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

import tnconv
from tnconv import TNConvError
from tnconv.limits import DEFAULT_SIZE_LIMIT, size_limit
from tnconv.nn import functional as TF
from tests.helpers import assert_close, rand

STRATEGIES = ("auto", "tn")
X, W, G = (2, 4, 8, 8), (6, 4, 3, 3), (2, 6, 6, 6)


# ------------------------------------------------------------ dtype (defects 1, 5)
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_compiled_kfac_reduce_refuses_integer_bool_and_complex_input(strategy, dtype):
    spec = tnconv.ConvSpec(1, 2, kernel_size=3, input_size=(3,))
    x = torch.tensor([[[1, 2, 4]], [[3, 0, 1]]]).to(dtype)
    with pytest.raises(TNConvError, match=r"compile\('kfac_reduce'\): argument 'input'.*"
                                          r"not promoted"):
        tnconv.compile("kfac_reduce", spec, strategy=strategy)(x)


def _every_entry_point(x: torch.Tensor, w: torch.Tensor, g: torch.Tensor) -> list:
    conv = torch.nn.Conv2d(4, 6, 3)
    return [
        lambda: tnconv.conv(x, w), lambda: tnconv.unfold(x, 3),
        lambda: tnconv.conv_input_vjp(X, w, g), lambda: tnconv.conv_weight_vjp(x, W, g),
        lambda: tnconv.conv_input_jvp(x, w), lambda: tnconv.conv_weight_jvp(x, w),
        lambda: tnconv.conv_transpose(g, w), lambda: tnconv.conv_transpose_input_vjp(G, w, x),
        lambda: tnconv.conv_transpose_weight_vjp(g, W, x),
        lambda: tnconv.fold(tnconv.unfold(rand(*X), 3).to(x.device, x.dtype), (8, 8), 3),
        lambda: tnconv.unfold_transpose(x, 3),
        lambda: tnconv.kfc(conv, x), lambda: tnconv.kfac_reduce(conv, x),
        lambda: tnconv.patches(conv, x), lambda: tnconv.averaged_patches(conv, x),
        lambda: TF.kfc(x, 3), lambda: TF.kfac_reduce(x, 3), lambda: TF.patches(x, 3),
        lambda: TF.averaged_patches(x, 3),
        lambda: tnconv.compile("forward", tnconv.ConvSpec(4, 6, 3, (8, 8)))(x, w),
    ]


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.uint8, torch.complex128])
@pytest.mark.parametrize("index", range(20))
def test_every_entry_point_refuses_non_float_tensors_the_same_way(dtype, index):
    x, w, g = rand(*X).to(dtype), rand(*W).to(dtype), rand(*G).to(dtype)
    call = _every_entry_point(x, w, g)[index]
    with pytest.raises(TNConvError, match="real floating-point.*not promoted"):
        call()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fold_of_a_bool_tensor_is_refused_not_or_ed(strategy):
    with pytest.raises(TNConvError, match="fold: argument 'x'.*torch.bool"):
        tnconv.fold(torch.ones(1, 4, 4, dtype=torch.bool), (3, 3), 2, strategy=strategy)
    counts = tnconv.fold(torch.ones(1, 4, 4, dtype=torch.float64), (3, 3), 2,
                         strategy=strategy)
    assert counts[0, 0].tolist() == [[1, 2, 1], [2, 4, 2], [1, 2, 1]]


# --------------------------------------------------------------- device (defect 2)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_mixed_devices_are_named(strategy):
    x, w = torch.rand(1, 1, 5), torch.rand(1, 1, 3)
    with pytest.raises(TNConvError, match="'weight' got 'tensor on device meta'.*cpu, the "
                                          "device of x"):
        tnconv.conv(x, w.to("meta"), strategy=strategy)
    tnconv.conv(x, w, strategy=strategy)  # cached for cpu tensors of these shapes...
    with pytest.raises(TNConvError, match="'weight'.*device meta"):  # ...not for meta
        tnconv.conv(x, w.to("meta"), strategy=strategy)
    with pytest.raises(TNConvError, match="'bias' got 'tensor on device meta'"):
        tnconv.conv(x, w, bias=torch.rand(1, device="meta"), strategy=strategy)
    with pytest.raises(TNConvError, match="'grad_output'.*device meta"):
        tnconv.conv_input_vjp((1, 1, 5), w, torch.rand(1, 1, 3, device="meta"))
    spec = tnconv.ConvSpec(1, 1, 3, (5,))
    with pytest.raises(TNConvError, match="compile\\('forward'\\): argument 'weight'.*meta"):
        tnconv.compile("forward", spec, strategy=strategy)(x, w.to("meta"))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("index", range(20))
def test_meta_tensors_give_meta_results_of_the_right_shape(strategy, index):
    x, w, g = rand(*X), rand(*W), rand(*G)
    real = _every_entry_point(x, w, g)[index]()
    meta = _every_entry_point(x.to("meta"), w.to("meta"), g.to("meta"))[index]()
    assert meta.device.type == "meta"
    assert meta.shape == real.shape and meta.dtype == real.dtype


@pytest.mark.parametrize("mode", ["reflect", "circular", "replicate"])
def test_meta_unfold_with_padding_modes(mode):
    x = torch.rand(1, 1, 4, 4, device="meta")
    u = tnconv.unfold(x, 2, padding=1, padding_mode=mode, strategy="tn")
    assert u.device.type == "meta" and u.shape == (1, 4, 25)


# ------------------------------------------------------ module attributes (4, 3)
@pytest.mark.parametrize("factor", [tnconv.kfc, tnconv.kfac_reduce, tnconv.patches,
                                    tnconv.averaged_patches])
@pytest.mark.parametrize("attribute, value", [
    ("groups", 0), ("groups", None), ("groups", True), ("groups", 2.0), ("groups", 2),
    ("in_channels", None), ("out_channels", 0), ("stride", (0, 1)), ("stride", None),
    ("padding_mode", "bogus"), ("dilation", (1.0, 1.0)),
])
def test_module_attributes_are_checked_before_use(factor, attribute, value):
    conv, x = torch.nn.Conv2d(3, 3, 2, groups=3), rand(2, 3, 4, 4)
    factor(conv, x)  # the set-up of the valid module is cached
    setattr(conv, attribute, value)
    with pytest.raises(TNConvError, match=rf"argument 'conv' got .*{attribute}"):
        factor(conv, x)


def test_a_module_whose_groups_became_true_is_not_answered_by_groups_one():
    conv, x = torch.nn.Conv2d(2, 2, 3), rand(2, 2, 5, 5)
    tnconv.kfac_reduce(conv, x)
    conv.groups = True  # True == 1 and hash(True) == hash(1): the key must tell them apart
    with pytest.raises(TNConvError, match="'conv'.*groups=True"):
        tnconv.kfac_reduce(conv, x)


# ------------------------------------------------------------ messages (defect 11)
@pytest.mark.parametrize("call, argument", [
    (lambda: tnconv.conv(rand(1, 1, 4, 4), rand(1, 1, 5, 5)), "weight"),
    (lambda: TF.kfc(rand(2, 3, 8), 3, groups=2 ** 31), "groups"),
    (lambda: TF.kfac_reduce(rand(2, 3, 8), 3, groups=2), "x"),
    (lambda: tnconv.conv_weight_vjp(rand(1, 1, 4), (1, 1, 5), rand(1, 1, 1)), "weight_size"),
    (lambda: tnconv.conv_input_vjp((1, 1, 4), rand(1, 1, 5), rand(1, 1, 1)), "weight"),
    (lambda: tnconv.conv_input_jvp(rand(1, 1, 4), rand(1, 1, 5)), "weight"),
    (lambda: tnconv.conv_weight_jvp(rand(1, 1, 4), rand(1, 1, 5)), "weight_tangent"),
    (lambda: tnconv.conv(rand(1, 0, 4), rand(1, 0, 3)), "x"),
    (lambda: tnconv.unfold(rand(1, 1, 4), 3, padding=4, padding_mode="reflect"), "padding"),
    (lambda: tnconv.fold(rand(1, 4, 1), (1, 1), 2), "kernel_size"),
    (lambda: tnconv.fold(rand(1, 4, 1), (1, 0), 2), "output_size"),
    (lambda: tnconv.kfc(torch.nn.Conv1d(1, 1, 5), rand(1, 1, 4)), "conv"),
    (lambda: TF.averaged_patches(rand(1, 2, 5), 3, padding="valid", transposed="False"),
     "transposed"),  # checked before it is read as a flag
])
def test_messages_name_the_argument_the_caller_passed(call, argument):
    with pytest.raises(TNConvError) as info:
        call()
    message = str(info.value)
    assert message.startswith("tnconv.") and f"argument '{argument}'" in message, message
    assert "ConvSpec" not in message, message


def test_convspec_callers_still_see_convspec_fields():
    with pytest.raises(TNConvError, match="^ConvSpec: argument 'kernel_size'"):
        tnconv.ConvSpec(1, 1, kernel_size=5, input_size=(4,))


# ------------------------------------------------------------ size guard (defect 6)
@pytest.fixture
def size_limit_restored():
    before = size_limit()
    yield
    tnconv.set_size_limit(before)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("call", [
    lambda s: tnconv.conv(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 3, 3), padding=2 ** 31 - 1,
                          strategy=s),
    lambda s: tnconv.unfold(torch.rand(1, 1, 2, 2, 2, 2), 2 ** 20, padding="same", strategy=s),
    lambda s: TF.kfc(torch.rand(1, 1, 8), 3, padding=2 ** 30, strategy=s),
    lambda s: tnconv.conv_transpose(torch.rand(1, 1, 2, 2), torch.rand(1, 1, 1, 1),
                                    stride=2 ** 31 - 1, strategy=s),
    lambda s: tnconv.fold(torch.rand(1, 1, 1), (2 ** 30, 2 ** 30), 1, stride=2 ** 30,
                          strategy=s),
    lambda s: tnconv.compile("forward", tnconv.ConvSpec(1, 1, 3, (8,), padding=2 ** 31 - 1),
                             strategy=s)(torch.rand(1, 1, 8), torch.rand(1, 1, 3)),
    lambda s: tnconv.compile("kfac_reduce", tnconv.ConvSpec(1, 1, 3, (8,), padding=2 ** 30),
                             strategy="tn")(torch.rand(1, 1, 8)),
])
def test_oversized_requests_are_refused_before_allocating(strategy, call):
    tracemalloc.start()
    try:
        with pytest.raises(TNConvError, match="elements; allowed: at most .*set_size_limit"):
            call(strategy)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 ** 24, peak  # numpy's tables are traced: nothing large was built


def test_the_size_limit_is_configurable(size_limit_restored):
    x, w = rand(2, 2, 9, 9), rand(3, 2, 3, 3)
    expected = tnconv.conv(x, w)  # 2·3·7·7 = 294 elements; the set-up is now cached
    tnconv.set_size_limit(293)
    with pytest.raises(TNConvError, match=r"shape \(2, 3, 7, 7\), 294 elements; allowed: at "
                                          r"most 293"):
        tnconv.conv(x, w)  # a lowered bound empties the caches: no stale set-up answers
    tnconv.set_size_limit(294)
    assert_close(tnconv.conv(x, w), expected)
    for bad in (0, -1, True, 2.5, None):
        with pytest.raises(TNConvError, match="set_size_limit: argument 'elements'"):
            tnconv.set_size_limit(bad)
    assert "set_size_limit" in tnconv.__all__ and DEFAULT_SIZE_LIMIT == 2 ** 31


def test_index_pattern_tables_are_guarded(size_limit_restored):
    pattern = tnconv.IndexPattern(3, 1, 1, (0, 0), input_size=40, output_size=38)
    tnconv.set_size_limit(100)
    with pytest.raises(TNConvError, match="IndexPattern: the tap table"):
        pattern.source_indices()  # 3·38 = 114 entries
    tnconv.set_size_limit(200)
    assert pattern.source_indices().shape == (3, 38)
    with pytest.raises(TNConvError, match="IndexPattern: the dense pattern"):
        pattern.to_numpy()  # 3·38·40 entries


# --------------------------------------------------------------- caches (defect 13)
def test_pattern_tables_are_in_the_cache_registry():
    pattern = tnconv.IndexPattern(3, 2, 1, (1, 1), input_size=9, output_size=5)
    table = pattern.source_indices()
    assert pattern.source_indices() is table
    assert tnconv.cache_info()["pattern_sources"]["size"] >= 1
    tnconv.clear_caches()
    assert tnconv.cache_info()["pattern_sources"]["size"] == 0
    assert np.array_equal(pattern.source_indices(), table)
    try:
        tnconv.set_cache_size(2)
        for size in range(10, 20):
            tnconv.IndexPattern(3, 1, 1, (0, 0), size, size - 2).source_indices()
        assert tnconv.cache_info()["pattern_sources"]["size"] == 2
    finally:
        tnconv.set_cache_size(256)
