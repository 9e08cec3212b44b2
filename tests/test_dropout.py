"""Tensor dropout at the front-end: `tnconv.Sample`, sampled VJPs and KFC, approximate backprop.

Unbiasedness is a z-test per entry. The mean of D independent draws has standard
error σ/√D, estimated from the draws themselves; by the central limit theorem
|mean − exact| ≤ Z·σ̂/√D holds for an unbiased estimator with probability about
1 − 2·10⁻⁹ per entry at Z = 6, so over the few hundred entries of these small
layers a correct estimator fails with probability below 10⁻⁶ (and the
generators are seeded, so each outcome is fixed). A bias b is detected once
|b| > Z·σ/√D for some entry: with D = 300 draws that is |b| > 0.35σ. Forgetting
the rescaling gives b = (1 − q)·exact, far above that at keep = 0.5, and every
test runs that wrong variant through the same check and asserts that it fails.
"""

from __future__ import annotations

import math

import pytest
import torch

import tnconv
from tests.helpers import DEVICE, assert_close, rand
from tnconv.sampling import BUCKETS, draw

Z = 6.0
DRAWS = 300
SPEC = dict(stride=1, padding=1)


def unbiased(draws: list[torch.Tensor], exact: torch.Tensor) -> bool:
    """The z-test of the module docstring, entry by entry."""
    stack = torch.stack(draws)
    mean, error = stack.mean(0), stack.std(0) / math.sqrt(len(draws))
    slack = 1e-12 * exact.abs().max()
    return bool(((mean - exact).abs() <= Z * error + slack).all())


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _wrong_draws(compiled, sample, tensors, legs):
    """The estimator that forgets the rescaling: the same draws, every kept weight 1."""
    draws = []
    for _ in range(DRAWS):
        counts, index, weights = draw(sample, [size for _, size in legs])
        unit = (weights > 0).to(tensors[0].dtype).to(DEVICE)
        draws.append(compiled.compiled_for(counts).run(*tensors, index.to(DEVICE), unit))
    return draws


def _auto_and_tn(monkeypatch, shape, size, options, sample):
    """(the options of each call of the native sampled weight VJP, the estimates with
    strategy "auto" and "tn" of the same draw: `sample()` makes a fresh, seeded Sample for
    each) for an input of `shape` and a weight of `size` (`options` may say
    `transposed=True`)."""
    import tnconv.runtime.native as native

    calls = []
    kernel = native.sampled_weight_vjp
    monkeypatch.setattr(native, "sampled_weight_vjp",
                        lambda *a: calls.append(a[1]) or kernel(*a))
    tnconv.clear_caches()
    x, options = rand(*shape), dict(options)
    transposed = options.pop("transposed", False)
    out_channels = size[1] * options.get("groups", 1) if transposed else size[0]
    spec = tnconv.ConvSpec(shape[1], out_channels, size[2:], input_size=shape[2:],
                           transposed=transposed, **options)
    g = rand(shape[0], out_channels, *spec.output_size)
    vjp = tnconv.conv_transpose_weight_vjp if transposed else tnconv.conv_weight_vjp
    return calls, [vjp(x, size, g, **options, strategy=strategy, sample=sample())
                   for strategy in ("auto", "tn")]


@pytest.mark.parametrize("leg, route, dims", [
    ("spatial", "sliced", (0,)), ("spatial", "sliced", (1,)), ("spatial", "sliced", "all"),
    ("spatial", "masked", (0,)), ("spatial", "masked", "all"), ("channel", "auto", (0,))])
@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
def test_sampled_weight_vjp_is_unbiased_and_the_unscaled_one_is_not(leg, route, dims, scheme):
    x, g = rand(2, 4, 6, 5), rand(2, 3, 6, 5)
    exact = tnconv.conv_weight_vjp(x, (3, 4, 3, 3), g, **SPEC)
    sample = tnconv.Sample(leg, keep=0.5, generator=_generator(), scheme=scheme, route=route,
                           spatial_dims=dims)
    draws = [tnconv.conv_weight_vjp(x, (3, 4, 3, 3), g, **SPEC, sample=sample)
             for _ in range(DRAWS)]
    assert unbiased(draws, exact)
    compiled = tnconv.compile("weight_vjp", tnconv.ConvSpec(4, 3, 3, input_size=(6, 5),
                                                            padding=1), sample=sample)
    assert not unbiased(_wrong_draws(compiled, sample, (x, g), compiled.legs(2)), exact)


