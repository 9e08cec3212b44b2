"""KFC, KFAC-reduce and patch matrices against an im2col reference written here.

The reference unfolds with torch's own convolutions: a (transposed)
convolution whose weight is the identity on (channel, kernel tap) outputs the
unfolded input U[n, g, d, o], after explicit padding with F.pad (any mode,
asymmetric pairs). For N = 4 the unfold is an explicit loop.
"""

from __future__ import annotations

import itertools
from math import prod

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given
from hypothesis import strategies as st

import tnconv
from tnconv import TNConvError
from tnconv.nn import kfac_functional as TF
from tests.helpers import DEVICE, assert_close, rand

STRATEGIES = ("auto", "tn")
MODES = ("zeros", "circular", "reflect", "replicate")
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


# ----------------------------------------------------------------- reference
def _pairs(padding, ndim):
    if isinstance(padding, int):
        return [(padding, padding)] * ndim
    return [p if isinstance(p, tuple) else (p, p) for p in padding]


def _identity_weight(groups, channels, kernel, transposed):
    d = channels * prod(kernel)
    eye = torch.eye(d, dtype=torch.float64, device=DEVICE).reshape(d, channels, *kernel)
    if transposed:
        eye = eye.transpose(0, 1)  # [c, D, k…]: ConvTranspose weight layout
    return eye.repeat(groups, *([1] * (eye.dim() - 1)))


def _crop(y, pairs, output_padding):
    """Cut a transposed convolution computed without padding to the padded one."""
    for d, ((left, right), extra) in enumerate(zip(pairs, output_padding)):
        dim = 2 + d
        full = y.shape[dim]
        y = F.pad(y.movedim(dim, -1), (0, extra)).movedim(-1, dim)
        y = y.narrow(dim, left, full - left - right + extra)
    return y


def unfold_ref(x, kernel, stride, padding, dilation, groups, mode="zeros",
               transposed=False, output_padding=0):
    """U[n, g, d, o] with d = (c, k…) of the (transposed) convolution; N = 1..3."""
    ndim = x.dim() - 2
    pairs = _pairs(padding, ndim)
    w = _identity_weight(groups, x.shape[1] // groups, kernel, transposed)
    if transposed:
        y = _CONV_T[ndim](x, w, stride=stride, dilation=dilation, groups=groups)
        y = _crop(y, pairs, output_padding if isinstance(output_padding, tuple)
                  else (output_padding,) * ndim)
    else:
        pads = [p for pair in reversed(pairs) for p in pair]
        x = F.pad(x, pads, mode="constant" if mode == "zeros" else mode)
        y = _CONV[ndim](x, w, stride=stride, dilation=dilation, groups=groups)
    return y.reshape(x.shape[0], groups, -1, prod(y.shape[2:]))


def _source(o, k, s, dil, left, size, mode):
    pos = o * s + k * dil - left
    if mode == "circular":
        return pos % size
    if mode == "replicate":
        return min(max(pos, 0), size - 1)
    if mode == "reflect":
        pos = abs(pos)
        return 2 * (size - 1) - pos if pos >= size else pos
    return pos if 0 <= pos < size else None


def unfold_loops(x, kernel, stride, pairs, dilation, groups, mode):
    """The unfolded input by explicit loops over kernel taps and output pixels (any N)."""
    sizes = x.shape[2:]
    out = [(i + l + r - d * (k - 1) - 1) // s + 1
           for i, k, s, d, (l, r) in zip(sizes, kernel, stride, dilation, pairs)]
    u = x.new_zeros(x.shape[0], x.shape[1], *kernel, *out)
    for ks in itertools.product(*map(range, kernel)):
        for os_ in itertools.product(*map(range, out)):
            src = [_source(o, k, s, d, l, i, mode) for o, k, s, d, (l, _), i in
                   zip(os_, ks, stride, dilation, pairs, sizes)]
            if None not in src:
                u[(slice(None), slice(None), *ks, *os_)] = x[(slice(None), slice(None), *src)]
    n, c = x.shape[:2]
    return u.reshape(n, groups, c // groups * prod(kernel), prod(out))


def kfc_ref(u, reduction="mean", bias=False, group_average=False):
    n, _, _, o = u.shape
    if group_average:
        u = u.mean(1, keepdim=True)
    if bias:
        u = torch.cat([u, u.new_ones(n, u.shape[1], 1, o)], 2)
    s = torch.einsum("ngdo,ngeo->gde", u, u)
    s = s / {"mean": n * o, "batch": n, "sum": 1}[reduction]
    return s[0] if group_average else s


def reduce_ref(u, reduction="mean", bias=False, group_average=False):
    n = u.shape[0]
    ubar = u.mean(-1)
    if group_average:
        ubar = ubar.mean(1, keepdim=True)
    if bias:
        ubar = torch.cat([ubar, ubar.new_ones(n, ubar.shape[1], 1)], 2)
    a = torch.einsum("ngd,nge->gde", ubar, ubar) / (n if reduction == "mean" else 1)
    return a[0] if group_average else a


def diagonal(s):
    return torch.diagonal(s, dim1=-2, dim2=-1)


# ---------------------------------------------------------------- strategies
@st.composite
def conv_case(draw, transposed=False):
    ndim = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    channels = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    kind = draw(st.sampled_from(["int", "pairs", "same"] if not transposed else ["int", "tuple"]))
    stride = (1,) * ndim if kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    mode = "zeros" if transposed else draw(st.sampled_from(MODES))
    reach = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    size = tuple(max(r, 3) + draw(st.integers(0, 3)) for r in reach)
    if kind == "same":
        padding = "same"
    elif kind == "pairs":
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(ndim))
    elif kind == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(ndim))
    else:
        padding = draw(st.integers(0, 2))
    extra = {}
    if transposed:
        limits = [max(s, d) for s, d in zip(stride, dilation)]
        extra["output_padding"] = tuple(draw(st.integers(0, m - 1)) for m in limits)
        size = tuple(draw(st.integers(1, 4)) for _ in range(ndim))
    batch = draw(st.sampled_from([1, 3, 5]))  # no powers of two beyond 1
    return dict(kernel_size=kernel, stride=stride, padding=padding, dilation=dilation,
                groups=groups, padding_mode=mode, transposed=transposed, **extra), \
        (batch, channels, *size)


