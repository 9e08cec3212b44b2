"""The product family: Gram products (KFC, KFAC-reduce), matmuls written in the result's
layout, and chains of constant matrices on the legs of one data tensor."""

from __future__ import annotations

import string
from dataclasses import replace

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import tnconv
from tests.helpers import assert_close, rand, run_step, schedule_of, step_types
from tnconv.lower.schedule.builder import build_steps
from tnconv.lower.schedule.model import readers
from tnconv.lower.schedule.product import (SYMMETRIC_MIN_INNER, Gram, Matmul, MatrixChain,
                                           gram_rule, matmul_rule, matrix_rule, with_alpha)
from tnconv.lower.schedule.site import Operand, Site


# ------------------------------------------------------------------ Gram
def _gram_site(legs, copy_legs, out, sizes, signatures=("u", "u")) -> Site:
    return Site((Operand(0, tuple(legs), False, signature=signatures[0]),
                 Operand(0, tuple(copy_legs), False, signature=signatures[1])),
                tuple(out), 1, sizes)


def _einsum_gram(site: Site, u: torch.Tensor) -> torch.Tensor:
    return torch.einsum(site.equation(), u, u)


def test_kfc_on_a_depthwise_layer_runs_as_one_gram_product():
    spec = tnconv.ConvSpec(3, 3, kernel_size=3, input_size=(32, 32), padding=1, groups=3)
    assert step_types(schedule_of("kfc", spec, 5)) == [Gram]
    x = rand(5, 3, 32, 32)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False)
    u = torch.nn.functional.unfold(x, 3, padding=1).reshape(5, 3, 9, 1024)
    expected = torch.stack([torch.einsum("ndo,neo->de", u[:, g], u[:, g]) for g in range(3)])
    assert_close(tnconv.kfc(conv, x, strategy="tn"), expected / (5 * 1024))


@given(st.data())
def test_a_gram_step_matches_einsum_for_any_leg_order(data):
    """Random legs, each a batch, contracted or free leg (free legs renamed on the copy),
    in any order, the output in any order, with or without alpha."""
    legs = tuple(string.ascii_lowercase[:data.draw(st.integers(1, 5))])
    roles = {leg: data.draw(st.sampled_from(["batch", "contracted", "free"])) for leg in legs}
    assume("free" in roles.values())
    sizes = {leg: data.draw(st.integers(1, 3)) for leg in legs}
    sizes.update({leg.upper(): sizes[leg] for leg in legs})
    legs = tuple(data.draw(st.permutations(legs)))
    copy_legs = tuple(leg.upper() if roles[leg] == "free" else leg for leg in legs)
    kept = [leg for leg in set(legs) | set(copy_legs) if roles.get(leg.lower()) != "contracted"]
    out = tuple(data.draw(st.permutations(sorted(kept))))
    site = _gram_site(legs, copy_legs, out, sizes)
    step = gram_rule(site)
    assert step is not None
    u = rand(*site.shape(legs))
    alpha = data.draw(st.sampled_from([1.0, 0.5]))
    assert_close(run_step(with_alpha(step, alpha), u), alpha * _einsum_gram(site, u))


def test_gram_step_takes_either_copy_first_without_a_transposing_copy():
    u = rand(3, 4, 5)  # legs n, c, o
    for out in (("c", "d"), ("d", "c")):
        site = _gram_site(("n", "c", "o"), ("n", "d", "o"), out, dict(n=3, c=4, d=4, o=5))
        step = gram_rule(site)
        assert step.output_permutation == ()  # already in order
        assert_close(run_step(step, u), _einsum_gram(site, u))


def test_a_thin_gram_step_reads_a_contracted_first_operand_as_it_lies(monkeypatch):
    """KFAC-reduce's [N, D] mean patch: ūᵀ ū without a transposing copy of ū."""
    site = _gram_site(("n", "c", "k"), ("n", "d", "l"), ("c", "k", "d", "l"),
                      dict(n=4, c=3, k=5, d=3, l=5))
    step = gram_rule(site)
    assert step.contracted_first and not step.symmetric
    u = rand(4, 3, 5)
    expected = _einsum_gram(site, u)
    monkeypatch.setattr(torch.Tensor, "permute", None)  # the operand is never permuted
    assert_close(run_step(step, u), expected)