@pytest.mark.parametrize("route", ["sliced", "masked"])
def test_transposed_weight_vjp_is_unbiased(route):
    x, g = rand(2, 4, 5, 4), rand(2, 6, 10, 8)
    size = (4, 3, 3, 3)
    options = dict(stride=2, padding=1, output_padding=1, groups=2)
    exact = tnconv.conv_transpose_weight_vjp(x, size, g, **options)
    sample = tnconv.Sample("spatial", keep=0.5, generator=_generator(1), scheme="fixed",
                           route=route)
    draws = [tnconv.conv_transpose_weight_vjp(x, size, g, **options, sample=sample)
             for _ in range(DRAWS)]
    assert unbiased(draws, exact)


@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
@pytest.mark.parametrize("shape, size, options", [
    ((2, 4, 9), (6, 2, 3), dict(stride=2, padding=1, groups=2)),
    ((2, 3, 6, 5), (4, 3, 3, 2), dict(padding=1, dilation=(2, 1))),
    ((1, 2, 4, 5, 3), (2, 1, 2, 3, 2), dict(padding=1, groups=2)),
    ((2, 2, 4, 3, 5), (3, 2, 3, 3, 3), dict(padding=(1, 0, 1))),  # a size-1 leg, not sliced
])
def test_masked_and_sliced_routes_give_the_same_estimate(scheme, shape, size, options):
    """The same draw (the same seed) through either route is the same estimate, to rounding:
    the masked route is the exact VJP of the masked, rescaled cotangent."""
    x = rand(*shape)
    spec = tnconv.ConvSpec(shape[1], size[0], size[2:], input_size=shape[2:], **options)
    g = rand(shape[0], size[0], *spec.output_size)
    for seed in range(3):
        results = [tnconv.conv_weight_vjp(x, size, g, **options, sample=tnconv.Sample(
            "spatial", 0.4, generator=_generator(seed), scheme=scheme, route=route))
            for route in ("sliced", "masked")]
        assert_close(results[0], results[1])


@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
@pytest.mark.parametrize("shape, size, options", [
    ((2, 4, 9, 8), (4, 2, 3, 3), dict(padding=1, groups=2)),
    ((2, 3, 11, 10), (4, 3, 3, 2), dict(padding=(1, 2), stride=(2, 1), dilation=(1, 2))),
    ((1, 4, 6, 5, 4), (2, 2, 2, 3, 2), dict(padding=1, groups=2)),
    ((2, 3, 7), (3, 3, 3), dict(padding=2, padding_mode="reflect", stride=2)),
    ((2, 4, 5, 4), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=2,
                                      transposed=True)),
])
def test_channel_draws_run_torchs_kernel_on_the_kept_channels(scheme, shape, size, options,
                                                              monkeypatch):
    """With strategy "auto" a channel draw is torch's weight-gradient kernel of the
    convolution of the kept channels (the operation's native route): the same estimate,
    draw for draw, as the sliced network on the tensor-network route."""
    calls, results = _auto_and_tn(monkeypatch, shape, size, options, lambda: tnconv.Sample(
        "channel", 0.5, scheme=scheme, generator=_generator(9)))
    assert len(calls) == 1
    assert_close(results[0], results[1])


