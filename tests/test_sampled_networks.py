"""Tensor dropout in the compiler: the sampling transform, the rewrites, paths and schedule.

The sampled operations are checked against independent references: the exact
weight VJP (torch autograd) of a masked cotangent or input, and KFC from an
explicitly unfolded input, each weighted by the same indices and weights.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, strategies as st

import tnconv
from tests.helpers import DEVICE, assert_close, rand
from tests.references import torch_conv, unfold_nd
from tnconv.ir.network import Network
from tnconv.ir.selection import SELECTION_ROLE, WEIGHTS_ROLE, SelectionView
from tnconv.lower.paths import plan_path
from tnconv.lower.schedule.gather import Gather, IndexAdd, OneHotEinsum
from tnconv.lower.schedule.product import Matmul
from tnconv.runtime.interpreter import Bound
from tnconv.ops.sampling import sampled_legs
from tnconv.rewrite.rules import squeeze_size_one


def _spec(transposed=False, **kw):
    defaults = dict(in_channels=4, out_channels=6, kernel_size=3, input_size=(7, 6),
                    stride=1, padding=1, groups=2)
    defaults.update(kw)
    return tnconv.ConvSpec(transposed=transposed, **defaults)


def _draw(legs, generator, fraction=0.5):
    """Sorted distinct indices and random positive weights per leg (a fixed draw)."""
    picks, weights = [], []
    for _, size in legs:
        count = max(1, round(fraction * size))
        picks.append(torch.randperm(size, generator=generator)[:count].sort().values)
        weights.append(torch.rand(count, generator=generator, dtype=torch.float64) + 0.5)
    return picks, weights


def _grid(sizes, picks, weights):
    """⊗_d (the weights of leg d scattered onto its positions): the mask of a draw."""
    grid = torch.ones((), dtype=torch.float64)
    for d, (size, index, w) in enumerate(zip(sizes, picks, weights)):
        leg = torch.zeros(size, dtype=torch.float64).index_add_(0, index, w)
        shape = [1] * len(sizes)
        shape[d] = size
        grid = grid * leg.view(shape)
    return grid


def _weight_vjp_reference(spec, x, g, per_sample=False):
    """torch autograd's weight gradient of <conv(x, w), g> (per sample: one call each)."""
    def one(xs, gs):
        w = torch.zeros(spec.weight_shape, dtype=torch.float64, requires_grad=True)
        if spec.transposed:
            op = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
                  3: torch.nn.functional.conv_transpose3d}[spec.ndim]
            y = op(xs, w, stride=spec.stride, padding=[p for p, _ in spec.padding],
                   output_padding=spec.output_padding, groups=spec.groups,
                   dilation=spec.dilation)
        else:
            y = torch_conv(xs, w, spec.stride, spec.padding, spec.dilation, spec.groups)
        (y * gs).sum().backward()
        return w.grad
    if per_sample:
        return torch.stack([one(x[n:n + 1], g[n:n + 1]) for n in range(x.shape[0])])
    return one(x, g)


def _sampled(op, spec, batch, leg, picks, weights, **options):
    counts = tuple(len(p) for p in picks)
    compiled = tnconv.compile(op, spec, strategy="tn", leg=leg, counts=counts, **options)
    index = torch.cat(picks).to(DEVICE) if picks else torch.zeros(0, dtype=torch.long)
    return compiled, index, torch.cat(weights).to(DEVICE)


SPECS = [
    _spec(),
    _spec(input_size=(9,), kernel_size=3, stride=2, padding=0, dilation=1, groups=1),
    _spec(input_size=(5, 4, 5), kernel_size=(2, 3, 2), padding=(1, 0, 1), groups=2),
    _spec(stride=2, dilation=2, padding=2),
    _spec(transposed=True, stride=2, padding=1, output_padding=1),
    _spec(transposed=True, input_size=(6,), kernel_size=4, stride=2, padding=1, groups=1),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.ndim}d{'T' if s.transposed else ''}")
@pytest.mark.parametrize("per_sample", [False, True])
def test_sampled_weight_vjp_matches_a_masked_reference(spec, per_sample):
    batch, generator = 3, torch.Generator().manual_seed(1)
    x = rand(batch, spec.in_channels, *spec.input_size)
    g = rand(batch, spec.out_channels, *spec.output_size)
    for leg in ("spatial", "channel"):
        legs = sampled_legs("weight_vjp", spec, batch, leg)
        picks, weights = _draw(legs, generator)
        compiled, index, w = _sampled("sampled_weight_vjp", spec, batch, leg, picks, weights,
                                      per_sample=per_sample)
        got = compiled(x, g, index, w)
        if leg == "spatial":  # the positions the kernel slides over: g's, or x's (transposed)
            masked_x = x * _grid(spec.input_size, picks, weights) if spec.transposed else x
            masked_g = g if spec.transposed else g * _grid(spec.output_size, picks, weights)
        else:  # input channel c of every group
            (index_c,), (w_c,) = picks, weights
            per_group = torch.zeros(spec.in_channels // spec.groups,
                                    dtype=torch.float64).index_add_(0, index_c, w_c)
            mask = per_group.repeat(spec.groups).view(1, -1, *[1] * spec.ndim)
            masked_x, masked_g = x * mask, g
        assert_close(got, _weight_vjp_reference(spec, masked_x, masked_g, per_sample))