@pytest.mark.parametrize("alpha", [1.0, 0.25])
def test_a_large_gram_step_computes_half_and_mirrors_it(alpha):
    """Contracted size ≥ SYMMETRIC_MIN_INNER: blocks on and above the diagonal only
    (300 free rows: several blocks), mirrored; batch legs kept, legs permuted."""
    sizes = dict(g=2, c=300, d=300, o=SYMMETRIC_MIN_INNER + 6)
    site = _gram_site(("o", "g", "c"), ("o", "g", "d"), ("g", "d", "c"), sizes)
    step = with_alpha(gram_rule(site), alpha)
    assert step.symmetric and step.matrix_shape == (2, 300, SYMMETRIC_MIN_INNER + 6)
    u = rand(SYMMETRIC_MIN_INNER + 6, 2, 300)
    assert_close(run_step(step, u), alpha * _einsum_gram(site, u))


@pytest.mark.parametrize("legs, copy_legs, out, signatures", [
    (("n", "c"), ("n", "d"), ("c", "d"), ("u", "v")),  # two different tensors
    (("n", "c"), ("n", "c"), ("n", "c"), ("u", "u")),  # no free leg: a square, not a Gram
    (("n", "c"), ("n", "d"), ("c",), ("u", "u")),  # a free leg summed on one copy
    (("n", "c"), ("c", "n"), ("n", "c"), ("u", "u")),  # the copy's legs are transposed
])
def test_products_that_are_no_gram_are_declined(legs, copy_legs, out, signatures):
    site = _gram_site(legs, copy_legs, out, dict(n=2, c=3, d=3), signatures)
    assert gram_rule(site) is None


def test_kfac_reduce_averages_the_input_once_and_meets_in_a_gram_step():
    """The two copies of the averaged input are one common sub-expression: one chain, whose
    register the Gram step reads (twice); the normalisation rides as its square root on a
    matrix of counts, so the Gram is a plain product."""
    spec = tnconv.ConvSpec(8, 8, kernel_size=3, input_size=(20, 20), padding=2, dilation=2)
    compiled = tnconv.compile("kfac_reduce", spec, strategy="tn")
    schedule = compiled.schedule(3)
    assert step_types(schedule) == [MatrixChain, Gram]
    chain, gram = schedule.steps
    assert gram.inputs == (chain.output,) and readers(schedule)[chain.output] == 2
    assert build_steps(compiled.program_for(3)).scale != 1
    assert gram.alpha == 1 and schedule.scale == 1
    conv = torch.nn.Conv2d(8, 8, 3, padding=2, dilation=2, bias=False)
    x = rand(3, 8, 20, 20)
    ubar = torch.nn.functional.unfold(x, 3, padding=2, dilation=2).mean(2)
    assert_close(tnconv.kfac_reduce(conv, x, strategy="tn")[0], ubar.T @ ubar / 3)


# ------------------------------------------------------------------ Matmul
@given(st.data())
def test_a_matmul_step_matches_einsum_and_writes_its_result_contiguous(data):
    """Random legs on two operands (shared and own), a random output order: where a step
    is returned, its value is einsum's and its result needs no copy."""
    names = list(string.ascii_lowercase[:data.draw(st.integers(2, 6))])
    sizes = {leg: data.draw(st.integers(1, 3)) for leg in names}
    where = {leg: data.draw(st.sampled_from(["first", "second", "both"])) for leg in names}
    first = [leg for leg in names if where[leg] in ("first", "both")]
    second = [leg for leg in names if where[leg] in ("second", "both")]
    first = tuple(data.draw(st.permutations(first)))
    second = tuple(data.draw(st.permutations(second)))
    kept = [leg for leg in names if where[leg] != "both" or data.draw(st.booleans())]
    out = tuple(data.draw(st.permutations(kept)))
    assume(first and second)
    site = Site((Operand(0, first, False), Operand(1, second, False)), out, 2, sizes, final=True)
    step = matmul_rule(site)
    assert matmul_rule(replace(site, final=False)) is None  # the last step only
    if step is None:
        return
    a, b = rand(*site.shape(first)), rand(*site.shape(second))
    result = run_step(step, a, b)
    assert_close(result, torch.einsum(site.equation(), a, b))
    assert result.is_contiguous()