def _ref_unfold(x, args):
    padding = args["padding"]
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(args["kernel_size"], args["dilation"])]
        padding = tuple((t // 2, t - t // 2) for t in totals)
    return unfold_ref(x, args["kernel_size"], args["stride"], padding, args["dilation"],
                      args["groups"], args["padding_mode"], args["transposed"],
                      args.get("output_padding", 0))


def _valid(args, shape):
    try:
        tnconv.ConvSpec(shape[1], args["groups"], args["kernel_size"], shape[2:],
                        stride=args["stride"], padding=args["padding"],
                        dilation=args["dilation"], groups=args["groups"],
                        padding_mode=args["padding_mode"], transposed=args["transposed"],
                        output_padding=args.get("output_padding", 0))
    except TNConvError:
        return False
    return True


# ------------------------------------------------------------------ property
OPTIONS = st.fixed_dictionaries({
    "bias": st.booleans(), "group_average": st.booleans(),
    "structure": st.sampled_from(["full", "diagonal"]),
    "strategy": st.sampled_from(STRATEGIES)})


def _check_factor(name, args, shape, options, reduction):
    if not _valid(args, shape):
        return
    x = rand(*shape)
    u = _ref_unfold(x, args)
    opts = {k: v for k, v in options.items() if k != "structure"}
    ref = (kfc_ref if name == "kfc" else reduce_ref)(
        u, reduction, options["bias"], options["group_average"])
    if options["structure"] == "diagonal":
        ref = diagonal(ref)
    got = getattr(TF, name)(x, **args, reduction=reduction, structure=options["structure"],
                            **opts)
    assert got.dtype == torch.float64
    assert_close(got, ref)


@given(conv_case(), OPTIONS, st.sampled_from(["mean", "batch", "sum"]))
def test_kfc_matches_im2col(case, options, reduction):
    _check_factor("kfc", *case, options, reduction)


@given(conv_case(), OPTIONS, st.sampled_from(["mean", "sum"]))
def test_kfac_reduce_matches_im2col(case, options, reduction):
    _check_factor("kfac_reduce", *case, options, reduction)


@given(conv_case(transposed=True), OPTIONS, st.sampled_from(["mean", "batch", "sum"]))
def test_transposed_kfc_matches_im2col(case, options, reduction):
    _check_factor("kfc", *case, options, reduction)
    _check_factor("kfac_reduce", *case, options, "sum" if reduction == "batch" else reduction)


@given(conv_case(), st.sampled_from(STRATEGIES))
def test_patches_match_im2col(case, strategy):
    args, shape = case
    if not _valid(args, shape):
        return
    x = rand(*shape)
    u = _ref_unfold(x, args)
    assert_close(TF.patches(x, **args, strategy=strategy), u.transpose(2, 3))
    assert_close(TF.averaged_patches(x, **args, strategy=strategy), u.mean(-1))


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kernel, stride", [(1, 1), (1, 2), (3, 1)])
def test_patches_are_new_memory(kernel, stride, strategy):
    x = rand(2, 3, 8)
    kept = x.clone()
    for p in (TF.patches(x, kernel, stride=stride, strategy=strategy),
              tnconv.patches(torch.nn.Conv1d(3, 3, kernel, stride=stride), x, strategy=strategy)):
        assert p.is_contiguous()
        p.zero_()  # as F.unfold's, writing into the patches leaves x alone
        assert_close(x, kept)


# ------------------------------------------------------------------ N = 4
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_four_dims_against_loops(mode, strategy):
    kernel, stride, dilation, pairs = (2, 1, 2, 2), (1, 2, 1, 1), (1, 1, 2, 1), \
        ((1, 0), (0, 1), (1, 1), (0, 0))
    x = rand(5, 4, 3, 4, 4, 3)
    u = unfold_loops(x, kernel, stride, pairs, dilation, 2, mode)
    args = dict(kernel_size=kernel, stride=stride, padding=pairs, dilation=dilation, groups=2,
                padding_mode=mode, strategy=strategy)
    assert_close(TF.kfc(x, **args, bias=True), kfc_ref(u, bias=True))
    assert_close(TF.kfac_reduce(x, **args), reduce_ref(u))
    assert_close(TF.kfc(x, **args, structure="diagonal"), diagonal(kfc_ref(u)))
    assert_close(TF.patches(x, **args), u.transpose(2, 3))


# ----------------------------------------------------------- module forms
MODULES = [
    (torch.nn.Conv1d(4, 6, 4, stride=2, padding=3, dilation=2, groups=2,
                     padding_mode="circular"), (5, 4, 11)),
    (torch.nn.Conv2d(3, 6, (3, 2), padding="same", padding_mode="reflect"), (3, 3, 6, 5)),
    (torch.nn.Conv3d(2, 4, 2, stride=(1, 2, 1), bias=False, padding=1,
                     padding_mode="replicate"), (3, 2, 4, 5, 3)),
    (torch.nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, groups=2),
     (3, 4, 3, 4)),
    (torch.nn.ConvTranspose1d(2, 3, 3, dilation=2, bias=False), (7, 2, 5)),
]


def _module_unfold(conv, x):
    transposed = isinstance(conv, torch.nn.modules.conv._ConvTransposeNd)
    pads = conv._reversed_padding_repeated_twice  # F.pad order: last dim first
    pairs = conv.padding if transposed else tuple(zip(pads[::2], pads[1::2]))[::-1]
    return unfold_ref(x, conv.kernel_size, conv.stride, pairs, conv.dilation, conv.groups,
                      conv.padding_mode, transposed,
                      tuple(conv.output_padding) if transposed else 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("conv, shape", MODULES)
def test_module_forms(conv, shape, strategy):
    conv = conv.double().to(DEVICE)
    x = rand(*shape)
    u = _module_unfold(conv, x)
    bias = conv.bias is not None
    assert_close(tnconv.kfc(conv, x, strategy=strategy), kfc_ref(u, bias=bias))
    assert_close(tnconv.kfc(conv, x, reduction="batch", group_average=True, strategy=strategy),
                 kfc_ref(u, "batch", bias, True))
    assert_close(tnconv.kfac_reduce(conv, x, strategy=strategy), reduce_ref(u, bias=bias))
    assert_close(tnconv.kfac_reduce(conv, x, structure="diagonal", bias=not bias,
                                    reduction="sum", strategy=strategy),
                 diagonal(reduce_ref(u, "sum", not bias)))
    assert_close(tnconv.patches(conv, x, strategy=strategy), u.transpose(2, 3))
    assert_close(tnconv.averaged_patches(conv, x, strategy=strategy), u.mean(-1))
    assert_close(tnconv.kfc(conv, x[0], strategy=strategy), kfc_ref(u[:1], bias=bias))


def test_shapes_follow_conventions():
    conv = torch.nn.Conv2d(6, 4, 3, groups=2).double()
    x = rand(3, 6, 5, 5)
    assert tnconv.kfc(conv, x).shape == (2, 28, 28)
    assert tnconv.kfc(conv, x, bias=False, group_average=True).shape == (27, 27)
    assert tnconv.kfac_reduce(conv, x, structure="diagonal").shape == (2, 28)
    assert tnconv.kfac_reduce(conv, x, structure="diagonal", group_average=True).shape == (28,)
    single = torch.nn.Conv1d(2, 2, 3, bias=False).double()
    assert tnconv.kfc(single, rand(7, 2, 9)).shape == (1, 6, 6)


# ------------------------------------------------------ reductions, shards
@pytest.mark.parametrize("name", ["kfc", "kfac_reduce"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_sharding(name, strategy):
    conv = torch.nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2).double()
    x = rand(7, 4, 7, 6)
    fn = getattr(tnconv, name)
    a, b = x[:3], x[3:]
    whole = fn(conv, x, reduction="sum", strategy=strategy)
    assert_close(fn(conv, a, reduction="sum", strategy=strategy)
                 + fn(conv, b, reduction="sum", strategy=strategy), whole)
    mean = (3 * fn(conv, a, strategy=strategy) + 4 * fn(conv, b, strategy=strategy)) / 7
    assert_close(mean, fn(conv, x, strategy=strategy))


@pytest.mark.parametrize("name", ["kfc", "kfac_reduce"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_empty_shard_adds_zeros_and_has_no_mean(name, strategy):
    """A batch split into shards may leave one empty: its summed factor is zero (bias
    column included); a mean over no samples is an error that names x."""
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=2).double()
    x = rand(3, 4, 5, 6)
    fn = getattr(tnconv, name)
    whole = fn(conv, x, reduction="sum", strategy=strategy)
    for _ in range(2):  # the second call takes the cached set-up
        empty = fn(conv, x[:0], reduction="sum", strategy=strategy)
        assert empty.shape == whole.shape and not empty.any()
        with pytest.raises(TNConvError, match="'x'.*no samples"):
            fn(conv, x[:0], strategy=strategy)
    functional = getattr(TF, name)(x[:0], 3, padding=1, groups=2, reduction="sum",
                                   bias=True, strategy=strategy)
    assert functional.shape == whole.shape and not functional.any()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_reductions_are_rescalings(strategy):
    conv = torch.nn.Conv1d(3, 3, 3, padding=1, bias=True).double()
    x = rand(7, 3, 11)
    total = tnconv.kfc(conv, x, reduction="sum", strategy=strategy)
    assert_close(tnconv.kfc(conv, x, reduction="batch", strategy=strategy), total / 7)
    assert_close(tnconv.kfc(conv, x, strategy=strategy), total / 77)
    assert tnconv.kfc(conv, x, strategy=strategy)[0, -1, -1].item() == 1.0


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("limit", [1, 50, 400, 10 ** 9])
def test_max_intermediate_chunks_give_same_factor(strategy, limit):
    conv = torch.nn.Conv2d(4, 2, 2, padding=(1, 0), groups=2, padding_mode="circular").double()
    x = rand(7, 4, 5, 4)
    u = _module_unfold(conv, x)
    for reduction in ("mean", "batch", "sum"):
        got = tnconv.kfc(conv, x, reduction=reduction, max_intermediate=limit, strategy=strategy)
        assert_close(got, kfc_ref(u, reduction, True))


# -------------------------------------------------------------- precision
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("name", ["kfc", "kfac_reduce"])
def test_low_precision_accumulates_in_fp32(strategy, name):
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(DEVICE)
    x = rand(5, 3, 8, 8).to(torch.bfloat16)
    got = getattr(tnconv, name)(conv, x, strategy=strategy)
    assert got.dtype == torch.float32
    u = _module_unfold(conv.double(), x.double())
    ref = (kfc_ref if name == "kfc" else reduce_ref)(u, bias=True)
    assert ((got.double() - ref).abs().max() / ref.abs().max()).item() <= 1e-2
    assert getattr(tnconv, name)(conv, x, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_float32_follows_input():
    conv = torch.nn.Conv1d(2, 2, 3)
    assert tnconv.kfc(conv, torch.rand(3, 2, 7)).dtype == torch.float32
    assert tnconv.kfc(conv, torch.rand(3, 2, 7), dtype=torch.float64).dtype == torch.float64


# ----------------------------------------------------- structure of programs
@pytest.mark.parametrize("rewrite", [False, True])
def test_reduce_program_never_unfolds(rewrite):
    spec = tnconv.ConvSpec(8, 8, kernel_size=3, input_size=(20, 20), padding=1)
    compiled = tnconv.compile("kfac_reduce", spec, strategy="tn", batch_size=5, rewrite=rewrite)
    unfolded = 5 * 8 * 9 * 400
    assert compiled.program.largest_intermediate <= max(5 * 8 * 3 * 20, 72 * 72) < unfolded


@pytest.mark.parametrize("rewrite", [False, True])
def test_diagonal_program_forms_no_matrix(rewrite):
    spec = tnconv.ConvSpec(8, 8, kernel_size=3, input_size=(6, 6), padding=1)
    for name in ("kfc", "kfac_reduce"):
        compiled = tnconv.compile(name, spec, strategy="tn", structure="diagonal",
                                  rewrite=rewrite)
        assert compiled.program.largest_intermediate < 72 * 72
        assert compiled.input_network().output_shape == (1, 8, 3, 3)


def test_registered_operations():
    spec = tnconv.ConvSpec(2, 2, kernel_size=2, input_size=(5,))
    for name in ("kfc", "kfac_reduce", "patches", "averaged_patches"):
        assert tnconv.compile(name, spec).program.equation


# ------------------------------------------------------------- bad input
BAD = [
    lambda: tnconv.kfc(torch.nn.Conv2d(3, 4, 3), torch.rand(2, 5, 8, 8)),
    lambda: tnconv.kfc(torch.nn.Conv2d(3, 4, 3), torch.rand(2, 3, 8)),
    lambda: tnconv.kfac_reduce(torch.nn.Linear(3, 4), torch.rand(2, 3)),
    lambda: tnconv.patches(torch.nn.Conv1d(3, 4, 3), torch.rand(2, 4, 8)),
    lambda: tnconv.kfc(torch.nn.Conv1d(3, 4, 3), torch.rand(2, 3, 8), reduction="max"),
    lambda: tnconv.kfac_reduce(torch.nn.Conv1d(3, 4, 3), torch.rand(2, 3, 8), reduction="batch"),
    lambda: tnconv.kfc(torch.nn.Conv1d(3, 4, 3), torch.rand(2, 3, 8), structure="block"),
    lambda: tnconv.kfc(torch.nn.Conv1d(3, 4, 3), torch.rand(2, 3, 8), bias="yes"),
    lambda: tnconv.kfc(torch.nn.Conv1d(3, 4, 3), torch.rand(2, 3, 8), max_intermediate=0),
    lambda: tnconv.kfc(torch.nn.Conv1d(3, 4, 3), torch.rand(2, 3, 8), strategy="fast"),
    lambda: tnconv.kfc(torch.nn.Conv1d(3, 4, 3), torch.ones(2, 3, 8, dtype=torch.int64)),
    lambda: TF.kfc(torch.rand(2, 3, 8), (3, 3)),
    lambda: TF.kfac_reduce(torch.rand(2, 3, 8), 3, groups=2),
]


@pytest.mark.parametrize("call", BAD)
def test_bad_input_raises(call):
    with pytest.raises(TNConvError):
        call()


@pytest.mark.parametrize("ndim, stride", [(1, 3), (2, (2, 1)), (3, 2), (2, 1)])
def test_pointwise_kernels_reduce_by_strided_sums(ndim, stride):
    """1×1 kernels without padding take the strided-pixel route of the mean patch."""
    conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[ndim](
        6, 4, 1, stride=stride, groups=2, bias=False)
    x = rand(5, 6, *([7] * ndim))
    u = unfold_ref(x, (1,) * ndim, conv.stride, 0, (1,) * ndim, 2)
    for strategy in ("auto", "tn"):
        assert_close(tnconv.kfac_reduce(conv, x, strategy=strategy), reduce_ref(u))
        for reduction in ("mean", "batch"):  # a scale applied to both copies would square
            assert_close(tnconv.kfc(conv, x, strategy=strategy, reduction=reduction),
                         kfc_ref(u, reduction))


@pytest.mark.parametrize("ndim, kernel, size", [
    (1, 4, 10), (2, (4, 2), (9, 8)), (2, (3, 2), (7, 7)), (3, (2, 2, 3), (5, 4, 6))])
def test_non_overlapping_patches_reduce_by_cropped_sums(ndim, kernel, size):
    """stride = kernel (ViT's patch embedding): the mean patch sums cropped tiles.

    Sizes that are not a multiple of the kernel leave a remainder that no patch
    reads; (3, 2) with stride (3, 1) mixes a tiled dimension with an overlapping one.
    """
    kernel = kernel if isinstance(kernel, tuple) else (kernel,)
    stride = (3, 1) if kernel == (3, 2) else kernel
    conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[ndim](
        4, 6, kernel, stride=stride, groups=2, bias=False)
    x = rand(3, 4, *(size if isinstance(size, tuple) else (size,)))
    u = unfold_ref(x, kernel, stride, 0, (1,) * ndim, 2)
    for strategy in ("auto", "tn"):
        assert_close(tnconv.averaged_patches(conv, x, strategy=strategy), u.mean(-1))
        assert_close(tnconv.kfac_reduce(conv, x, strategy=strategy), reduce_ref(u))


@pytest.mark.parametrize("kernel, stride, padding, dilation", [
    (10, 5, 0, 1), (4, 3, (2, 1), 2), (3, 1, 1, 1), (3, 2, 1, 1)])
def test_long_signals_with_few_channels_sum_their_windows(kernel, stride, padding, dilation):
    """Fewer rows (N·C) than taps: the mean patch sums phases of the signal itself
    (taps in order, a slice of them, a gather with dilation; a tail padded to whole phases)."""
    x = rand(1, 2, 61)
    pairs = [padding if isinstance(padding, tuple) else (padding, padding)]
    u = unfold_ref(x, (kernel,), (stride,), pairs, (dilation,), 2)
    kw = dict(kernel_size=kernel, stride=stride, padding=pairs, dilation=dilation, groups=2)
    assert_close(TF.averaged_patches(x, **kw), u.mean(-1))
    assert_close(TF.kfac_reduce(x, **kw), reduce_ref(u))
    assert_close(TF.kfac_reduce(x, **kw, bias=True, group_average=True, reduction="sum"),
                 reduce_ref(u, "sum", True, True))
    assert_close(TF.kfac_reduce(x, **kw, structure="diagonal"), diagonal(reduce_ref(u)))


@given(kernel=st.integers(1, 6), stride=st.integers(1, 6), dilation=st.integers(1, 3),
       pads=st.tuples(st.integers(0, 5), st.integers(0, 5)), extra=st.integers(0, 20),
       channels=st.integers(1, 5))
@example(kernel=6, stride=1, dilation=3, pads=(4, 3), extra=2, channels=1)
def test_few_row_signals_match_unfold_for_any_window(kernel, stride, dilation, pads, extra,
                                                      channels):
    """The phase route of short and long 1d signals (N·C below the taps), including taps
    whose every position lies in the padding (the example: tap 0 reads only zeros)."""
    span = (kernel - 1) * dilation + 1
    length = max(1, span - sum(pads)) + extra
    channels = min(channels, max(1, kernel - 1))
    x = rand(1, channels, length)
    u = unfold_ref(x, (kernel,), (stride,), [pads], (dilation,), 1)
    kw = dict(kernel_size=kernel, stride=stride, padding=[pads], dilation=dilation)
    assert_close(TF.kfac_reduce(x, **kw), reduce_ref(u))
    assert_close(TF.averaged_patches(x, **kw), u.mean(-1))


def test_module_call_cache_follows_changes_of_the_module():
    """The set-up is cached per module hyper-parameters: a changed module is set up anew."""
    conv = torch.nn.Conv2d(2, 3, 3, bias=True).double()
    x = rand(4, 2, 6, 6)
    assert tnconv.kfac_reduce(conv, x).shape == (1, 19, 19)
    conv.bias = None
    assert tnconv.kfac_reduce(conv, x).shape == (1, 18, 18)
    conv.padding = (1, 1)
    u = F.unfold(x, 3, padding=1).reshape(4, 1, 18, 36)  # [N, G, D, O]
    assert_close(tnconv.kfac_reduce(conv, x), reduce_ref(u))
    for _ in range(2):  # a bad call is never cached as valid
        with pytest.raises(TNConvError, match="channels"):
            tnconv.kfac_reduce(conv, rand(4, 3, 6, 6))