@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
@pytest.mark.parametrize("shape, size, options, dims", [
    ((2, 4, 9, 8), (4, 2, 3, 3), dict(padding=1, groups=2), (0,)),
    ((2, 3, 11, 10), (4, 3, 3, 2), dict(padding=(1, 2), stride=(2, 1), dilation=(1, 2)), (0,)),
    ((2, 3, 11, 10), (4, 3, 3, 2), dict(padding=(1, 2), stride=(2, 1), dilation=(1, 2)), (1,)),
    ((1, 4, 6, 5, 4), (2, 2, 2, 3, 2), dict(padding=1, groups=2), (2,)),
    ((2, 3, 7, 6), (3, 3, 3, 3), dict(padding=2, padding_mode="reflect", stride=2), (0,)),
    ((2, 4, 5, 4), (4, 3, 3, 3), dict(stride=2, padding=1, output_padding=1, groups=2,
                                      transposed=True), (0,)),
    ((2, 4, 5, 4), (4, 3, 2, 3), dict(stride=(1, 2), padding=(0, 1), output_padding=(0, 1),
                                      dilation=(2, 1), transposed=True), (1,)),
    ((2, 4, 9), (6, 2, 3), dict(padding=1, groups=2, dilation=2), (0,)),  # 1d
    ((3, 1, 17), (5, 1, 4), dict(stride=3), (0,)),  # 1d, one input channel
    ((2, 3, 8), (3, 6, 3), dict(stride=2, padding=1, output_padding=1, groups=3,
                                transposed=True), (0,)),  # 1d transposed
    ((2, 4, 9, 8), (4, 1, 3, 3), dict(padding=1, groups=4, stride=2), (0,)),  # depthwise
    ((2, 3, 8, 7), (4, 3, 4, 2), dict(padding="same"), (0,)),  # asymmetric along dim 0
    ((2, 3, 8, 7), (4, 3, 3, 4), dict(padding="same", dilation=(2, 1)), (0,)),  # ... dim 1
    ((2, 3, 6, 7), (4, 3, 3, 3), dict(padding=(3, 1), padding_mode="circular"), (1,)),
    ((2, 4, 6, 7), (4, 1, 3, 3), dict(padding=1, groups=4), (1,)),  # depthwise, last dim
])
def test_spatial_draws_of_one_dim_run_torchs_kernel_on_the_strips(scheme, shape, size, options,
                                                                  dims, monkeypatch):
    """With strategy "auto" a spatial draw of one dim is torch's weight-gradient kernel on
    the strips the kept positions read, laid end to end (stride K along the dim): the
    same estimate, draw for draw, as the sliced network on the tensor-network route."""
    calls, results = _auto_and_tn(monkeypatch, shape, size, options, lambda: tnconv.Sample(
        "spatial", 0.5, scheme=scheme, generator=_generator(9), spatial_dims=dims,
        route="sliced"))
    assert len(calls) == 1
    assert_close(results[0], results[1])


@pytest.mark.parametrize("shape, size, options, dims", [
    ((2, 4, 9, 8), (4, 2, 3, 3), dict(padding=1, groups=2), "all"),
    ((1, 2, 5, 6, 4), (2, 2, 2, 3, 2), dict(padding=1), (0, 2)),
])
def test_strips_stay_off_where_several_dims_are_sliced(shape, size, options, dims,
                                                       monkeypatch):
    """Kept positions of several dims read no strips: the sliced network runs, and the
    auto route gives the tensor-network route's estimate, draw for draw."""
    from tnconv.runtime.native import sampled_weight_vjp_applies

    spec = tnconv.ConvSpec(shape[1], size[0], size[2:], input_size=shape[2:], **options)
    calls, results = _auto_and_tn(monkeypatch, shape, size, options, lambda: tnconv.Sample(
        "spatial", 0.5, generator=_generator(3), spatial_dims=dims, route="sliced"))
    assert all(sampled_weight_vjp_applies(spec, o) is False for o in calls)
    assert results[0].shape == results[1].shape == size
    assert_close(results[0], results[1])


def test_transposed_routes_mask_the_input():
    """A transposed convolution's spatial leg is its input's positions: both routes agree."""
    x, g = rand(2, 4, 5, 4), rand(2, 6, 10, 8)
    options = dict(stride=2, padding=1, output_padding=1, groups=2)
    results = [tnconv.conv_transpose_weight_vjp(x, (4, 3, 3, 3), g, **options,
                                                sample=tnconv.Sample(
                                                    "spatial", 0.5, generator=_generator(5),
                                                    route=route))
               for route in ("sliced", "masked")]
    assert_close(results[0], results[1])


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("scheme", ["bernoulli", "fixed"])
def test_a_channel_draw_masked_or_sliced_is_the_same_estimate(scheme, transposed):
    """A channel draw's masked route is the exact VJP of the input with the dropped
    channels of every group zeroed and the kept ones rescaled: the sliced route's estimate."""
    x = rand(2, 6, 7, 6)
    options = dict(padding=1, groups=3)
    if transposed:
        size, vjp = (6, 2, 3, 3), tnconv.conv_transpose_weight_vjp
        g = rand(2, 6, 9, 8)
        options = dict(options, padding=0)
    else:
        size, vjp = (6, 2, 3, 3), tnconv.conv_weight_vjp
        g = rand(2, 6, 7, 6)
    for seed in range(3):
        results = [vjp(x, size, g, **options, sample=tnconv.Sample(
            "channel", 0.5, generator=_generator(seed), scheme=scheme, route=route))
            for route in ("sliced", "masked")]
        assert_close(results[0], results[1])


