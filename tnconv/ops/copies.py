"""Copies of a network with primed legs: squares, Gram matrices and their contraction form.

Curvature quantities are quadratic in a network φ that is linear in its data:
a per-sample gradient g[n, w], a sqrt-factor column φ[c, n, w]. Squaring one
is a network holding φ twice: the copy's tensors and legs are primed (name + "'")
except the legs both copies share; the legs neither keeps open are summed.

    Σ_w φ[n, w]²           shared = (n, w…),  output = (n,)
    Σ_n φ[n, w]²           shared = (n, w…),  output = (w…)
    Σ_w φ[a, w] φ[a', w]   shared = (w…),     output = (a, a')

Where φ is itself a contraction of patches with a cotangent over the output
positions o, the copy has its own o', and the compiler's path decides whether
φ is formed first (then squared; the schedule computes it once, as the copy is a
common sub-expression) or the patches and the cotangents each meet their copy
first (the Gram form Σ_{o,o'} (UᵀU')∘(VᵀV')). `contraction_form` reads which one
a program's path took.

>>> from tnconv.spec.conv_spec import ConvSpec
>>> from tnconv.ops.convolution import forward_network
>>> from tnconv.ops.autodiff import vjp_network
>>> g = vjp_network(forward_network(ConvSpec(2, 3, 3, input_size=(6,)), 4), "weight",
...                 keep=("n",))
>>> net = with_copy(g, shared=g.output, output=("n",), name="batch_l2")
>>> [t.name for t in net.tensors], net.output
(['X', 'Π1', 'V', "X'", "Π1'", "V'"], ('n',))
>>> net.tensor("V'").indices
('n', 'g', 'c_out', "o1'")
"""

from __future__ import annotations

from typing import Iterable, Optional

from tnconv.ir.network import Network, Tensor

__all__ = ["prime", "primed_copies", "with_copy", "contraction_form", "FORMS"]

#: What `contraction_form` can say about a program's path.
FORMS = {
    "per_sample": "the quantity is formed per sample first (φ = patches · cotangent), then "
                  "squared",
    "gram": "Gram form: the patches and the cotangents each meet their copy first "
            "(Σ_{o,o'} (UᵀU')∘(VᵀV'))",
    "other": "neither the per-sample nor the Gram form (an order mixing both)",
}


def prime(name: str) -> str:
    return name + "'"


def primed_copies(tensors: Iterable[Tensor], primed: set[str]) -> tuple[Tensor, ...]:
    """Copies of `tensors` with primed names and the legs in `primed` primed."""
    return tuple(Tensor(prime(t.name), tuple(prime(i) if i in primed else i for i in t.indices),
                        t.role, t.value, t.view) for t in tensors)


def with_copy(net: Network, shared: Iterable[str], output: tuple[str, ...],
              scale: float = 1.0, name: str = "", extra: tuple[Tensor, ...] = (),
              extra_sizes: tuple[tuple[str, int], ...] = ()) -> Network:
    """`net` times its primed copy (legs in `shared` not primed), open legs `output`.

    `extra` tensors (e.g. a constant coupling a leg with its primed twin) join the
    network; `extra_sizes` declares indices only they carry.
    """
    shared = set(shared)
    primed = {i for i, _ in net.sizes} - shared
    sizes = dict(net.sizes)
    sizes.update({prime(i): net.size(i) for i, _ in net.sizes if i in primed})
    sizes.update(extra_sizes)
    return Network(
        tensors=net.tensors + primed_copies(net.tensors, primed) + extra,
        sizes=tuple(sizes.items()), output=output, scale=scale * net.scale,
        name=name or net.name,
    ).pruned_sizes().validate()


def contraction_form(program, data_role: str = "input") -> str:
    """"per_sample", "gram" or "other": which order `program`'s path (after the rewrites)
    takes for a square of φ = (data of `data_role`) · (cotangent).

    The first contraction that joins two data operands decides: an operand of
    `data_role` met with a cotangent forms φ; two copies of one role met first
    are the Gram form.
    """
    from tnconv.lower.paths import walk_path

    operands = program.operands
    # What each operand holds: (role, is a copy) of the data operands it contains.
    held: dict[int, frozenset] = {
        pos: frozenset() if op.is_constant else frozenset([(op.role, op.name.endswith("'"))])
        for pos, op in enumerate(operands)}
    for step in walk_path([op.indices for op in operands], [op.is_constant for op in operands],
                          program.path, program.output_indices):
        met = [held[t] for t in step.taken if held[t]]
        held[step.result] = frozenset().union(*met) if met else frozenset()
        if len(met) < 2:
            continue
        joined = held[step.result]
        roles = {role for role, _ in joined}
        if len(roles) == 1 and len(joined) == 2:
            return "gram"
        if len(joined) == 2 and data_role in roles and len({c for _, c in joined}) == 1:
            return "per_sample"
        return "other"
    return "other"
