"""Export to a framework-free einsum: numbers, scale folding, backends, CLI and the file format."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import tnconv
from tnconv.cli import main
from tnconv.errors import TNConvError
from tnconv.export.exported import export_program
from tnconv.lower import lower
from tnconv.ir.network import Network, Tensor
from tnconv.ops import OPERATIONS
from tests.helpers import assert_close, rand

#: Operations with an einsum to export: the sampled ones take index vectors, drawn per call
#: (their `to_einsum` error is tested in tests/test_sampled_networks.py).
EXPORTABLE = sorted(name for name, op in OPERATIONS.items() if "selection" not in op.arguments)

SPEC_2D = tnconv.ConvSpec(4, 6, kernel_size=3, input_size=(7, 6), stride=(2, 1), padding=1,
                          groups=2)
OTHER_SPECS = [
    tnconv.ConvSpec(2, 3, kernel_size=3, input_size=(9,), dilation=2, padding=2,
                    padding_mode="reflect"),
    tnconv.ConvSpec(2, 2, kernel_size=2, input_size=(3, 4, 3), stride=(1, 2, 1)),
    tnconv.ConvSpec(4, 6, kernel_size=3, input_size=(4, 5), stride=2, padding=1, groups=2,
                    transposed=True, output_padding=1),
]


def _case(name: str, spec: tnconv.ConvSpec, batch: int):
    """Compiled operation, float64 torch arguments and the torch result (strategy 'tn')."""
    compiled = tnconv.compile(name, spec, strategy="tn", batch_size=batch)
    shapes = compiled.operation.argument_shapes(spec, batch, **compiled.options)
    tensors = [rand(*shape) for shape in shapes]
    return compiled, tensors, compiled(*tensors)


def _numpy(tensors):
    return [t.cpu().numpy() for t in tensors]


#: Operations with a constant sized by the batch (variance's centering matrix): exported
#: for a fixed batch size (tests/test_batch_free_export.py checks that batch-free refuses).
BATCH_SIZED = {"variance"}


def _export(compiled, name: str, batch: int):
    return compiled.to_einsum(batch_size=batch if name in BATCH_SIZED else None)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_every_operation_matches_torch_in_numpy(name):
    compiled, tensors, expected = _case(name, SPEC_2D, 3)
    exported = _export(compiled, name, 3)
    assert exported.alphabet == "ascii" and exported.operation == name
    assert all(op.role == "constant" for op in exported.constants)
    assert len(exported.operands) == len(compiled.export_program(3).operands)  # scale folded
    result = exported.evaluate(*_numpy(tensors))
    assert isinstance(result, np.ndarray) and result.dtype == np.float64
    assert_close(torch.from_numpy(result).to(expected.device), expected)


@pytest.mark.parametrize("spec", OTHER_SPECS, ids=["1d", "3d", "transposed"])
@pytest.mark.parametrize("name", EXPORTABLE)
def test_every_operation_on_other_specs(name, spec):
    compiled, tensors, expected = _case(name, spec, 2)
    exported = compiled.to_einsum(batch_size=2)
    result = exported.evaluate(*_numpy(tensors))
    assert_close(torch.from_numpy(result).to(expected.device), expected)
    on_torch = exported.evaluate(*tensors, backend="torch")
    assert isinstance(on_torch, torch.Tensor)
    assert_close(on_torch, expected)


def test_batch_size_of_the_export():
    compiled = tnconv.compile("forward", SPEC_2D, strategy="tn")
    assert compiled.to_einsum(batch_size=5).argument_shapes[0][0] == 5
    assert compiled.to_einsum(batch_size=5).batch is None
    batch_free = compiled.to_einsum()  # issue 19: no batch size -> any batch size
    assert batch_free.argument_shapes[0][0] == 1 and batch_free.batch.arguments == ((0,), ())
    for bad in (0, -1, 1.5, True):
        with pytest.raises(TNConvError, match="batch_size"):
            compiled.to_einsum(batch_size=bad)


def test_more_than_52_indices_use_unicode_symbols():
    spec = tnconv.ConvSpec(1, 1, kernel_size=2, input_size=(2,) * 17)
    compiled = tnconv.compile("forward", spec, strategy="tn", rewrite=False)
    tensors = [rand(1, 1, *(2,) * 17), rand(1, 1, *(2,) * 17)]
    expected = compiled(*tensors)
    exported = compiled.to_einsum()
    assert exported.alphabet == "unicode"
    assert len(set(exported.equation) - set(",->")) > 52
    assert_close(torch.from_numpy(exported.evaluate(*_numpy(tensors))).to(expected.device),
                 expected)
    assert_close(exported.evaluate(*tensors, backend="torch"), expected)


def _tiny_program(scale: float, with_constant: bool):
    pattern = tnconv.IndexPattern(2, 1, 1, (0, 0), input_size=3, output_size=2)
    tensors = [Tensor("X", ("n", "i"), "input"), Tensor("W", ("k", "c"), "weight"),
               Tensor("G", ("n", "c"), "grad_output")]
    if with_constant:
        tensors.append(Tensor("Π1", ("k", "o", "i"), "pattern", pattern))
    net = Network(tuple(tensors), (("n", 2), ("i", 3), ("k", 2), ("c", 4), ("o", 2)),
                  output=("o",) if with_constant else ("k",), scale=scale).pruned_sizes()
    return lower(net, ("input", "weight", "grad_output"), (net.output_shape[0],)), pattern


@pytest.mark.parametrize("with_constant", [True, False])
def test_scale_is_folded_into_a_constant(with_constant):
    program, pattern = _tiny_program(0.25, with_constant)
    arguments = (np.arange(6.0).reshape(2, 3), np.arange(8.0).reshape(2, 4) - 3,
                 np.arange(8.0).reshape(2, 4) / 7)
    exported = export_program(program, ("input", "weight", "grad_output"),
                              tuple(a.shape for a in arguments))
    x, w, g = arguments
    if with_constant:
        assert len(exported.operands) == 4 and "scale" not in [o.name for o in exported.operands]
        np.testing.assert_array_equal(exported.constants[0].value, 0.25 * pattern.to_numpy())
        expected = 0.25 * np.einsum("ni,kc,nc,koi->o", x, w, g, pattern.to_numpy())
    else:
        assert [o.name for o in exported.constants] == ["scale"]
        assert exported.constants[0].shape == () and ",->" in exported.equation
        expected = 0.25 * np.einsum("ni,kc,nc->k", x, w, g)
    np.testing.assert_allclose(exported.evaluate(*arguments), expected, rtol=1e-14)
    assert not exported.constants[0].value.flags.writeable


def test_evaluate_rejects_bad_calls(monkeypatch):
    compiled, tensors, _ = _case("forward", SPEC_2D, 1)
    exported = compiled.to_einsum()
    x, w = _numpy(tensors)
    with pytest.raises(TNConvError, match="backend"):
        exported.evaluate(x, w, backend="tensorflow")
    with pytest.raises(TNConvError, match="expected 2 arrays"):
        exported.evaluate(x)
    with pytest.raises(TNConvError, match="weight"):
        exported.evaluate(x, w[:, :1])
    monkeypatch.setitem(sys.modules, "jax", None)
    monkeypatch.setitem(sys.modules, "jax.numpy", None)
    with pytest.raises(TNConvError, match="pip install jax"):
        exported.evaluate(x, w, backend="jax")


def test_jax_backend():
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    jax.config.update("jax_enable_x64", True)
    compiled, tensors, expected = _case("kfc", SPEC_2D, 3)
    result = compiled.to_einsum().evaluate(*_numpy(tensors), backend="jax")
    assert_close(torch.from_numpy(np.asarray(result)), expected.cpu())


_NO_TORCH = textwrap.dedent("""
    import sys
    sys.modules["torch"] = None          # any import of torch now fails
    import numpy as np
    import tnconv
    folder = sys.argv[1]
    for name in sys.argv[2:]:
        exported = tnconv.load_einsum(f"{folder}/{name}.npz")
        with np.load(f"{folder}/{name}-inputs.npz") as inputs:
            arrays = [inputs[f"a{i}"] for i in range(len(inputs.files))]
        np.save(f"{folder}/{name}-result.npy", exported.evaluate(*arrays))
    assert sys.modules["torch"] is None
