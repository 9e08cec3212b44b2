"""Caching: a second call reuses the compiled program; caches are bounded and thread-safe."""

from __future__ import annotations

import threading

import pytest
import torch

import tnconv
from tnconv.lower import lowering
from tnconv.runtime import interpreter
from tnconv.cache import LRUCache
from tests.helpers import assert_close, rand


def test_second_conv_call_reuses_program(monkeypatch):
    calls = {"lower": 0, "plan": 0}
    real_lower, real_plan = lowering.lower, interpreter.Bound.__init__

    def counting_lower(*args, **kwargs):
        calls["lower"] += 1
        return real_lower(*args, **kwargs)

    def counting_plan(self, *args, **kwargs):
        calls["plan"] += 1
        real_plan(self, *args, **kwargs)

    monkeypatch.setattr("tnconv.compiler.lower", counting_lower)
    monkeypatch.setattr(interpreter.Bound, "__init__", counting_plan)
    tnconv.clear_caches()
    x, w = rand(2, 3, 9, 9), rand(4, 3, 3, 3)
    first = tnconv.conv(x, w, padding=2, dilation=2, strategy="tn")
    assert calls == {"lower": 1, "plan": 1}
    second = tnconv.conv(rand(2, 3, 9, 9), rand(4, 3, 3, 3), padding=2, dilation=2, strategy="tn")
    assert calls == {"lower": 1, "plan": 1}
    assert first.shape == second.shape
    tnconv.conv(rand(5, 3, 9, 9), w, padding=2, dilation=2, strategy="tn")  # new batch size
    assert calls == {"lower": 2, "plan": 2}


def test_compile_returns_cached_object():
    spec = tnconv.ConvSpec(2, 2, kernel_size=3, input_size=(5,))
    assert tnconv.compile("unfold", spec) is tnconv.compile("unfold", spec)
    assert tnconv.compile("unfold", spec) is not tnconv.compile("unfold", spec, strategy="tn")


def test_lru_cache_is_bounded():
    cache = LRUCache(maxsize=2)
    for key in range(5):
        cache.get_or_create(key, lambda key=key: key * 10)
    assert len(cache) == 2
    assert cache.get_or_create(4, lambda: -1) == 40  # most recent kept
    assert cache.get_or_create(0, lambda: -1) == -1  # oldest evicted


def test_set_cache_size_bounds_registered_caches():
    try:
        tnconv.set_cache_size(3)
        for size in range(5, 12):
            tnconv.unfold(rand(1, 1, size), 2, strategy="tn")
        assert all(info["size"] <= 3 for info in tnconv.cache_info().values())
    finally:
        tnconv.set_cache_size(256)
    with pytest.raises(tnconv.TNConvError, match="'maxsize'"):
        tnconv.set_cache_size(0)


def test_set_cache_size_bounds_caches_created_later():
    from tnconv import cache

    try:
        tnconv.set_cache_size(3)
        later = cache.LRUCache(name="test_created_later")
        assert later.maxsize == 3 and tnconv.cache_info()["test_created_later"]["maxsize"] == 3
    finally:
        cache._REGISTRY.pop("test_created_later", None)
        tnconv.set_cache_size(256)
    assert cache.LRUCache().maxsize == 256


def test_threads_share_one_compiled_program():
    tnconv.clear_caches()
    x, w = rand(2, 3, 8, 8), rand(4, 3, 3, 3)
    expected = torch.nn.functional.conv2d(x, w, padding=1)
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append(tnconv.conv(x, w, padding=1, strategy="tn"))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        assert_close(r, expected)
    assert tnconv.cache_info()["plans"]["misses"] == 1


def test_a_cached_call_never_accepts_what_a_fresh_call_rejects():
    """True == 1 and 2.0 == 2 in Python: the call-site cache must still tell them apart."""
    x, w = rand(1, 2, 7, 7), rand(2, 2, 3, 3)
    g = tnconv.conv(x, w, stride=1)
    tnconv.conv_weight_vjp(x, w.shape, g, stride=1)
    tnconv.conv_input_vjp(x.shape, w, g, stride=1)
    xt = rand(1, 2, 5, 5)
    gt = tnconv.conv_transpose(xt, w, stride=1)
    tnconv.conv_transpose_weight_vjp(xt, w.shape, gt, stride=1)
    tnconv.conv_transpose_input_vjp(xt.shape, w, gt, stride=1)
    for call in (lambda: tnconv.conv_transpose_weight_vjp(xt, w.shape, gt, stride=True),
                 lambda: tnconv.conv_transpose_input_vjp(xt.shape, w, gt, groups=1.0),
                 lambda: tnconv.conv(x, w, stride=True),
                 lambda: tnconv.conv(x, w, stride=1, groups=1.0),
                 lambda: tnconv.conv_weight_vjp(x, w.shape, g, stride=True),
                 lambda: tnconv.conv_input_vjp(x.shape, w, g, dilation=1.0)):
        with pytest.raises(tnconv.TNConvError):
            call()


def test_a_cached_factor_never_accepts_what_a_fresh_call_rejects():
    """The factors' own call-site cache tells True from 1 for every option."""
    conv, x = torch.nn.Conv2d(2, 3, 3).double(), rand(3, 2, 6, 6)
    tnconv.kfac_reduce(conv, x, bias=True, group_average=True)
    tnconv.kfc(conv, x, bias=False, max_intermediate=1)
    for call in (lambda: tnconv.kfac_reduce(conv, x, bias=1, group_average=True),
                 lambda: tnconv.kfac_reduce(conv, x, bias=True, group_average=1),
                 lambda: tnconv.kfc(conv, x, bias=0, max_intermediate=1),
                 lambda: tnconv.kfc(conv, x, bias=False, max_intermediate=True)):
        with pytest.raises(tnconv.TNConvError):
            call()
    with pytest.raises(tnconv.TNConvError, match="'conv' got 'Linear'"):
        tnconv.kfac_reduce(torch.nn.Linear(2, 3), x)


def test_derivatives_set_up_once_per_call_site():
    tnconv.clear_caches()
    x, w = rand(2, 2, 7, 7), rand(3, 2, 3, 3)
    g = rand(2, 3, 5, 5)
    for _ in range(3):
        tnconv.conv_weight_vjp(x, w.shape, g)
        tnconv.conv_input_vjp(list(x.shape), w, g)
    assert tnconv.cache_info()["calls"]["misses"] == 2
    assert tnconv.cache_info()["calls"]["hits"] == 4
    with pytest.raises(tnconv.TNConvError, match="grad_output"):
        tnconv.conv_weight_vjp(x, w.shape, g[:1])


def test_clear_caches_empties_the_helper_caches_too():
    """The schedule's common sub-expressions, a sample's legs and the fewer-channel specs
    of a channel draw are named caches: `clear_caches` empties them (a compile-time
    measurement after it then plans from scratch)."""
    spec = tnconv.ConvSpec(4, 4, kernel_size=3, input_size=(8, 8), padding=1)
    x, g = rand(2, 4, 8, 8), rand(2, 4, 8, 8)
    for leg, strategy in (("channel", "auto"), ("spatial", "tn")):
        sample = tnconv.Sample(leg, 0.5, scheme="fixed")
        tnconv.compile("weight_vjp", spec, sample=sample, strategy=strategy)(x, g)
    helpers = ("repeated steps", "sampled legs", "fewer channels")
    assert all(tnconv.cache_info()[name]["size"] > 0 for name in helpers)
    tnconv.clear_caches()
    assert all(tnconv.cache_info()[name]["size"] == 0 for name in helpers)