def test_a_large_draw_times_both_routes_then_keeps_the_faster(monkeypatch):
    """With route "auto", a draw whose exact VJP is priced at `TIMED_MIN_COST` or more runs
    each route once untimed, then in turns until each has `TIMED` timed calls, and keeps
    the faster (here the masked one, by a clock that says so); every call is the same
    estimate as the sliced route's for the same draw."""
    import types

    import tnconv.sampled as sampled_module
    from tnconv.trials import TIMED

    spec = tnconv.ConvSpec(64, 64, 3, input_size=(28, 28), padding=1)
    timed = tnconv.compile("weight_vjp", spec, batch_size=4, sample=tnconv.Sample(
        "spatial", 0.5, generator=_generator(3), scheme="fixed"))
    sliced = tnconv.compile("weight_vjp", spec, batch_size=4, sample=tnconv.Sample(
        "spatial", 0.5, generator=_generator(3), scheme="fixed", route="sliced"))
    clock, routes = [0.0], []
    monkeypatch.setattr(sampled_module, "time", types.SimpleNamespace(
        perf_counter=lambda: clock[0]))
    run_route = timed._run_route

    def counted(tensors, carrier, *rest):
        routes.append("sliced" if carrier is None else "masked")
        clock[0] += 2.0 if carrier is None else 1.0
        return run_route(tensors, carrier, *rest)

    monkeypatch.setattr(timed, "_run_route", counted)
    x, g = rand(4, 64, 28, 28), rand(4, 64, 28, 28)
    calls = 2 * (TIMED + 1)
    for _ in range(calls + 2):
        assert_close(timed(x, g), sliced(x, g))
    assert sorted(routes[:calls]) == ["masked"] * (calls // 2) + ["sliced"] * (calls // 2)
    assert routes[calls:] == ["masked", "masked"] and timed.route() == "masked"
    assert "route    masked (timed on the first calls: sliced 2e+03 ms, masked 1e+03 ms)" \
        in timed.explain()


def test_auto_route_masks_where_slicing_costs_more_than_it_saves():
    """A depthwise layer's exact VJP reads its windows in place, so gathering a subset of
    them along both dims is priced above the exact network: masked. A dense layer at keep
    0.1: sliced. `explain()` says which."""
    sample = tnconv.Sample("spatial", 0.5, scheme="fixed", spatial_dims="all")
    depthwise = tnconv.compile("weight_vjp", tnconv.ConvSpec(
        32, 32, 3, input_size=(28, 28), padding=1, groups=32), sample=sample, batch_size=4)
    assert depthwise.route() == "masked"
    assert "route    masked (the cost model's choice)" in depthwise.explain()
    dense = tnconv.compile("weight_vjp", tnconv.ConvSpec(
        64, 64, 3, input_size=(28, 28), padding=1), batch_size=4,
        sample=tnconv.Sample("spatial", 0.1, scheme="fixed"))
    assert dense.route() == "sliced"  # until its first calls have timed both routes
    assert ("route    sliced (the cost model's choice until the first calls have timed both "
            "routes)") in dense.explain()
    forced = tnconv.compile("weight_vjp", tnconv.ConvSpec(
        32, 32, 3, input_size=(28, 28), padding=1, groups=32), batch_size=4,
        sample=tnconv.Sample("spatial", 0.5, scheme="fixed", route="sliced"))
    assert forced.route() == "sliced" and "(asked)" in forced.explain()


@pytest.mark.parametrize("leg, scheme, dims", [("spatial", "fixed", (0,)),
                                              ("spatial", "bernoulli", "all"),
                                              ("batch", "bernoulli", (0,))])
def test_sampled_kfc_is_unbiased_and_the_unscaled_one_is_not(leg, scheme, dims):
    conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False).double().to(DEVICE)
    x = rand(5, 4, 6, 5)
    exact = tnconv.kfc(conv, x)
    sample = tnconv.Sample(leg, keep=0.5, generator=_generator(2), scheme=scheme,
                           spatial_dims=dims)
    assert unbiased([tnconv.kfc(conv, x, sample=sample) for _ in range(DRAWS)], exact)
    spec = tnconv.ConvSpec(4, 6, 3, input_size=(6, 5), padding=1, groups=2)
    compiled = tnconv.compile("kfc", spec, sample=sample)
    assert not unbiased(_wrong_draws(compiled, sample, (x,), compiled.legs(5)), exact)


