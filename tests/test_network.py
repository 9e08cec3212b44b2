"""The Network IR: immutability, hashing, validation, networkx view, lowering symbols."""

from __future__ import annotations

import dataclasses

import pytest

import tnconv
from tnconv import ConvSpec, Network, Tensor, TNConvError
from tnconv.lower import lower
from tnconv.ops.convolution import forward_network, unfold_network


def test_network_is_immutable_and_hashable():
    spec = ConvSpec(4, 6, kernel_size=3, input_size=(8, 8), groups=2)
    a, b = forward_network(spec, 3), forward_network(spec, 3)
    assert a == b and hash(a) == hash(b)
    assert a != forward_network(spec, 4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.output = ()


def test_forward_network_structure():
    net = forward_network(ConvSpec(4, 6, kernel_size=(3, 2), input_size=(8, 9), groups=2), 3)
    assert net.size("g") == 2 and net.size("c_in") == 2 and net.size("c_out") == 3
    assert net.with_role("weight").indices == ("g", "c_out", "c_in", "k1", "k2")
    assert net.hyper_edges() == ("g",)  # X, W and the output
    graph = net.to_networkx()
    assert graph.degree[("index", "i1")] == 2  # X and Π1
    assert graph.degree[("index", "g")] == 3  # X, W and the output


@pytest.mark.parametrize("bad, match", [
    (dict(tensors=(Tensor("X", ("n",), "input"), Tensor("X", ("n",), "weight"))), "repeat"),
    (dict(tensors=(Tensor("X", ("n", "q"), "input"),)), "undeclared"),
    (dict(tensors=(Tensor("X", ("n", "n"), "input"),)), "repeats an index"),
    (dict(output=("m",)), "output"),
    (dict(sizes=(("n", 0), ("m", 2))), "size"),
    (dict(tensors=(Tensor("P", ("n",), "pattern"),)), "no value"),
])
def test_validate_rejects(bad, match):
    base = dict(tensors=(Tensor("X", ("n",), "input"),), sizes=(("n", 2), ("m", 2)),
                output=("n",))
    base.update(bad)
    with pytest.raises(TNConvError, match=match):
        Network(**base).validate()


def test_lowering_has_no_letter_limit():
    spec = ConvSpec(1, 1, kernel_size=(1,) * 20, input_size=(2,) * 20)
    program = lower(unfold_network(spec, 1), ("input",), (1, 1, 2 ** 20))
    assert len(program.symbols) == 63 and len(set(s for _, s in program.symbols)) == 63
    assert any(not s.isascii() for _, s in program.symbols)


def test_program_reports_path_and_costs():
    compiled = tnconv.compile("forward", ConvSpec(3, 8, 3, (16, 16), padding=1), batch_size=4,
                              rewrite=False)  # the network as built, patterns included
    program = compiled.program
    assert [op.role for op in program.operands] == ["input", "weight", "pattern", "pattern"]
    assert len(program.path) == 3 and program.flops > 0 and program.largest_intermediate > 0
    text = compiled.explain()
    for fragment in (program.equation, "path", "flops", "largest intermediate", "Π1"):
        assert fragment in text