def _kfc_reference(spec, x, position_weights, sample_weights):
    """Σ_n w_n Σ_o w_o u uᵀ / (N·∏O) per group, from an explicit unfold."""
    u = unfold_nd(x, spec.kernel_size, spec.stride, spec.padding, spec.dilation)  # [N, C·K, O]
    batch, groups = x.shape[0], spec.groups
    u = u.reshape(batch, groups, -1, u.shape[-1])
    weighted = u * position_weights.reshape(1, 1, 1, -1) * sample_weights.view(-1, 1, 1, 1)
    return torch.einsum("ngdo,ngeo->gde", weighted, u) / (batch * u.shape[-1])


@pytest.mark.parametrize("spec", SPECS[:4], ids=lambda s: f"{s.ndim}d")
@pytest.mark.parametrize("leg", ["spatial", "batch"])
def test_sampled_kfc_matches_an_unfolded_reference(spec, leg):
    batch, generator = 4, torch.Generator().manual_seed(2)
    x = rand(batch, spec.in_channels, *spec.input_size)
    legs = sampled_legs("kfc", spec, batch, leg)
    picks, weights = _draw(legs, generator)
    compiled, index, w = _sampled("sampled_kfc", spec, batch, leg, picks, weights)
    got = compiled(x, index, w.sqrt())  # two copies of the input: √w on each
    ones = torch.ones(math.prod(spec.output_size), dtype=torch.float64)
    if leg == "spatial":
        expected = _kfc_reference(spec, x, _grid(spec.output_size, picks, weights).reshape(-1),
                                  torch.ones(batch, dtype=torch.float64))
    else:
        expected = _kfc_reference(spec, x, ones, _grid((batch,), picks, weights))
    assert_close(got, expected)


@given(st.sampled_from(SPECS), st.sampled_from(["spatial", "channel"]),
       st.floats(0.05, 1.0), st.integers(0, 2 ** 16))
def test_full_counts_are_the_exact_vjp_whatever_the_padding_entries(spec, leg, fraction, seed):
    """Repeated index 0 with weight 0 (the padding of a Bernoulli draw) adds nothing."""
    batch, generator = 2, torch.Generator().manual_seed(seed)
    x = rand(batch, spec.in_channels, *spec.input_size)
    g = rand(batch, spec.out_channels, *spec.output_size)
    legs = sampled_legs("weight_vjp", spec, batch, leg)
    picks, weights = _draw(legs, generator, fraction)
    padded = [torch.cat([p, p.new_zeros(size - len(p))]) for p, (_, size) in zip(picks, legs)]
    padded_w = [torch.cat([torch.ones(len(p), dtype=torch.float64),
                           torch.zeros(size - len(p), dtype=torch.float64)])
                for p, (_, size) in zip(picks, legs)]
    compiled, index, w = _sampled("sampled_weight_vjp", spec, batch, leg, padded, padded_w)
    exact = tnconv.compile("weight_vjp", spec, strategy="tn")(x, g)
    keep_all = [torch.arange(size) for _, size in legs]
    full, all_index, ones = _sampled("sampled_weight_vjp", spec, batch, leg, keep_all,
                                     [torch.ones(size, dtype=torch.float64) for _, size in legs])
    assert_close(full(x, g, all_index, ones), exact)
    unit = [torch.ones(len(p), dtype=torch.float64) for p in picks]
    subset, sub_index, sub_w = _sampled("sampled_weight_vjp", spec, batch, leg, picks, unit)
    assert_close(compiled(x, g, index, w), subset(x, g, sub_index, sub_w))


