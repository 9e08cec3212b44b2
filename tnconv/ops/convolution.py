"""Builders for the forward (transposed) convolution and for unfold (im2col).

The forward network of an N-d convolution with G groups is

    Y[n, g, c_out, o…] = Σ X[n, g, c_in, i…] · W[g, c_out, c_in, k…] · Π_d[k_d, o_d, i_d]

with one index pattern Π_d per spatial dimension. A transposed convolution is
the same network with the roles of i and o exchanged in Π (its input carries
the pattern's `o` leg) and the weight laid out [g, c_in, c_out, k…].

>>> from tnconv.spec.conv_spec import ConvSpec
>>> net = forward_network(ConvSpec(4, 6, kernel_size=3, input_size=(8, 8), groups=2), 5)
>>> [t.name for t in net.tensors], net.output
(['X', 'W', 'Π1', 'Π2'], ('n', 'g', 'c_out', 'o1', 'o2'))
"""

from __future__ import annotations

from math import prod

from tnconv.ir.network import Network, Tensor
from tnconv.spec.conv_spec import ConvSpec
from tnconv.ops.registry import Operation, register

__all__ = ["forward_network", "unfold_network", "spatial", "conv_sizes"]


def spatial(prefix: str, spec: ConvSpec) -> tuple[str, ...]:
    """Names of one kind of spatial leg, e.g. ('k1', 'k2') for prefix 'k'."""
    return tuple(f"{prefix}{d + 1}" for d in range(spec.ndim))


def conv_sizes(spec: ConvSpec, batch: int) -> tuple[tuple[str, int], ...]:
    """Sizes of every index of the convolution network."""
    g = spec.groups
    sizes = [("n", batch), ("g", g), ("c_in", spec.in_channels // g),
             ("c_out", spec.out_channels // g)]
    sizes += zip(spatial("i", spec), spec.input_size)  # type: ignore[arg-type]
    sizes += zip(spatial("k", spec), spec.kernel_size)  # type: ignore[arg-type]
    sizes += zip(spatial("o", spec), spec.output_size)
    return tuple(sizes)


def _pattern_tensors(spec: ConvSpec) -> tuple[Tensor, ...]:
    tensors = []
    for d, pattern in enumerate(spec.patterns()):
        k, i, o = f"k{d + 1}", f"i{d + 1}", f"o{d + 1}"
        legs = (k, i, o) if spec.transposed else (k, o, i)
        tensors.append(Tensor(f"Π{d + 1}", legs, "pattern", pattern))
    return tuple(tensors)


def _input(spec: ConvSpec) -> Tensor:
    return Tensor("X", ("n", "g", "c_in", *spatial("i", spec)), "input")


def forward_network(spec: ConvSpec, batch: int) -> Network:
    """Y = conv(X, W) (or its transposed form) as a network; the bias is added after."""
    channels = ("g", "c_in", "c_out") if spec.transposed else ("g", "c_out", "c_in")
    weight = Tensor("W", (*channels, *spatial("k", spec)), "weight")
    return Network(
        tensors=(_input(spec), weight, *_pattern_tensors(spec)),
        sizes=conv_sizes(spec, batch),
        output=("n", "g", "c_out", *spatial("o", spec)),
        name="forward",
    ).pruned_sizes().validate()


def unfold_network(spec: ConvSpec, batch: int) -> Network:
    """Unfolded input U[n, g, c_in, k…, o…] (im2col), the input of the matrix-multiply view."""
    return Network(
        tensors=(_input(spec), *_pattern_tensors(spec)),
        sizes=conv_sizes(spec, batch),
        output=("n", "g", "c_in", *spatial("k", spec), *spatial("o", spec)),
        name="unfold",
    ).pruned_sizes().validate()



def input_shape(spec: ConvSpec, batch: int) -> tuple[int, ...]:
    return (batch, spec.in_channels, *spec.input_size)  # type: ignore[misc]


def output_shape(spec: ConvSpec, batch: int) -> tuple[int, ...]:
    return (batch, spec.out_channels, *spec.output_size)


def unfold_shape(spec: ConvSpec, batch: int) -> tuple[int, ...]:
    return (batch, spec.in_channels * prod(spec.kernel_size),  # type: ignore[arg-type]
            prod(spec.output_size))


register(Operation(
    name="forward",
    build=lambda spec, batch: forward_network(spec, batch),
    arguments=("input", "weight"),
    argument_shapes=lambda spec, batch: (input_shape(spec, batch), spec.weight_shape),
    result_shape=output_shape,
    description="convolution (or transposed convolution) of the input with the weight",
    native="tnconv.runtime.native:conv_forward",
))

register(Operation(
    name="unfold",
    build=lambda spec, batch: unfold_network(spec, batch),
    arguments=("input",),
    argument_shapes=lambda spec, batch: (input_shape(spec, batch),),
    result_shape=unfold_shape,
    description="unfolded input (im2col), [N, C_in·∏K, ∏O] as torch.nn.functional.unfold",
))