def test_functional_kfc_takes_a_sample():
    x = rand(3, 2, 7)
    sample = tnconv.Sample("spatial", keep=1.0)
    exact = tnconv.nn.functional.kfc(x, 3, padding=1)
    assert torch.equal(tnconv.nn.functional.kfc(x, 3, padding=1, sample=sample), exact)
    half = tnconv.Sample("spatial", keep=0.5, generator=_generator(), scheme="fixed")
    assert tnconv.nn.functional.kfc(x, 3, padding=1, sample=half).shape == exact.shape


def _module_pair(sample, **options):
    torch.manual_seed(3)
    reference = torch.nn.Conv2d(4, 6, 3, **options).double().to(DEVICE)
    module = tnconv.nn.Conv2d(4, 6, 3, **options, backward_sample=sample).double().to(DEVICE)
    module.load_state_dict(reference.state_dict())
    return reference, module


def _gradients(module, x, g):
    x = x.clone().requires_grad_(True)
    module.zero_grad()
    (module(x) * g).sum().backward()
    return x.grad, module.weight.grad.clone(), module.bias.grad.clone()


def test_module_input_gradient_is_torchs_and_weight_gradient_unbiased():
    sample = tnconv.Sample("spatial", keep=0.5, generator=_generator(4))
    reference, module = _module_pair(sample, padding=1, groups=2)
    x, g = rand(3, 4, 7, 6), rand(3, 6, 7, 6)
    exact_x, exact_w, exact_b = _gradients(reference, x, g)
    draws = []
    for _ in range(DRAWS):
        grad_x, grad_w, grad_b = _gradients(module, x, g)
        assert torch.equal(grad_x, exact_x)
        assert_close(grad_b, exact_b)
        draws.append(grad_w)
    assert unbiased(draws, exact_w)
    assert not unbiased([d * 0.5 for d in draws], exact_w)  # a halved estimate is caught


def test_a_fixed_generator_or_seed_reproduces_the_draws():
    x, g = rand(2, 4, 6, 5), rand(2, 3, 6, 5)

    def run(sample):
        return tnconv.conv_weight_vjp(x, (3, 4, 3, 3), g, **SPEC, sample=sample)

    first = run(tnconv.Sample("spatial", 0.5, generator=_generator(7)))
    assert torch.equal(first, run(tnconv.Sample("spatial", 0.5, generator=_generator(7))))
    assert not torch.equal(first, run(tnconv.Sample("spatial", 0.5, generator=_generator(8))))
    sample = tnconv.Sample("channel", 0.5)
    torch.manual_seed(11)
    second = run(sample)
    torch.manual_seed(11)
    assert torch.equal(second, run(sample))
    _, module = _module_pair(sample, padding=1)
    torch.manual_seed(5)
    grads = _gradients(module, x, rand(2, 6, 6, 5))[1]
    torch.manual_seed(5)
    assert torch.equal(grads, _gradients(module, x, rand(2, 6, 6, 5))[1])