def test_the_rewritten_vjp_gathers_patches_inside_the_window_view():
    spec = tnconv.ConvSpec(8, 16, kernel_size=3, input_size=(20, 20), padding=1)
    compiled = tnconv.compile("sampled_weight_vjp", spec, counts=(5, 5), batch_size=4)
    net = compiled.network()
    x = net.tensor("X")
    assert x.view is not None and "window" in x.view.describe()  # lowered to a window view
    assert not any(t.role == "pattern" for t in net.tensors)     # no dense pattern left
    schedule = compiled.schedule()
    gathers = [s for s in schedule.steps if isinstance(s, Gather)]
    assert len(gathers) == 2 and schedule.families[:2] == ("gather", "gather")
    (inside,) = [s for s in gathers if s.source is not None]     # X: rows taken, then windows
    argument = next(a for a in schedule.arguments if a.register == inside.inputs[0])
    assert argument.view is None and argument.shape == (4, 8, 20, 20)  # read as it lies
    assert "take rows" in " ".join(op.describe() for op in inside.source)
    # the final product contracts the gathered [.., 5, .., 5 ..] tensors, never 20×20
    final = schedule.steps[-1]
    assert isinstance(final, Matmul) and set(final.inputs) == {s.output for s in gathers}
    for register in final.inputs:
        assert schedule.shapes[register].count(5) == 2 and 20 not in schedule.shapes[register]
    assert not any(isinstance(s, OneHotEinsum) for s in schedule.steps)


def test_the_gathered_patches_are_laid_out_as_the_product_reads_them():
    spec = tnconv.ConvSpec(8, 16, kernel_size=3, input_size=(20, 20), padding=1)
    schedule = tnconv.compile("sampled_weight_vjp", spec, counts=(5, 5),
                              batch_size=4).schedule()
    inside = next(s for s in schedule.steps if isinstance(s, Gather) and s.source is not None)
    final = schedule.steps[-1]
    order = final.left_order if final.inputs[0] == inside.output else final.right_order
    assert inside.final >= 0 and inside.layout == tuple(inside.permutation[o] for o in order)
    x, g = rand(4, 8, 20, 20), rand(4, 16, 20, 20)
    index = torch.tensor([0, 3, 7, 12, 19, 1, 2, 3, 10, 18], device=DEVICE)
    weights = torch.rand(10, dtype=torch.float64, device=DEVICE)
    bound = Bound(schedule, DEVICE, torch.float64)
    gathered = {}

    def recording(call):  # keeps the gathered input, as the product receives it
        def run(registers):
            gathered["x"] = call(registers)
            return gathered["x"]
        return run

    bound._calls = tuple((out, recording(call) if out == inside.output else call)
                         for out, call in bound._calls)
    picks, parts = [index[:5].cpu(), index[5:].cpu()], [weights[:5].cpu(), weights[5:].cpu()]
    assert_close(bound(x, g, index, weights),
                 _weight_vjp_reference(spec, x, g * _grid((20, 20), picks, parts).to(DEVICE)))
    assert gathered["x"].permute(order).is_contiguous()  # the product's reshape copies nothing


def test_channel_sampling_scatters_its_output_leg_last():
    spec = tnconv.ConvSpec(8, 4, kernel_size=3, input_size=(10, 10), padding=1)
    schedule = tnconv.compile("sampled_weight_vjp", spec, leg="channel", counts=(2,),
                              batch_size=2).schedule()
    assert isinstance(schedule.steps[0], Gather) and schedule.steps[0].source is not None
    assert isinstance(schedule.steps[-1], IndexAdd)
    kept = schedule.shapes[schedule.steps[-1].inputs[0]]
    assert sorted(kept) == [2, 3, 3, 4]  # [c_out, 2 kept channels, k1, k2], in some order
    assert schedule.result_shape == (4, 8, 3, 3)


def test_plan_path_contracts_each_selection_with_its_partner_first():
    # Y[a] = Σ_{b} X[a, b] G[b] with b sampled: X[a, b1], G[b2], R1[s, b1], R2[s, b2], w[s]
    inputs, shapes = ["ab", "c", "db", "dc", "d"], [(3, 5), (5,), (2, 5), (2, 5), (2,)]
    roles = ["input", "grad_output", SELECTION_ROLE, SELECTION_ROLE, WEIGHTS_ROLE]
    path, _, _ = plan_path(inputs, "a", shapes, roles=roles)
    # X with its selection; G (at 0 now) with its own and the weights (the smaller side)
    assert path == [(0, 2), (0, 1, 2), (0, 1)]


def test_squeeze_size_one_keeps_the_legs_of_a_selection_of_one_index():
    view = SelectionView(0, 1, 4, 1)
    net = Network(
        tensors=(tnconv.Tensor("X", ("n", "u", "o"), "input"),
                 tnconv.Tensor("R", ("s", "o"), SELECTION_ROLE, view=view),
                 tnconv.Tensor("w", ("s",), WEIGHTS_ROLE)),
        sizes=(("n", 2), ("u", 1), ("o", 4), ("s", 1)), output=("n", "s")).validate()
    squeezed = squeeze_size_one(net)
    assert squeezed.tensor("X").indices == ("n", "o")          # u (size 1) goes
    assert squeezed.tensor("R").indices == ("s", "o")          # s (size 1) stays
    assert squeeze_size_one(squeezed) is None


