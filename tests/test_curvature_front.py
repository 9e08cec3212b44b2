"""The curvature front-end: argument errors, empty batches, dtypes, lazy import, plans."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

import tnconv
from tnconv import TNConvError
from tnconv.curvature import functional as CF
from tests.helpers import DEVICE, assert_close

NAMES = ("batch_l2", "sum_grad_squared", "variance", "ggn_diagonal", "ggn_gram",
         "backpropagate_sqrt_factor", "hessian_diagonal_weight", "hessian_diagonal_input")
COLUMNS = ("ggn_diagonal", "ggn_gram", "backpropagate_sqrt_factor")


def _given(name: str, batch: int, out=(4, 6), columns: int = 2) -> torch.Tensor:
    lead = (columns,) if name in COLUMNS else ()
    return torch.randn(*lead, batch, *out, device=DEVICE)


@pytest.fixture
def conv():
    return torch.nn.Conv1d(3, 4, 3, padding=1).to(DEVICE)


@pytest.mark.parametrize("name", NAMES)
def test_wrong_shape_names_the_argument(conv, name):
    x = torch.randn(2, 3, 6, device=DEVICE)
    argument = {"batch_l2": "grad_output", "sum_grad_squared": "grad_output",
                "variance": "grad_output"}.get(name, "sqrt_factor" if name in COLUMNS
                                               else "output_hessian_diagonal")
    with pytest.raises(TNConvError, match=f"tnconv.curvature.{name}: argument '{argument}'"):
        getattr(tnconv.curvature, name)(conv, x, _given(name, 2, out=(4, 5)))
    with pytest.raises(TNConvError, match=f"argument '{argument}'"):
        getattr(tnconv.curvature, name)(conv, x, _given(name, 3))  # another batch size
    with pytest.raises(TNConvError, match=f"argument '{argument}'.*dtype"):
        getattr(tnconv.curvature, name)(conv, x, _given(name, 2).double())
    with pytest.raises(TNConvError, match="argument 'conv'"):
        getattr(tnconv.curvature, name)(torch.nn.Linear(3, 4), x, _given(name, 2))
    with pytest.raises(TNConvError, match="argument 'x'"):
        getattr(tnconv.curvature, name)(conv, x[0], _given(name, 2))


@pytest.mark.parametrize("call, argument", [
    (lambda: CF.batch_l2(torch.rand(2, 3, 6), torch.rand(2, 4, 4), (3, 3)), "kernel_size"),
    (lambda: CF.batch_l2("x", torch.rand(2, 4, 4), 3), "x"),
    (lambda: CF.batch_l2(torch.rand(2, 3, 6), torch.rand(2, 4, 4), 3, groups=0), "groups"),
    (lambda: CF.batch_l2(torch.rand(2, 3, 6), torch.rand(2, 4), 3), "grad_output"),
    (lambda: CF.ggn_diagonal(torch.rand(2, 3, 6), torch.rand(0, 2, 4, 4), 3), "sqrt_factor"),
    (lambda: CF.hessian_diagonal_input(torch.rand(2, 3, 6), torch.rand(4, 3), torch.rand(2, 4, 4)),
     "weight"),
    (lambda: CF.batch_l2(torch.ones(2, 3, 6, dtype=torch.int64), torch.rand(2, 4, 4), 3),
     "x"),
    (lambda: CF.variance(torch.rand(0, 3, 6), torch.rand(0, 4, 4), 3), "grad_output"),
    (lambda: CF.sum_grad_squared(torch.rand(2, 3, 6), torch.rand(2, 4, 4), 3, dtype="f"),
     "dtype"),
])
def test_functional_errors_name_the_argument(call, argument):
    with pytest.raises(TNConvError, match=f"argument '{argument}'"):
        call()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "variance"])
def test_empty_batch(conv, name):
    """No samples: per-sample results are empty, sums over samples are zero."""
    x = torch.randn(0, 3, 6, device=DEVICE)
    got = getattr(tnconv.curvature, name)(conv, x, _given(name, 0))
    expected = {"batch_l2": (0,), "ggn_gram": (0, 0), "backpropagate_sqrt_factor": (2, 0, 3, 6),
                "hessian_diagonal_input": (0, 3, 6)}.get(name, tuple(conv.weight.shape))
    assert tuple(got.shape) == expected and not got.any()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16])
def test_low_precision_is_computed_in_float32(conv, name, low):
    x = torch.randn(2, 3, 6, device=DEVICE)
    given = _given(name, 2)
    function = getattr(tnconv.curvature, name)
    low_conv = copy.deepcopy(conv).to(low)
    reference = function(copy.deepcopy(low_conv).float(), x.to(low).float(),
                         given.to(low).float())
    result = function(low_conv, x.to(low), given.to(low))
    assert result.dtype == torch.float32
    assert_close(result, reference, rtol=1e-5)
    assert function(low_conv, x.to(low), given.to(low), dtype=low).dtype == low


@pytest.mark.parametrize("name", NAMES)
def test_results_carry_no_autograd_history(conv, name):
    x = torch.randn(2, 3, 6, device=DEVICE, requires_grad=True)
    given = _given(name, 2).requires_grad_()
    assert not getattr(tnconv.curvature, name)(conv, x, given).requires_grad


def test_import_is_lazy():
    """`import tnconv` does not import torch; `tnconv.curvature` does, on first use."""
    code = ("import sys, tnconv; assert 'torch' not in sys.modules; "
            "assert 'batch_l2' in dir(tnconv.curvature); assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["ggn_diagonal", "ggn_gram"])
def test_ggn_plans_follow_the_cost_model(name):
    """Many classes and few output positions: the Gram form contracts C first; one
    column on a large image: the per-sample form."""
    patch = tnconv.ConvSpec(8, 64, 4, (16, 16), stride=4)
    wide = tnconv.ConvSpec(4, 4, 3, (64, 64), padding=1)
    assert "plan     gram:" in tnconv.compile(name, patch, classes=100, batch_size=2).explain()
    assert "plan     per_sample:" in tnconv.compile(name, wide, classes=1, batch_size=2).explain()


def test_registered_operations_compile_and_describe_their_arguments():
    spec = tnconv.ConvSpec(2, 4, 3, (8,))
    for name in ("batch_l2", "sum_grad_squared", "variance", "ggn_diagonal", "ggn_gram",
                 "hessian_diagonal_weight", "hessian_diagonal_input"):
        compiled = tnconv.compile(name, spec)
        assert compiled.program.operands and name in compiled.explain()
    assert tnconv.compile("ggn_diagonal", spec).arguments == ("input", "sqrt_factor")
    with pytest.raises(TNConvError, match="classes"):
        tnconv.compile("ggn_diagonal", spec, classes=0).program
