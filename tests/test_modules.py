"""tnconv.nn's drop-in modules against torch's own: construction, initialisation, state_dict,
outputs and gradients (float64), and `tnconv.nn.convert` both ways."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tnconv
import tnconv.nn.modules as modules
from tests.helpers import DEVICE, assert_close, rand

STRATEGIES = ("auto", "tn")
CONV_NAMES = ("Conv1d", "Conv2d", "Conv3d")
TRANSPOSED_NAMES = ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
SIZES = {1: (9,), 2: (7, 6), 3: (6, 5, 6)}


def _pair(name: str, seed: int, *args, strategy: str = "auto", **kwargs):
    """(torch module, tnconv module) built from the same arguments and the same seed."""
    kwargs = dict(kwargs, dtype=torch.float64, device=DEVICE)
    torch.manual_seed(seed)
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    torch.manual_seed(seed)
    ours = getattr(tnconv.nn, name)(*args, strategy=strategy, **kwargs)
    return theirs, ours


def _assert_same_computation(theirs, ours, x: torch.Tensor, **call) -> None:
    """Same output and the same gradients of input, weight and bias."""
    expected_x, actual_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, actual = theirs(expected_x, **call), ours(actual_x, **call)
    assert_close(actual, expected)
    g = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, (expected_x, *theirs.parameters()), g)
    actual_grads = torch.autograd.grad(actual, (actual_x, *ours.parameters()), g)
    assert len(actual_grads) == len(expected_grads)
    for a, e in zip(actual_grads, expected_grads):
        assert_close(a, e)


def _assert_same_state(theirs, ours) -> None:
    """Same parameters (values, initialisation) and state_dict keys in the same order."""
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, a), e in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert a.shape == e.shape and torch.equal(a, e), name


# ------------------------------------------------------------------ hyper-parameters
@st.composite
def conv_arguments(draw, ndim: int) -> tuple[tuple, dict]:
    """Positional and keyword arguments of torch.nn.ConvNd (every family its constructor takes)."""
    groups = draw(st.sampled_from([1, 2]))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    style = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    stride = 1 if style == "same" else tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    padding = {"int": draw(st.integers(0, 1)), "tuple": tuple(draw(st.integers(0, 1))
                                                              for _ in range(ndim)),
               "same": "same", "valid": "valid"}[style]
    kwargs = dict(stride=stride, padding=padding, groups=groups, bias=draw(st.booleans()),
                  dilation=tuple(draw(st.integers(1, 2)) for _ in range(ndim)),
                  padding_mode=draw(st.sampled_from(["zeros", "circular", "reflect", "replicate"])))
    if kwargs["padding_mode"] in ("reflect", "circular") and style in ("int", "tuple"):
        kwargs["padding"] = 1  # torch's reflect and circular pads need an input wider than that
    return (2 * groups, groups * draw(st.integers(1, 2)), kernel), kwargs


@st.composite
def transposed_arguments(draw, ndim: int) -> tuple[tuple, dict]:
    groups = draw(st.sampled_from([1, 2]))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    kwargs = dict(stride=stride, padding=draw(st.integers(0, 1)), output_padding=output_padding,
                  groups=groups, bias=draw(st.booleans()), dilation=dilation)
    return (2 * groups, groups * draw(st.integers(1, 2)), draw(st.integers(1, 3))), kwargs


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
@settings(max_examples=12)
@given(data=st.data())
def test_conv_modules_match_torch(ndim, strategy, data):
    args, kwargs = data.draw(conv_arguments(ndim))
    theirs, ours = _pair(f"Conv{ndim}d", data.draw(st.integers(0, 99)), *args,
                         strategy=strategy, **kwargs)
    _assert_same_state(theirs, ours)
    _assert_same_computation(theirs, ours, rand(data.draw(st.integers(1, 3)), args[0],
                                                *SIZES[ndim]))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("ndim", [1, 2, 3])
@settings(max_examples=12)
@given(data=st.data())
def test_transposed_modules_match_torch(ndim, strategy, data):
    args, kwargs = data.draw(transposed_arguments(ndim))
    theirs, ours = _pair(f"ConvTranspose{ndim}d", data.draw(st.integers(0, 99)), *args,
                         strategy=strategy, **kwargs)
    _assert_same_state(theirs, ours)
    _assert_same_computation(theirs, ours, rand(2, args[0], *SIZES[ndim][:ndim]))


@pytest.mark.parametrize("name", CONV_NAMES + TRANSPOSED_NAMES)
def test_unbatched_input(name):
    theirs, ours = _pair(name, 0, 2, 4, 3, padding=1)
    _assert_same_computation(theirs, ours, rand(2, *SIZES[int(name[-2])]))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("output_size", [[10, 9], [2, 3, 10, 9], torch.Size([9, 10])])
def test_transposed_output_size(strategy, output_size):
    theirs, ours = _pair("ConvTranspose2d", 1, 3, 2, 3, stride=2, padding=1, strategy=strategy)
    _assert_same_computation(theirs, ours, rand(2, 3, 5, 5), output_size=output_size)


def test_transposed_output_size_errors_name_the_argument():
    ours = tnconv.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    with pytest.raises(tnconv.TNConvError, match="'output_size' got \\[20, 20\\]"):
        ours(torch.rand(2, 3, 5, 5), output_size=[20, 20])
    ours.padding_mode = "reflect"  # set after construction, which torch's constructor refuses
    with pytest.raises(tnconv.TNConvError, match="'padding_mode' got 'reflect'"):
        ours(torch.rand(2, 3, 5, 5))


# ---------------------------------------------------------------- checkpoints, repr
@pytest.mark.parametrize("name", CONV_NAMES + TRANSPOSED_NAMES)
@pytest.mark.parametrize("bias", [True, False])
def test_checkpoints_load_strictly_both_ways(name, bias, tmp_path):
    torch_module = getattr(torch.nn, name)(4, 6, 3, groups=2, bias=bias)
    ours = getattr(tnconv.nn, name)(4, 6, 3, groups=2, bias=bias)
    torch.save(torch_module.state_dict(), tmp_path / "torch.pt")
    ours.load_state_dict(torch.load(tmp_path / "torch.pt"), strict=True)
    _assert_same_state(torch_module, ours)
    back = getattr(torch.nn, name)(4, 6, 3, groups=2, bias=bias)
    back.load_state_dict(ours.state_dict(), strict=True)
    _assert_same_state(back, ours)


def test_modules_are_torch_modules_with_torch_repr():
    ours = tnconv.nn.Conv2d(3, 8, 3, stride=2, padding_mode="reflect")
    assert isinstance(ours, torch.nn.Conv2d)
    assert repr(ours) == repr(torch.nn.Conv2d(3, 8, 3, stride=2, padding_mode="reflect"))
    assert repr(tnconv.nn.Conv1d(3, 8, 3, strategy="tn")).endswith("strategy='tn')")
    assert tnconv.kfc(ours, torch.rand(2, 3, 9, 9)).shape == (1, 28, 28)


@pytest.mark.parametrize("name", CONV_NAMES + TRANSPOSED_NAMES)
def test_forward_is_computed_by_tnconv(name, monkeypatch):
    called = []
    for function in ("conv", "conv_transpose"):
        original = getattr(modules, function)
        monkeypatch.setattr(modules, function, lambda *a, _f=original, _n=function, **k:
                            called.append(_n) or _f(*a, **k))
    ours = getattr(tnconv.nn, name)(2, 4, 3)
    ours(torch.rand(1, 2, *SIZES[int(name[-2])]))
    assert called == ["conv_transpose" if "Transpose" in name else "conv"]


def test_bad_strategy_is_a_clear_error():
    with pytest.raises(tnconv.TNConvError, match="tnconv.nn.Conv2d: argument 'strategy'"):
        tnconv.nn.Conv2d(3, 8, 3, strategy="fast")
    with pytest.raises(tnconv.TNConvError, match="tnconv.nn.convert: argument 'strategy'"):
        tnconv.nn.convert(torch.nn.Conv2d(3, 8, 3), strategy="fast")
    with pytest.raises(tnconv.TNConvError, match="argument 'model'"):
        tnconv.nn.convert("resnet")


# -------------------------------------------------------------------------- convert
class _Net(torch.nn.Module):
    """Every conv class, nested containers, a shared layer, a subclass convert must skip."""

    class OwnConv(torch.nn.Conv2d):
        pass

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv1d(2, 4, 3, padding=1, padding_mode="circular")
        self.t1 = torch.nn.ConvTranspose1d(4, 2, 3, stride=2)
        self.c2 = torch.nn.Conv2d(2, 4, 3, padding="same", padding_mode="reflect")
        shared = torch.nn.Conv2d(4, 4, 3, padding=1, groups=2)
        self.body = torch.nn.Sequential(shared, torch.nn.ReLU(),
                                        torch.nn.Sequential(shared, torch.nn.Tanh()))
        self.heads = torch.nn.ModuleList([torch.nn.ConvTranspose2d(4, 2, 2, stride=2)])
        self.own = self.OwnConv(2, 2, 1)
        self.c3 = torch.nn.Conv3d(1, 2, 2)
        self.t3 = torch.nn.ConvTranspose3d(2, 1, 2)

    def forward(self, x1, x2, x3):
        y1 = self.t1(torch.relu(self.c1(x1)))
        y2 = self.own(self.heads[0](self.body(self.c2(x2))))
        return y1.sum() + y2.square().sum() + self.t3(self.c3(x3)).sum()


def _inputs():
    return rand(2, 2, 8), rand(2, 2, 6, 6), rand(2, 1, 4, 4, 4)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_convert_swaps_every_conv_sharing_parameters(strategy):
    model = _Net().double().to(DEVICE)
    before = dict(model.named_parameters())
    inputs = _inputs()
    expected = model(*inputs)
    expected_grads = torch.autograd.grad(expected, list(before.values()))
    converted = tnconv.nn.convert(model, strategy=strategy)
    assert converted is model
    for module in (model.c1, model.t1, model.c2, model.heads[0], model.c3, model.t3):
        assert type(module) is getattr(tnconv.nn, type(module).__name__)
        assert module.strategy == strategy
    assert type(model.body[0]) is tnconv.nn.Conv2d and model.body[0] is model.body[2][0]
    assert type(model.own) is _Net.OwnConv
    after = dict(model.named_parameters())
    assert list(after) == list(before) and all(after[k] is before[k] for k in before)
    actual = model(*inputs)
    assert_close(actual, expected)
    for a, e in zip(torch.autograd.grad(actual, list(after.values())), expected_grads):
        assert_close(a, e)
    assert tnconv.nn.convert(model, reverse=True) is model
    assert type(model.c2) is torch.nn.Conv2d and not hasattr(model.c2, "strategy")
    assert all(type(m).__module__.startswith("torch") or type(m) is _Net.OwnConv
               for m in model.modules() if m is not model)
    assert_close(model(*inputs), expected)


def test_convert_a_single_layer_keeps_its_hooks_and_buffers():
    layer = torch.nn.Conv2d(2, 3, 3)
    layer.register_buffer("scale", torch.ones(1))
    seen = []
    layer.register_forward_hook(lambda module, args, out: seen.append(type(module)))
    twin = tnconv.nn.convert(layer, strategy="tn")
    assert type(twin) is tnconv.nn.Conv2d and type(layer) is torch.nn.Conv2d
    assert twin.weight is layer.weight and twin.scale is layer.scale
    assert list(twin.state_dict()) == list(layer.state_dict())
    twin(torch.rand(1, 2, 5, 5))
    assert seen == [tnconv.nn.Conv2d]
    back = tnconv.nn.convert(twin, reverse=True)
    assert type(back) is torch.nn.Conv2d and back.weight is layer.weight


def test_convert_leaves_the_optimizer_working():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.Flatten(),
                                torch.nn.Linear(27, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    tnconv.nn.convert(model)
    before = model[0].weight.detach().clone()
    model(torch.rand(4, 2, 5, 5)).sum().backward()
    optimizer.step()
    assert not torch.equal(model[0].weight, before)
