"""Matmul steps: the last contraction written in the result's own layout, one batched product."""

from __future__ import annotations

import string

import torch
from hypothesis import assume, given
from hypothesis import strategies as st

import tnconv
from tests.helpers import DEVICE, assert_close, rand
from tnconv.runtime.execute import plan_for
from tnconv.runtime.matmul_step import MatmulStep, matmul_step


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
    a, b = rand(*(sizes[leg] for leg in first)), rand(*(sizes[leg] for leg in second))
    step = matmul_step(0, first, 1, second, out, sizes)
    if step is None:
        return
    result = step([a, b])
    equation = f"{''.join(first)},{''.join(second)}->{''.join(out)}"
    assert_close(result, torch.einsum(equation, a, b))
    assert result.is_contiguous()


def test_products_the_step_does_not_serve_are_declined():
    sizes = dict.fromkeys("abcdn", 2)
    assert matmul_step(0, ("a", "a"), 1, ("a", "b"), ("b",), sizes) is None  # a diagonal
    assert matmul_step(0, ("a", "c"), 1, ("b",), ("a", "b"), sizes) is None  # c summed alone
    assert matmul_step(0, ("a", "b"), 1, ("a", "c"), ("b", "a", "c"), sizes) is None  # no split
    # batch legs n, d: the first operand has n only, neither all nor none of them
    assert matmul_step(0, ("n", "a", "k"), 1, ("n", "d", "k", "b"), ("n", "d", "a", "b"),
                       dict(sizes, k=2)) is None


def test_a_convolution_ends_in_one_product_in_the_output_layout():
    """The tensor-network forward of a strided 1d front end: [n, a, o] from one batched
    product with the weight expanded over n (einsum laid it out [a, n, o], then a copy)."""
    spec = tnconv.ConvSpec(1, 8, 10, (200,), stride=5)
    program = tnconv.compile("forward", spec, strategy="tn").program_for(3)
    plan = plan_for(program, DEVICE, torch.float64)
    assert isinstance(plan._steps[-1], MatmulStep)
    x, w = rand(3, 1, 200), rand(8, 1, 10)
    assert_close(tnconv.conv(x, w, stride=5, strategy="tn"),
                 torch.nn.functional.conv1d(x, w, stride=5))
