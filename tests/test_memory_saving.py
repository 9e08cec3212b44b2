"""Memory-saving autograd of tnconv's layers: a frozen layer keeps no input for backward and
lets it be freed; an input that needs no gradient gets no input VJP. The probe
(`saved_tensors_hooks`) is shown to see torch's own layer keep its input."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import tnconv
import tnconv.nn.autograd as conv_autograd
from benchmarks import frozen_memory
from tests.helpers import DEVICE, assert_close, rand

NAMES = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
STRATEGIES = ("auto", "tn")


def _layer(library, name: str, frozen: bool = True, strategy: str = "auto"):
    kwargs = {} if library is torch.nn else {"strategy": strategy}
    layer = getattr(library, name)(4, 6, 3, padding=1, groups=2, dtype=torch.float64,
                                   device=DEVICE, **kwargs)
    return layer.requires_grad_(not frozen)


def _input(name: str, requires_grad: bool = True) -> torch.Tensor:
    """A non-leaf input (the output of an earlier layer), as in a network."""
    leaf = rand(2, 4, *(5,) * int(name[-2])).requires_grad_(requires_grad)
    return leaf * 2


def _saved(call) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`call()`'s result and every tensor autograd packed for its backward."""
    packed: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        packed.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        return call(), packed


def _keeps(packed: list[torch.Tensor], x: torch.Tensor) -> bool:
    """Whether x, or a view of its memory, is among the packed tensors."""
    return any(t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr() for t in packed)


@pytest.mark.parametrize("name", NAMES)
def test_the_probe_sees_torch_keep_the_input_of_a_frozen_layer(name):
    x = _input(name)
    _, packed = _saved(lambda: _layer(torch.nn, name)(x))
    assert _keeps(packed, x)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", NAMES)
def test_frozen_layer_keeps_no_input(name, strategy):
    layer, x = _layer(tnconv.nn, name, strategy=strategy), _input(name)
    y, packed = _saved(lambda: layer(x))
    assert not _keeps(packed, x)
    assert any(t is layer.weight for t in packed)  # the input VJP needs the weight
    reference = _layer(torch.nn, name)
    reference.load_state_dict(layer.state_dict())
    g = torch.randn_like(y)
    assert_close(torch.autograd.grad(y, x, g)[0], torch.autograd.grad(reference(x), x, g)[0])


@pytest.mark.parametrize("name", NAMES)
def test_trainable_layer_keeps_its_input_and_not_a_weight_nobody_differentiates(name):
    layer, x = _layer(tnconv.nn, name, frozen=False), _input(name, requires_grad=False)
    _, packed = _saved(lambda: layer(x))
    assert _keeps(packed, x) and not any(t is layer.weight for t in packed)


@pytest.mark.parametrize("name", NAMES)
def test_frozen_layer_lets_its_input_be_freed(name):
    layer, x = _layer(tnconv.nn, name), _input(name)
    alive = weakref.ref(x)
    y = layer(x)
    del x
    gc.collect()
    assert alive() is None
    y.sum().backward()


def test_the_weakref_probe_sees_torch_keep_the_input_alive():
    layer, x = _layer(torch.nn, "Conv2d"), _input("Conv2d")
    alive = weakref.ref(x)
    y = layer(x)
    del x
    gc.collect()
    assert alive() is not None
    del y


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("frozen, input_grad, wanted", [
    (True, True, ["input_vjp"]), (False, False, ["weight_vjp"]),
    (False, True, ["input_vjp", "weight_vjp"])])
def test_backward_runs_only_the_vjps_needed(monkeypatch, strategy, frozen, input_grad, wanted):
    compiled = []

    def spy(op, spec, **kwargs):
        compiled.append(op)
        return tnconv.compile(op, spec, **kwargs)

    layer = _layer(tnconv.nn, "Conv2d", frozen=frozen, strategy=strategy)
    y = layer(_input("Conv2d", requires_grad=input_grad))
    monkeypatch.setattr(conv_autograd, "compile", spy)
    y.square().sum().backward()
    assert compiled == wanted


@pytest.mark.parametrize("name", ["Conv1d", "ConvTranspose1d"])
def test_frozen_layer_keeps_double_backward_and_forward_mode(name):
    layer = _layer(tnconv.nn, name)
    reference = _layer(torch.nn, name)
    reference.load_state_dict(layer.state_dict())
    x = rand(2, 4, 5).requires_grad_()
    assert gradcheck(lambda v: layer(v).square(), (x,))
    assert gradgradcheck(lambda v: layer(v).square(), (x,))
    tangent = torch.randn_like(x)
    ours = torch.func.jvp(lambda v: layer(v).square(), (x.detach(),), (tangent,))[1]
    theirs = torch.func.jvp(lambda v: reference(v).square(), (x.detach(),), (tangent,))[1]
    assert_close(ours, theirs)


def test_frozen_cnn_keeps_none_of_its_conv_inputs():
    """Through a network: torch keeps every frozen conv's input, tnconv's twins none."""
    found = {}
    for library in ("torch", "tnconv"):
        model = frozen_memory.frozen_cnn(channels=4, depth=3, activation="mask_relu",
                                         layers=library).double().to(DEVICE)
        inputs = []
        for conv in model.frozen:
            conv.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
        x = rand(2, 3, 8, 8)
        y, packed = _saved(lambda: model(x))
        found[library] = [_keeps(packed, t) for t in inputs]
        y.sum().backward()
        assert all(p.grad is None for p in model.frozen.parameters())
        assert model.stem.weight.grad is not None
    assert found == {"torch": [True] * 3, "tnconv": [False] * 3}


def test_frozen_memory_benchmark_writes_its_table(tmp_path):
    """The benchmark's machinery on a tiny network (no assertion on the numbers it measures)."""
    assert frozen_memory.main(["--batch", "2", "--channels", "4", "--size", "8",
                               "--depth", "2", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "frozen_memory.md").read_text()
    assert "python -m benchmarks.frozen_memory --batch 2" in table
    for fragment in ("| torch.nn | ReLU |", "| tnconv.nn | mask ReLU |", "saved"):
        assert fragment in table


def test_frozen_memory_doctests():
    import doctest

    result = doctest.testmod(frozen_memory)
    assert result.attempted > 0 and result.failed == 0