""")


def test_save_and_load_in_a_process_without_torch(tmp_path):
    expected = {}
    for name in EXPORTABLE:
        compiled, tensors, expected[name] = _case(name, SPEC_2D, 3)
        exported = _export(compiled, name, 3)
        assert exported.save(tmp_path / f"{name}.npz") == tmp_path / f"{name}.npz"
        np.savez(tmp_path / f"{name}-inputs.npz",
                 **{f"a{i}": a for i, a in enumerate(_numpy(tensors))})
    done = subprocess.run([sys.executable, "-c", _NO_TORCH, str(tmp_path), *EXPORTABLE],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for name, value in expected.items():
        result = np.load(tmp_path / f"{name}-result.npy")
        assert_close(torch.from_numpy(result).to(value.device), value)


def test_round_trip_keeps_every_field(tmp_path):
    compiled, _, _ = _case("kfac_reduce", SPEC_2D, 3)
    exported = compiled.to_einsum()
    loaded = tnconv.load_einsum(exported.save(tmp_path / "k.npz"))
    assert exported.batch is not None
    for field in ("equation", "alphabet", "arguments", "argument_shapes", "output_shape",
                  "result_shape", "path", "index_names", "operation", "spec", "batch"):
        assert getattr(loaded, field) == getattr(exported, field), field
    for a, b in zip(loaded.operands, exported.operands):
        assert (a.name, a.role, a.subscripts, a.shape, a.argument) == (
            b.name, b.role, b.subscripts, b.shape, b.argument)
        assert (a.value is None) == (b.value is None)
        if a.value is not None:
            np.testing.assert_array_equal(a.value, b.value)


def test_cli_export(tmp_path, capsys):
    path = tmp_path / "conv.npz"
    status = main(["export", "forward", "--conv", "out_channels=4, kernel_size=3, stride=2",
                   "--input-shape", "2,3,9,9", "-o", str(path)])
    assert status == 0 and "wrote" in capsys.readouterr().out
    x, w = rand(2, 3, 9, 9), rand(4, 3, 3, 3)
    result = tnconv.load_einsum(path).evaluate(x.cpu().numpy(), w.cpu().numpy())
    assert_close(torch.from_numpy(result), torch.nn.functional.conv2d(x, w, stride=2).cpu())
    assert main(["export", "forward", "--example", "tiny", "-o",
                 str(tmp_path / "missing" / "x.npz")]) == 2