def _matmul(first, second, out, sizes):
    site = Site((Operand(0, first, False), Operand(1, second, False)), out, 2, sizes, final=True)
    return matmul_rule(site)


def test_products_the_matmul_step_does_not_serve_are_declined():
    sizes = dict.fromkeys("abcdkn", 2)
    assert _matmul(("a", "a"), ("a", "b"), ("b",), sizes) is None  # a diagonal
    assert _matmul(("a", "c"), ("b",), ("a", "b"), sizes) is None  # c summed alone
    assert _matmul(("a", "b"), ("a", "c"), ("b", "a", "c"), sizes) is None  # no split
    # batch legs n, d: the first operand has n only, neither all nor none of them
    assert _matmul(("n", "a", "k"), ("n", "d", "k", "b"), ("n", "d", "a", "b"), sizes) is None
    assert _matmul(("a", "b"), ("b", "c"), ("a", "c"), sizes) is not None  # a plain product


def test_a_convolution_ends_in_one_product_in_the_output_layout():
    """The tensor-network forward of a strided 1d front end: [n, a, o] from one batched
    product with the weight expanded over n."""
    spec = tnconv.ConvSpec(1, 8, 10, (200,), stride=5)
    assert isinstance(schedule_of("forward", spec, 3).steps[-1], Matmul)
    x, w = rand(3, 1, 200), rand(8, 1, 10)
    assert_close(tnconv.conv(x, w, stride=5, strategy="tn"),
                 torch.nn.functional.conv1d(x, w, stride=5))


# ------------------------------------------------------------------ MatrixChain
def _matrix(data_register, data_legs, matrix_register, matrix_legs, out, output, sizes):
    site = Site((Operand(data_register, tuple(data_legs), False),
                 Operand(matrix_register, tuple(matrix_legs), True)), tuple(out), output, sizes)
    return matrix_rule(site)


@given(st.data())
def test_chains_match_einsum_in_any_leg_order(data):
    """Random data legs, matrices on a random subset of them, either storage orientation,
    applied one step at a time in a random order with a random output order each, merged
    into one chain (`then`)."""
    ndim = data.draw(st.integers(1, 4))
    legs = tuple(string.ascii_lowercase[:ndim])
    sizes = {leg: data.draw(st.integers(1, 4)) for leg in legs}
    chosen = data.draw(st.permutations(legs))[:data.draw(st.integers(1, ndim))]
    x = rand(*(sizes[leg] for leg in legs))
    registers, current, chain, data_register = [x], legs, None, 0
    terms, operands = ["".join(legs)], [x]
    for n, leg in enumerate(chosen):
        new = string.ascii_uppercase[n]
        sizes[new] = data.draw(st.integers(1, 3))
        transposed = data.draw(st.booleans())
        matrix_legs = (leg, new) if transposed else (new, leg)
        registers.append(rand(*(sizes[m] for m in matrix_legs)))
        operands.append(registers[-1])
        terms.append("".join(matrix_legs))
        out = tuple(data.draw(st.permutations(tuple(new if c == leg else c for c in current))))
        step = _matrix(data_register, current, len(registers) - 1, matrix_legs, out,
                       len(registers), sizes)
        assert step is not None
        chain = step if chain is None else chain.then(step)
        assert chain is not None
        registers.append(None)  # the step's result register
        current, data_register = out, len(registers) - 1
    positions = [position for position, _ in chain.matrices]
    assert positions == sorted(positions)  # outermost leg first
    expected = torch.einsum(",".join(terms) + "->" + "".join(current), *operands)
    assert_close(run_step(chain, *registers), expected)


def test_steps_that_are_not_one_matrix_on_one_leg_are_declined():
    sizes = dict.fromkeys("nijk", 2)
    assert _matrix(0, ("n", "i"), 1, ("i", "j", "k"), ("n", "j", "k"), 2, sizes) is None
    assert _matrix(0, ("n", "i"), 1, ("n", "i"), ("n",), 2, sizes) is None  # both legs on x
    assert _matrix(0, ("n", "i"), 1, ("i", "k"), ("n", "i", "k"), 2, sizes) is None  # i kept
    assert _matrix(0, ("n", "i"), 1, ("i", "k"), ("k",), 2, sizes) is None  # a data leg summed
    data_matrix = Site((Operand(0, ("n", "i"), False), Operand(1, ("i", "k"), False)),
                       ("n", "k"), 2, sizes)
    assert matrix_rule(data_matrix) is None  # the matrix is data, not a constant
    assert _matrix(0, ("n", "i"), 1, ("i", "k"), ("n", "k"), 2, sizes) is not None


