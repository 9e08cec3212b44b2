"""Matrix chains: constant matrices on distinct legs of one data tensor, outermost first."""

from __future__ import annotations

import string

import torch
from hypothesis import given
from hypothesis import strategies as st

import tnconv
from tests.helpers import DEVICE, assert_close, rand
from tnconv.runtime.execute import plan_for
from tnconv.runtime.matrix_chain import MatrixChainStep, matrix_step


@given(st.data())
def test_chains_match_einsum_in_any_leg_order(data):
    """Random data legs, matrices on a random subset of them, either storage orientation,
    applied one step at a time in a random order with a random output order each."""
    ndim = data.draw(st.integers(1, 4))
    legs = tuple(string.ascii_lowercase[:ndim])
    sizes = {leg: data.draw(st.integers(1, 4)) for leg in legs}
    chosen = data.draw(st.permutations(legs))[:data.draw(st.integers(1, ndim))]
    x = rand(*(sizes[leg] for leg in legs))
    registers, current, chain = [x], legs, None
    expected_terms, operands = ["".join(legs)], [x]
    for n, leg in enumerate(chosen):
        new = string.ascii_uppercase[n]
        k = data.draw(st.integers(1, 3))
        transposed = data.draw(st.booleans())
        matrix_legs = (leg, new) if transposed else (new, leg)
        m = rand(*(sizes[leg], k) if transposed else (k, sizes[leg]))
        registers.append(m)
        operands.append(m)
        expected_terms.append("".join(matrix_legs))
        out = tuple(data.draw(st.permutations(
            tuple(new if c == leg else c for c in current))))
        step = matrix_step(0 if chain is None else -1, current, len(registers) - 1,
                           matrix_legs, out)
        assert step is not None
        chain = step if chain is None else chain.then(step)
        assert chain is not None
        current = out
    positions = [position for _, position, _ in chain.matrices]
    assert positions == sorted(positions)  # outermost leg first
    expected = torch.einsum(",".join(expected_terms) + "->" + "".join(current), *operands)
    assert_close(chain(registers), expected)
    bound = chain.bind(registers, tuple(x.shape))  # operands and shapes laid out once
    assert bound.bound is not None and bound == chain
    assert_close(bound(registers), expected)


def test_steps_that_are_not_one_matrix_on_one_leg_are_declined():
    assert matrix_step(0, ("n", "i"), 1, ("i", "j", "k"), ("n", "j", "k")) is None  # 3 legs
    assert matrix_step(0, ("n", "i"), 1, ("n", "i"), ("n",)) is None  # both legs on the data
    assert matrix_step(0, ("n", "i"), 1, ("i", "k"), ("n", "i", "k")) is None  # leg kept
    assert matrix_step(0, ("n", "i"), 1, ("i", "k"), ("k",)) is None  # a data leg summed


def test_a_matrix_on_a_leg_the_chain_created_is_not_merged():
    first = matrix_step(0, ("n", "i"), 1, ("k", "i"), ("n", "k"))
    second = matrix_step(2, ("n", "k"), 3, ("j", "k"), ("n", "j"))
    assert first.then(second) is None


def test_kfac_reduce_sums_each_dimension_in_one_chain_outermost_first():
    """The TN route of KFAC-reduce: one chain over the input (the copy's chain is the same
    and is not run), then the Gram product; no step left over from the shared copy."""
    spec = tnconv.ConvSpec(8, 8, kernel_size=(3, 2, 3), input_size=(6, 7, 9), padding=1,
                           dilation=(1, 2, 1))
    program = tnconv.compile("kfac_reduce", spec, strategy="tn").program_for(3)
    plan = plan_for(program, DEVICE, torch.float64)
    chains = [s for s in plan._steps if isinstance(s, MatrixChainStep)]
    assert len(chains) == 1 and len(chains[0].matrices) == 3
    assert [p for _, p, _ in chains[0].matrices] == [2, 3, 4]
    x = rand(3, 8, 6, 7, 9)
    conv = torch.nn.Conv3d(8, 8, (3, 2, 3), padding=1, dilation=(1, 2, 1), bias=False)
    assert_close(tnconv.kfac_reduce(conv, x, strategy="tn"),
                 tnconv.kfac_reduce(conv, x, strategy="auto"))
