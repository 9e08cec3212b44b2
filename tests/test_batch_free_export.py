"""Batch-free export: one `to_einsum()` evaluates on every batch size, in numpy and torch, and
after save/load, equal to tnconv's own result (and to torch's for forward, unfold and fold)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tnconv
from tnconv.errors import TNConvError
from tnconv.export.batch_free import PROBE_PAIRS, batch_free_export
from tnconv.ops import OPERATIONS
from tests.helpers import assert_close, rand

#: Operations with an einsum to export: the sampled ones take index vectors, drawn per call
#: (their `to_einsum` error is tested in tests/test_sampled_networks.py).
EXPORTABLE = sorted(name for name, op in OPERATIONS.items() if "selection" not in op.arguments)

SPEC_2D = tnconv.ConvSpec(4, 6, kernel_size=3, input_size=(7, 6), stride=(2, 1), padding=1,
                          groups=2)
#: kfc on the first two: the rewrites chosen at batch sizes 2 and 3 differ (the export tries
#: 4 and 5); the transposed one has an output padding.
OTHER_SPECS = {
    "3d": tnconv.ConvSpec(2, 2, kernel_size=2, input_size=(3, 4, 3), stride=(1, 2, 1)),
    "stride 2": tnconv.ConvSpec(1, 1, kernel_size=2, input_size=(6, 6), stride=2),
    "transposed": tnconv.ConvSpec(4, 6, kernel_size=3, input_size=(4, 5), stride=2, padding=1,
                                  groups=2, transposed=True, output_padding=1),
}
OPERATIONS_NAMED = ["forward", "input_vjp", "weight_vjp", "unfold", "kfc", "kfac_reduce", "fold"]
BATCHES = (1, 5)  # neither is a probe size


def _arguments(compiled, batch):
    return [rand(*s) for s in compiled.operation.argument_shapes(compiled.spec, batch,
                                                                 **compiled.options)]


def _numpy(tensors):
    return [t.cpu().numpy() for t in tensors]


def _check(exported, compiled, batch, backend="numpy"):
    tensors = _arguments(compiled, batch)
    expected = compiled(*tensors)
    arrays = _numpy(tensors) if backend == "numpy" else tensors
    result = exported.evaluate(*arrays, backend=backend)
    result = torch.from_numpy(result).to(expected.device) if backend == "numpy" else result
    assert result.shape == expected.shape
    assert_close(result, expected)
    return tensors, result


@pytest.mark.parametrize("name", OPERATIONS_NAMED)
def test_one_export_every_batch_size(name, tmp_path):
    compiled = tnconv.compile(name, SPEC_2D, strategy="tn")
    exported = compiled.to_einsum()
    assert exported.batch_free
    assert exported.argument_shapes[compiled.operation.batch_argument][0] == 1
    loaded = tnconv.load_einsum(exported.save(tmp_path / f"{name}.npz"))
    assert loaded.batch == exported.batch
    for batch in BATCHES:
        for einsum in (exported, loaded):
            _check(einsum, compiled, batch)
        _check(loaded, compiled, batch, backend="torch")


def test_forward_unfold_and_fold_equal_torch_at_two_batch_sizes(tmp_path):
    spec = tnconv.ConvSpec(3, 4, kernel_size=3, input_size=(7, 6), stride=(2, 1), padding=1)
    files = {name: tnconv.load_einsum(tnconv.compile(name, spec).to_einsum().save(
        tmp_path / f"{name}.npz")) for name in ("forward", "unfold", "fold")}
    w = rand(4, 3, 3, 3)
    for batch in (2, 7):
        x = rand(batch, 3, 7, 6)
        forward = files["forward"].evaluate(x.cpu().numpy(), w.cpu().numpy())
        assert_close(torch.from_numpy(forward),
                     F.conv2d(x, w, stride=(2, 1), padding=1).cpu())
        unfolded = F.unfold(x, 3, stride=(2, 1), padding=1)
        assert_close(torch.from_numpy(files["unfold"].evaluate(x.cpu().numpy())), unfolded.cpu())
        folded = files["fold"].evaluate(unfolded.cpu().numpy())
        assert_close(torch.from_numpy(folded),
                     F.fold(unfolded, (7, 6), 3, stride=(2, 1), padding=1).cpu())


#: Operations whose network holds a constant sized by the batch (variance's centering
#: matrix I − 11ᵀ/N): no batch-free export, a fixed-batch one.
BATCH_SIZED = {"variance"}


@pytest.mark.parametrize("spec", list(OTHER_SPECS.values()), ids=list(OTHER_SPECS))
@pytest.mark.parametrize("name", EXPORTABLE)
def test_every_operation_on_other_specs(name, spec):
    compiled = tnconv.compile(name, spec, strategy="tn")
    if name in BATCH_SIZED:
        with pytest.raises(TNConvError, match="pass batch_size="):
            compiled.to_einsum()
        for batch in BATCHES:
            _check(compiled.to_einsum(batch_size=batch), compiled, batch)
        return
    exported = compiled.to_einsum()
    for batch in BATCHES:
        _check(exported, compiled, batch)


def _agree(compiled, pair):
    small, large = (compiled.export_program(b) for b in pair)
    return small.equation == large.equation


#: A KFC factor whose rewrites differ between batch sizes 2 and 3 but not 4 and 5.
DIFFERING = tnconv.ConvSpec(1, 1, kernel_size=3, input_size=(6, 6))


def test_the_next_pair_when_the_rewrites_differ_between_batch_sizes():
    compiled = tnconv.compile("kfc", DIFFERING, strategy="tn")
    assert not _agree(compiled, PROBE_PAIRS[0]) and _agree(compiled, PROBE_PAIRS[1])  # premise
    exported = compiled.to_einsum()
    assert len(exported.operands) == len(compiled.export_program(5).operands)
    for batch in (1, 4, 9):
        _check(exported, compiled, batch)


def test_the_unrewritten_network_when_no_pair_agrees(monkeypatch):
    compiled = tnconv.compile("kfc", DIFFERING, strategy="tn")
    monkeypatch.setattr("tnconv.export.batch_free.PROBE_PAIRS", PROBE_PAIRS[:1])
    exported = compiled.to_einsum()
    unrewritten = tnconv.compile("kfc", DIFFERING, strategy="tn", rewrite=False)
    assert len(exported.operands) == len(unrewritten.export_program(3).operands)
    assert len(exported.operands) != len(compiled.export_program(3).operands)
    for batch in (1, 4, 9):
        _check(exported, compiled, batch)


@pytest.mark.parametrize("name, options, power", [
    ("kfc", dict(reduction="mean"), -1), ("kfc", dict(reduction="batch"), -1),
    ("kfc", dict(reduction="sum"), 0), ("kfac_reduce", dict(reduction="mean"), -1),
    ("kfac_reduce", dict(reduction="sum"), 0)])
def test_a_mean_over_the_batch_scales_with_it(name, options, power):
    compiled = tnconv.compile(name, SPEC_2D, strategy="tn", **options)
    exported = compiled.to_einsum()
    assert exported.batch.scale_power == power
    for batch in (1, 6):
        _check(exported, compiled, batch)


def test_per_sample_weight_gradients_keep_the_batch_in_the_result():
    compiled = tnconv.compile("weight_vjp", SPEC_2D, strategy="tn", per_sample=True)
    exported = compiled.to_einsum()
    assert exported.batch.result == (0,)
    for batch in (1, 4):
        _check(exported, compiled, batch)


def test_wrong_shapes_still_raise():
    exported = tnconv.compile("forward", SPEC_2D, strategy="tn").to_einsum()
    x, w = np.ones((3, 4, 7, 6)), np.ones((6, 2, 3, 3))
    assert exported.evaluate(x, w).shape == (3, 6, 4, 6)
    for bad_x, bad_w in [(np.ones((3, 4, 7, 5)), w), (np.ones((3, 2, 7, 6)), w),
                         (np.ones((4, 7, 6)), w), (x, np.ones((2, 6, 3, 3))),
                         (x, np.ones((3, 6, 2, 3, 3)))]:
        with pytest.raises(TNConvError, match="argument '(input|weight)'.*\\(N, 4, 7, 6\\)|"
                                              "argument 'weight'.*\\(6, 2, 3, 3\\)"):
            exported.evaluate(bad_x, bad_w)
    with pytest.raises(TNConvError, match="expected 2 arrays"):
        exported.evaluate(x)


def test_an_empty_batch():
    compiled = tnconv.compile("forward", SPEC_2D, strategy="tn")
    x, w = np.ones((0, 4, 7, 6)), np.ones((6, 2, 3, 3))
    assert compiled.to_einsum().evaluate(x, w).shape == (0, 6, 4, 6)
    kfc = tnconv.compile("kfc", SPEC_2D, strategy="tn").to_einsum()
    with pytest.raises(TNConvError, match="argument 'input' got 'an array with no samples'"):
        kfc.evaluate(x)
    total = tnconv.compile("kfc", SPEC_2D, strategy="tn", reduction="sum").to_einsum()
    assert not total.evaluate(x).any()


def test_a_fixed_batch_size_keeps_the_old_behaviour(tmp_path):
    compiled = tnconv.compile("forward", SPEC_2D, strategy="tn")
    fixed = compiled.to_einsum(batch_size=4)
    assert not fixed.batch_free and fixed.argument_shapes[0] == (4, 4, 7, 6)
    _check(fixed, compiled, 4)
    loaded = tnconv.load_einsum(fixed.save(tmp_path / "fixed.npz"))
    assert loaded.batch is None
    with pytest.raises(TNConvError, match="argument 'input'.*shape \\(4, 4, 7, 6\\)"):
        loaded.evaluate(np.ones((5, 4, 7, 6)), np.ones((6, 2, 3, 3)))


def test_describe_names_the_batch():
    text = tnconv.compile("kfc", SPEC_2D, strategy="tn").to_einsum().describe()
    assert "shape (N, 2, 2, 7, 6)" in text and "batch    any size N; result times N**-1" in text


def test_programs_that_differ_beyond_the_batch_are_refused():
    """Where neither the rewritten nor the unrewritten programs agree at the probe sizes."""
    spec = SPEC_2D
    other = spec.replace(kernel_size=2)
    programs = {b: tnconv.compile("forward", spec if b % 2 else other).export_program(b)
                for pair in PROBE_PAIRS for b in pair}
    fake = SimpleNamespace(operation=OPERATIONS["forward"], spec=spec, options={},
                           rewrite=False, export_program=programs.__getitem__)
    with pytest.raises(TNConvError, match="to_einsum \\(forward\\).*pass batch_size="):
        batch_free_export(fake)


def test_jax_evaluates_a_batch_free_export():
    jax = pytest.importorskip("jax", reason="JAX is not installed")
    jax.config.update("jax_enable_x64", True)
    compiled = tnconv.compile("kfac_reduce", SPEC_2D, strategy="tn")
    exported = compiled.to_einsum()
    for batch in BATCHES:
        tensors = _arguments(compiled, batch)
        result = exported.evaluate(*_numpy(tensors), backend="jax")
        assert_close(torch.from_numpy(np.asarray(result)), compiled(*tensors).cpu())