@pytest.mark.parametrize("leg", ["spatial", "channel"])
@pytest.mark.parametrize("shape, options", [
    ((2, 4, 9), dict(stride=2, padding=1, groups=2)),
    ((2, 4, 5, 6), dict(dilation=2, padding=2)),
    ((1, 2, 4, 3, 5), dict(padding=(1, 0, 1))),
])
def test_keep_one_is_exact_in_1d_2d_3d_with_groups(leg, shape, options):
    x = rand(*shape)
    size = (6, shape[1] // options.get("groups", 1), *[3] * (len(shape) - 2))
    spec = tnconv.ConvSpec(shape[1], 6, 3, input_size=shape[2:], **{
        k: v for k, v in options.items()})
    g = rand(shape[0], 6, *spec.output_size)
    exact = tnconv.conv_weight_vjp(x, size, g, **options)
    whole = tnconv.conv_weight_vjp(x, size, g, **options, sample=tnconv.Sample(leg, 1.0))
    assert torch.equal(whole, exact)
    half = tnconv.conv_weight_vjp(x, size, g, **options, per_sample=True,
                                  sample=tnconv.Sample(leg, 0.5, generator=_generator()))
    assert half.shape == (shape[0], *size)


def test_a_non_contiguous_input_gives_the_same_estimate():
    x, g = rand(2, 6, 5, 4).transpose(2, 3), rand(2, 3, 4, 5)
    assert not x.is_contiguous()
    for leg in ("spatial", "channel"):
        results = [tnconv.conv_weight_vjp(t, (3, 6, 3, 3), g, padding=1, sample=tnconv.Sample(
            leg, 0.5, generator=_generator(9))) for t in (x, x.contiguous())]
        assert_close(results[0], results[1])


def test_bernoulli_draws_are_padded_to_a_few_buckets():
    sample = tnconv.Sample("spatial", 0.3, generator=_generator(), scheme="bernoulli")
    seen = set()
    for _ in range(200):
        counts, index, weights = draw(sample, (50, 7))
        step = math.ceil(50 / BUCKETS)
        assert counts[0] % step == 0 or counts[0] == 50
        kept = int((weights[:counts[0]] > 0).sum())
        assert kept <= counts[0] < kept + step or counts[0] == step  # pad < one bucket
        assert torch.all(index[:counts[0]][weights[:counts[0]] == 0] == 0)  # padding: index 0
        seen.add(counts)
    assert len({c[0] for c in seen}) <= BUCKETS + 1 and len({c[1] for c in seen}) <= 7


def test_explain_render_and_export_of_a_sampled_compile(tmp_path):
    spec = tnconv.ConvSpec(3, 4, 3, input_size=(8, 8), padding=1)
    rows = tnconv.compile("weight_vjp", spec, batch_size=2,
                          sample=tnconv.Sample("spatial", keep=0.25, scheme="fixed"))
    assert "slices o1 (8), each leg kept with probability 0.25" in rows.explain()
    assert "typical  counts (2,)" in rows.explain()
    sample = tnconv.Sample("spatial", keep=0.25, scheme="fixed", spatial_dims="all")
    compiled = tnconv.compile("weight_vjp", spec, sample=sample, batch_size=2)
    text = compiled.explain()
    assert "sample" in text and "o1 (8), o2 (8)" in text and "typical  counts (4, 4)" in text
    assert "gather" in text and "selection" in text
    assert "R_o1[X]" in compiled.to_dot() and "R_o1[Π1]" in compiled.to_dot("input")
    with pytest.raises(tnconv.TNConvError, match="sample"):
        compiled.to_einsum()
    with pytest.raises(tnconv.TNConvError, match="selection"):
        tnconv.compile("sampled_weight_vjp", spec).to_einsum()


@pytest.mark.parametrize("keep", [0, 1.5, -0.2, float("nan"), True, "0.5"])
def test_keep_outside_the_unit_interval_is_an_error(keep):
    with pytest.raises(tnconv.TNConvError, match="'keep'"):
        tnconv.Sample("spatial", keep)


def test_bad_samples_are_errors_naming_the_argument():
    with pytest.raises(tnconv.TNConvError, match="'leg'"):
        tnconv.Sample("time", 0.5)
    with pytest.raises(tnconv.TNConvError, match="'scheme'"):
        tnconv.Sample("spatial", 0.5, scheme="poisson")
    with pytest.raises(tnconv.TNConvError, match="'generator'"):
        tnconv.Sample("spatial", 0.5, generator=3)
    with pytest.raises(tnconv.TNConvError, match="route.*'auto', 'sliced', 'masked'"):
        tnconv.Sample("spatial", 0.5, route="dense")
    for dims in [(), (-1,), (0, 0), "rows", (0.5,), (True,)]:
        with pytest.raises(tnconv.TNConvError, match="'spatial_dims'.*distinct spatial dims"):
            tnconv.Sample("spatial", 0.5, spatial_dims=dims)
    with pytest.raises(tnconv.TNConvError, match="'spatial_dims'.*below 2"):
        tnconv.conv_weight_vjp(rand(1, 2, 4, 4), (2, 2, 3, 3), rand(1, 2, 2, 2),
                               sample=tnconv.Sample("spatial", 0.5, spatial_dims=(2,)))
    with pytest.raises(tnconv.TNConvError, match="sample.*only a weight VJP has an argument"):
        tnconv.kfc(torch.nn.Conv1d(2, 2, 3), rand(1, 2, 6).float(),
                   sample=tnconv.Sample("batch", 0.5, route="masked"))
    spec = tnconv.ConvSpec(2, 2, 3, input_size=(6,))
    half = tnconv.Sample("spatial", 0.5)
    for op, sample in [("forward", half), ("kfac_reduce", half), ("input_vjp", half),
                       ("weight_vjp", tnconv.Sample("batch", 0.5)),
                       ("kfc", tnconv.Sample("channel", 0.5)), ("weight_vjp", "spatial")]:
        with pytest.raises(tnconv.TNConvError, match="'sample'"):
            tnconv.compile(op, spec, sample=sample)
    x, g = rand(1, 2, 6), rand(1, 2, 4)
    with pytest.raises(tnconv.TNConvError, match="'sample'"):
        tnconv.conv_weight_vjp(x, (2, 2, 3), g, sample=0.5)
    with pytest.raises(tnconv.TNConvError, match="'sample'"):
        tnconv.nn.Conv1d(2, 2, 3, backward_sample=tnconv.Sample("batch", 0.5))
    with pytest.raises(tnconv.TNConvError, match="'sample'"):
        tnconv.kfc(torch.nn.Conv1d(2, 2, 3), rand(1, 2, 6).float(),
                   sample=tnconv.Sample("channel", 0.5))


def test_import_tnconv_does_not_import_torch_for_sample():
    import subprocess
    import sys

    script = ("import sys, tnconv; assert 'torch' not in sys.modules; "
              "assert 'Sample' in tnconv.__all__ and 'Sample' in dir(tnconv)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_benchmark_scripts_run_on_a_tiny_layer(tmp_path):
    import doctest
    import importlib

    from benchmarks import dropout, dropout_training
    from benchmarks.layers import Layer

    for name in ("benchmarks.dropout", "benchmarks.dropout_training"):
        result = doctest.testmod(importlib.import_module(name))
        assert result.attempted > 0 and result.failed == 0
    tiny = Layer("tiny", "test", 4, 6, 3, (7, 6), batch=2, padding=1, groups=2)
    table = dropout.run([tiny], repeats=1, budget=0.1)
    assert set(table) == {("tiny", "spatial"), ("tiny", "channel")}
    text = dropout.markdown(table, ["- a header"])
    assert "**geometric mean**" in text and "keep 0.25 at most 0.5×" in text
    losses, times = dropout_training.train(tnconv.Sample("spatial", 0.5), steps=2, batch=4)
    assert len(losses) == len(times) == 2 and all(math.isfinite(v) for v in losses)


def test_deterministic_algorithms_turn_the_route_trials_off():
    """Torch's determinism flag: a large draw keeps the cost model's route, so a draw
    repeated with the same seed is bit for bit the same from the first call."""
    spec = tnconv.ConvSpec(64, 64, 3, input_size=(28, 28), padding=1)
    sample = tnconv.Sample("spatial", 0.5, generator=_generator(4), scheme="fixed")
    timed = tnconv.compile("weight_vjp", spec, batch_size=4, sample=sample)
    assert timed.trials(4) is not None
    torch.use_deterministic_algorithms(True)
    try:
        tnconv.clear_caches()
        fixed = tnconv.compile("weight_vjp", spec, batch_size=4, sample=sample)
        assert fixed.trials(4) is None
    finally:
        torch.use_deterministic_algorithms(False)