def test_a_matrix_on_a_leg_the_chain_created_is_not_merged():
    sizes = dict.fromkeys("nijk", 2)
    first = _matrix(0, ("n", "i"), 1, ("k", "i"), ("n", "k"), 2, sizes)
    second = _matrix(2, ("n", "k"), 3, ("j", "k"), ("n", "j"), 4, sizes)
    assert first.then(second) is None


def test_kfac_reduce_sums_each_dimension_in_one_chain_outermost_first():
    """The TN route of KFAC-reduce: one chain over the input (the copy's chain is the same
    and is not run), then the Gram product."""
    spec = tnconv.ConvSpec(8, 8, kernel_size=(3, 2, 3), input_size=(6, 7, 9), padding=1,
                           dilation=(1, 2, 1))
    schedule = schedule_of("kfac_reduce", spec, 3)
    chains = [s for s in schedule.steps if isinstance(s, MatrixChain)]
    assert len(chains) == 1 and len(chains[0].matrices) == 3
    assert [p for p, _ in chains[0].matrices] == [2, 3, 4]
    x = rand(3, 8, 6, 7, 9)
    conv = torch.nn.Conv3d(8, 8, (3, 2, 3), padding=1, dilation=(1, 2, 1), bias=False)
    assert_close(tnconv.kfac_reduce(conv, x, strategy="tn"),
                 tnconv.kfac_reduce(conv, x, strategy="auto"))


def test_a_matmul_operand_is_copied_in_the_layout_that_streams():
    """Windows laid out as [n·o, c·k] (a weight VJP): the copy runs along o (unit stride,
    56 long) and is read back transposed, not along the 3 taps; the values are the
    reshape's either way, and a view stays a view."""
    from tnconv.runtime.product import _matrix

    x = rand(2, 4, 58, 58)
    windows = x.unfold(2, 3, 1).unfold(3, 3, 1)            # [n, c, o1, o2, k1, k2]
    rows_then_taps = windows.permute(0, 2, 3, 1, 4, 5)      # [n, o1, o2 | c, k1, k2]
    matrix = _matrix(rows_then_taps, (2 * 56 * 56, 4 * 9))
    assert matrix.stride() == (1, 2 * 56 * 56)               # column-major: o innermost
    assert torch.equal(matrix, rows_then_taps.reshape(2 * 56 * 56, 4 * 9))
    taps_then_rows = windows.permute(0, 1, 4, 5, 2, 3)      # [n | c, k1, k2 | o1, o2]
    batched = _matrix(taps_then_rows, (2, 4 * 9, 56 * 56))
    assert batched.stride()[-1] == 1                         # row-major: o innermost
    assert torch.equal(batched, taps_then_rows.reshape(2, 4 * 9, 56 * 56))
    plain = rand(3, 4, 5)
    assert _matrix(plain, (12, 5)).data_ptr() == plain.data_ptr()


@pytest.mark.parametrize("batched", [True, False])
def test_a_chain_matrix_that_is_one_value_almost_everywhere_is_a_sum_plus_its_border(batched):
    """KFAC-reduce's Σ_o Π (each tap reads every pixel but a few at the borders): applied
    as the scaled sum of the leg plus the few differing entries, it equals the product; a
    matrix without one dominant value keeps the product."""
    from tnconv.runtime.product import _sum_and_border

    m = torch.full((3, 40), 0.25, dtype=torch.float64)
    m[0, 39], m[2, 0], m[1, 5] = 0.0, 0.0, 0.75
    shape = (6, 40, 7) if batched else (6, 40)
    t = rand(*shape)
    apply = _sum_and_border(m, batched, shape)
    assert apply is not None
    expected = torch.einsum("ki,ris->rks", m, t) if batched else t @ m.T
    assert_close(apply(t), expected)
    assert _sum_and_border(rand(3, 40), batched, shape) is None