def test_one_index_kept_runs():
    spec = _spec()
    x, g = rand(2, spec.in_channels, *spec.input_size), rand(2, spec.out_channels,
                                                              *spec.output_size)
    compiled = tnconv.compile("sampled_weight_vjp", spec, strategy="tn", counts=(1, 1))
    index, w = torch.tensor([3, 2], device=DEVICE), torch.tensor([2.0, 3.0], device=DEVICE,
                                                                 dtype=torch.float64)
    picks, weights = [index[:1].cpu(), index[1:].cpu()], [w[:1].cpu(), w[1:].cpu()]
    masked = g * _grid(spec.output_size, picks, weights).to(DEVICE)
    assert_close(compiled(x, g, index, w), _weight_vjp_reference(spec, x, masked))


def test_bad_counts_and_indices_are_errors_naming_them():
    spec = _spec()
    with pytest.raises(tnconv.TNConvError, match="counts"):
        tnconv.compile("sampled_weight_vjp", spec, counts=(3,)).program
    with pytest.raises(tnconv.TNConvError, match="counts"):
        tnconv.compile("sampled_weight_vjp", spec, counts=[3, 3])
    with pytest.raises(tnconv.TNConvError, match="counts"):
        tnconv.compile("sampled_weight_vjp", spec, counts=(0, 3)).program
    compiled = tnconv.compile("sampled_weight_vjp", spec, counts=(2, 2))
    x, g = rand(1, 4, 7, 6), rand(1, 6, 7, 6)
    with pytest.raises(tnconv.TNConvError, match="selection"):
        compiled(x, g, torch.zeros(4, device=DEVICE), torch.ones(4, device=DEVICE,
                                                                 dtype=torch.float64))


@pytest.mark.parametrize("op, leg", [("kfc", "spatial"), ("kfc", "batch"),
                                     ("weight_vjp", "spatial"), ("weight_vjp", "channel")])
def test_the_rules_leave_selections_alone(op, leg):
    """Transposed: a pattern's gathering leg is the sliced one, carried by a selection; no
    rule views a selection's indices, squeezes its legs or dilates them."""
    from tnconv.ops.sampling import exact_network, sample_legs
    from tnconv.rewrite.driver import REWRITE_ORDERS, rewrite

    spec = _spec(transposed=True, stride=2, padding=1, output_padding=1)
    legs = sampled_legs(op, spec, 2, leg)
    options = {"per_sample": False} if op == "weight_vjp" else {}
    net = sample_legs(exact_network(op, spec, 2, options), [name for name, _ in legs],
                      [1] * len(legs), 2 if op == "kfc" else 1)
    before = {t.name: t for t in net.tensors if t.role in (SELECTION_ROLE, WEIGHTS_ROLE)}
    for order in REWRITE_ORDERS:
        after = rewrite(net, order).network
        for name, tensor in before.items():
            assert after.tensor(name) == tensor


def test_a_channel_draw_is_taken_before_the_view_and_its_windows_read_in_place():
    """The kept channels of a grouped convolution stay a window view of the smaller tensor:
    the weight VJP runs the exact network's shift-GEMM on them, never an einsum over
    laid-out windows, and the argument's padded view is never built."""
    from tnconv.lower.schedule.windows import reads_in_place

    spec = tnconv.ConvSpec(8, 8, kernel_size=3, input_size=(10, 10), padding=1, groups=4)
    schedule = tnconv.compile("sampled_weight_vjp", spec, leg="channel", counts=(1,),
                              batch_size=2).schedule()
    gather, product, scatter = schedule.steps
    assert isinstance(gather, Gather) and isinstance(scatter, IndexAdd)
    assert reads_in_place(product) and product.inputs[0] == gather.output
    assert schedule.shapes[gather.output] == (2, 4, 1, 10, 3, 10, 3)  # [n, g, s, o1, k1, …]
    assert [a.view for a in schedule.arguments if a.argument == 0] == [None]
    x, g = rand(2, 8, 10, 10), rand(2, 8, 10, 10)
    index, w = torch.tensor([1], device=DEVICE), torch.tensor([4.0], dtype=torch.float64,
                                                               device=DEVICE)
    mask = torch.zeros(2, dtype=torch.float64).index_add_(0, index.cpu(), w.cpu())
    masked_x = x * mask.repeat(4).view(1, -1, 1, 1).to(DEVICE)
    assert_close(Bound(schedule, DEVICE, torch.float64)(x, g, index, w),
                 _weight_vjp_reference(spec, masked_x, g))
