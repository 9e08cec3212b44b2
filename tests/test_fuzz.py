"""Fuzz every public entry point: valid and mutated calls, N = 1..4, both strategies.

Each drawn call is a valid one (`tests.fuzz_entries`) with at most one mutation:
another dtype (float32, float16, bfloat16, integer, bool, complex), the meta
device (and, where there is one, the GPU) for every tensor or for one, a
tensor replaced by an array or given a wrong shape, a hyper-parameter or
option replaced by an invalid value, a hyper-parameter so large that the
result would not fit (the size guard), or a conv module's attribute set to an
invalid value. Every outcome is classified:

- "equals the reference": a value equal to the float64 reference
  (`tests.fuzz_cases`) within the tolerance of the dtype it was computed in,
  of the promised dtype; on the meta device, a meta tensor of the right shape;
- "TNConvError": only where the call is invalid (a valid call must not be refused),
  naming the argument the caller got wrong;
- "torch raises the same": any other exception, only where torch's reference
  raises the same type for the same input.

Anything else fails. Non-finite inputs are out of scope for now: see
`tests.fuzz_cases.NON_FINITE_INPUTS`. The default run draws a bounded number of
examples per entry point; for a longer local run use hypothesis' profile
``fuzz-long``: ``pytest tests/test_fuzz.py --hypothesis-profile=fuzz-long``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import tnconv
from tnconv import TNConvError
from tnconv.limits import size_limit
from tnconv.nn import functional as TF
from tests.fuzz_cases import geometries, random_tensor
from tnconv.ops import OPERATIONS
from tests.fuzz_entries import ENTRIES, Entry, data_tensors, reference

#: Examples per entry point: bounded in the default suite (derandomized, so every run
#: draws the same calls), the profile's count under fuzz-long (tests/conftest.py).
LONG_RUN = settings.default.max_examples >= settings.get_profile("fuzz-long").max_examples
EXAMPLES = settings.default.max_examples if LONG_RUN else 40

VALUE_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
REFUSED_DTYPES = (torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64,
                  torch.complex128)
#: Error allowed per element, relative to the reference on absolute values (|x|, |w|): a
#: bound on the sum of the magnitudes each result entry is made of.
RTOL = {torch.float64: 1e-11, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 8e-2}
HUGE = 2 ** 31 - 1
#: Where a GPU is present, the mutations also move every tensor, or one, to it.
CUDA = torch.cuda.is_available()


# ------------------------------------------------------------------ mutations
def _bad_values(name: str, ndim: int) -> list:
    """Values of hyper-parameter or option `name` that every entry point must refuse."""
    long = (1,) * (ndim + 1)
    table = {
        "stride": [0, -1, True, 1.5, None, "1", long, 2 ** 31],
        "padding": [-1, "full", 1.5, None, (0,) * (ndim + 1), 2 ** 31, ((1, 2, 3),) * ndim],
        "dilation": [0, -2, True, 2.0, long],
        "groups": [0, -1, True, 2.0, None, 2 ** 31, 7],
        "padding_mode": ["wrap", None, 3, "Zeros"],
        "output_padding": [-1, 2 ** 31, (0,) * (ndim + 1)],
        "kernel_size": [0, -1, True, None, long],
        "output_size": [0, None, (2,) * (ndim + 1)],
        "transposed": ["False", 1],
        "strategy": ["fast", None, 1],
        "per_sample": [1, None, "yes"],
        "reduction": ["avg", None],
        "structure": ["diag"],
        "group_average": [1, None],
        "dtype": [torch.int64, "float32"],
        "max_intermediate": [0, -1, True, 1.5],
    }
    return table[name]


def _option_names(entry: Entry, options: dict) -> list[str]:
    names = ["strategy"] + [n for n in ("per_sample", "reduction", "structure",
                                         "group_average", "dtype", "max_intermediate")
                            if n in options]
    if "bias" in options and "module_bias" not in options:
        names.append("bias")
    return names


@st.composite
def mutations(draw: Any, entry: Entry, g: Any, options: dict) -> tuple:
    """(kind, detail) of at most one mutation of a valid call."""
    kinds = ["none", "none", "dtype", "meta", "hyper", "shape", "not_tensor"]
    if len(entry.roles) > 1 or options.get("with_bias"):
        kinds += ["mixed_device", "mixed_dtype"]
    if CUDA:
        kinds += ["cuda"] + (["mixed_cuda"] if "mixed_device" in kinds else [])
    if entry.scales_with_output and g.batch:
        kinds.append("huge")
    if "module_bias" in options:
        kinds.append("module")
    kind = draw(st.sampled_from(kinds))
    if kind == "dtype":
        return kind, draw(st.sampled_from(VALUE_DTYPES[1:] + REFUSED_DTYPES))
    if kind == "hyper":
        names = [*entry.hyper, *_option_names(entry, options)]
        if "bias" in names:
            names.remove("bias")
            names.append("bias_flag")
        name = draw(st.sampled_from(names))
        values = [1, "yes"] if name == "bias_flag" else _bad_values(name, g.ndim)
        return kind, ("bias" if name == "bias_flag" else name, draw(st.sampled_from(values)))
    if kind == "module":
        return kind, draw(st.sampled_from(_module_mutations(g)))
    if kind in ("mixed_device", "mixed_cuda", "mixed_dtype", "shape", "not_tensor"):
        roles = list(entry.roles) + (["bias"] if options.get("with_bias") else [])
        return kind, draw(st.sampled_from(roles if kind in ("shape", "not_tensor")
                                          else roles[1:]))
    return kind, None


def _module_mutations(g: Any) -> list:
    """Attributes a user may set on a conv module, every one invalid for this module."""
    n = g.ndim
    wrong = torch.nn.Parameter(torch.rand(g.weight_shape[0] + 1, *g.weight_shape[1:]))
    return [("groups", 0), ("groups", None), ("groups", True), ("groups", 2.0),
            ("groups", 7), ("stride", (0,) * n), ("stride", None), ("dilation", (0,) * n),
            ("padding_mode", "bogus"), ("kernel_size", tuple(k + 1 for k in g.kernel)),
            ("weight", wrong), ("in_channels", 0), ("in_channels", g.in_channels + 1),
            ("out_channels", None)]


def _corrupt_shape(entry: Entry, role: str, t: torch.Tensor, unbatched: bool) -> torch.Tensor:
    """A shape no entry point can take for `role`: one channel more where channels are
    checked against another argument, else one dimension more."""
    if unbatched and role == entry.roles[0]:  # [C, *spatial]
        return torch.cat([t, t.narrow(0, 0, 1)], 0)
    if role == "bias" or entry.name.startswith("compile."):
        return torch.cat([t, t.narrow(-1, 0, 1)], -1) if t.dim() == 1 else \
            torch.cat([t, t.narrow(1, 0, 1)], 1)
    if entry.operation == "fold":
        return torch.cat([t, t.narrow(-1, 0, 1)], -1)
    if entry.name == "conv_transpose" and role == "weight":  # [C_in, C_out/G, *K]: C_in
        return torch.cat([t, t.narrow(0, 0, 1)], 0)
    if entry.name in ("unfold", "unfold_transpose") or entry.name.startswith("functional."):
        return t.unsqueeze(-1)
    return torch.cat([t, t.narrow(1, 0, 1)], 1)  # the module's and the others' channels


# -------------------------------------------------------------------- the call
def _mutated(entry: Entry, g: Any, tensors: dict, options: dict, mutation: tuple):
    """(tensors, overrides, expected) after the mutation; expected "value" or "error"."""
    kind, detail = mutation
    tensors, overrides = dict(tensors), {}
    if kind == "dtype":
        tensors = {k: v.to(detail) for k, v in tensors.items()}
        return tensors, overrides, "value" if detail in VALUE_DTYPES else "error"
    if kind in ("meta", "cuda"):
        return {k: v.to(kind) for k, v in tensors.items()}, overrides, "value"
    if kind in ("mixed_device", "mixed_cuda"):
        tensors[detail] = tensors[detail].to("meta" if kind == "mixed_device" else "cuda")
    elif kind == "mixed_dtype":
        tensors[detail] = tensors[detail].to(torch.float32)
    elif kind == "shape":
        tensors[detail] = _corrupt_shape(entry, detail, tensors[detail],
                                         bool(options.get("unbatched")))
    elif kind == "not_tensor":
        tensors[detail] = tensors[detail].numpy()
    elif kind == "hyper":
        overrides[detail[0]] = detail[1]
    elif kind == "module":
        overrides["module"] = {detail[0]: detail[1]}
    elif kind == "huge":  # ≥ 2**32 - 8 output pixels in a dim (a negative count transposed)
        stride = {} if g.transposed else {"stride": 1}
        if "module_bias" in options:
            overrides["module"] = {"padding": (HUGE,) * g.ndim, "padding_mode": "zeros",
                                   **{k: (v,) * g.ndim for k, v in stride.items()}}
        else:
            overrides.update(padding=HUGE, **stride)
    return tensors, overrides, "value" if kind == "none" else "error"


#: Arguments a caller of some entry point passes by these names (ConvSpec's fields for
#: `tnconv.compile`'s callers, the module and its input for the module factors).
_PASSED = {"bias", "input_size", "weight_size", "conv", "x", "in_channels", "out_channels",
           "kernel_size", "input_size", "op", "spec"}


def _assert_names_the_argument(entry: Entry, mutation: tuple, message: str) -> None:
    """A refusal names an argument the caller passed (issue 17, defect 11) and mentions the
    one the mutation broke (or, for a groups that divides no channel count, names a tensor
    or shape whose channels it must divide)."""
    kind, detail = mutation
    if kind == "huge" and "set_size_limit" in message:  # the size guard names the size
        return
    named = re.search(r"argument '([^']+)'", message)
    passed = set(entry.hyper) | set(entry.roles) | set(_option_names(entry, {})) | _PASSED \
        | {"per_sample", "reduction", "structure", "group_average", "dtype", "max_intermediate"}
    assert named and named.group(1) in passed, message
    if kind == "hyper":
        partners = set(entry.roles) | {"bias", "weight_size", "input_size", "in_channels",
                                       "out_channels"}
        mentioned = {detail[0]} | (partners if detail[0] == "groups" else set())
    elif kind == "module":
        mentioned = {"'conv'", "'x'"}
    elif kind in ("not_tensor", "mixed_device", "mixed_cuda", "mixed_dtype"):
        mentioned = {detail}
    else:
        return
    assert any(name in message for name in mentioned), (mentioned, message)


def _result_dtype(entry: Entry, dtype: torch.dtype, options: dict) -> torch.dtype:
    if entry.factor:
        if options.get("dtype") is not None:
            return options["dtype"]
        return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    return dtype


def _assert_equal(got: torch.Tensor, expected: torch.Tensor, magnitude: torch.Tensor,
                  rtol: float) -> None:
    """Equal where the reference is not finite; within rtol·magnitude elsewhere."""
    assert tuple(got.shape) == tuple(expected.shape), (tuple(got.shape), tuple(expected.shape))
    got = got.detach().cpu().to(torch.float64)
    finite = torch.isfinite(expected)
    assert torch.equal(torch.isnan(got), torch.isnan(expected))
    assert torch.equal(got[~finite & ~torch.isnan(expected)],
                       expected[~finite & ~torch.isnan(expected)])
    error = (got - expected).abs()[finite]
    bound = rtol * magnitude[finite] + 1e-300
    assert bool((error <= bound).all()), f"max error {error.max():.3e}, rtol {rtol}"


def _torch_raises_the_same(entry, g, tensors, options, error: Exception) -> bool:
    try:
        reference(entry, g, tensors, options)
    except type(error):
        return True
    except Exception:  # noqa: BLE001 - another type is not "the same"
        return False
    return False


def _run(entry: Entry, g: Any, options: dict, mutation: tuple, seed: int) -> str:
    """Call the entry with the mutation applied; the outcome's class, or an AssertionError."""
    counter = iter(range(10 ** 6))
    valid = data_tensors(entry, g, lambda shape: random_tensor(seed + next(counter), shape),
                         options)
    tensors, overrides, expected = _mutated(entry, g, valid, options, mutation)
    try:
        result = entry.call(g, tensors, options, overrides)
    except TNConvError as err:
        assert expected == "error", f"a valid call was refused: {err}"
        _assert_names_the_argument(entry, mutation, str(err))
        return "TNConvError"
    except Exception as err:  # noqa: BLE001 - classified below
        assert expected == "value", f"expected a TNConvError, got {type(err).__name__}: {err}"
        assert _torch_raises_the_same(entry, g, tensors, options, err), \
            f"{type(err).__name__} that torch does not raise: {err}"
        return "torch raises the same"
    assert expected == "value", f"an invalid call ({mutation}) returned {type(result)}"
    assert isinstance(result, torch.Tensor)
    dtype = next(iter(tensors.values())).dtype
    assert result.dtype == _result_dtype(entry, dtype, options), result.dtype
    want = reference(entry, g, valid, options)
    assert result.device.type == ("cuda" if mutation[0] == "cuda" else
                                  "meta" if mutation[0] == "meta" else "cpu"), result.device
    if mutation[0] == "meta":
        assert tuple(result.shape) == tuple(want.shape)
        return "equals the reference (meta)"
    magnitude = reference(entry, g, {k: v.abs() for k, v in valid.items()}, options)
    if entry.operation == "variance":  # a difference of terms as large as (1/N) Σ_n g_n²
        magnitude = magnitude + 2 * reference(
            replace(entry, operation="sum_grad_squared"), g,
            {k: v.abs() for k, v in valid.items()}, options) / max(g.batch, 1)
    compute = torch.float32 if result.dtype == torch.float32 else dtype
    _assert_equal(result, want, magnitude, RTOL[max(compute, result.dtype, key=RTOL.get)])
    return "equals the reference"


# ---------------------------------------------------------------------- tests
@st.composite
def calls(draw: Any, entry: Entry) -> tuple:
    g = draw(geometries(**entry.geometry))
    options = draw(entry.options)
    if options.get("unbatched") and g.batch != 1:
        options = {**options, "unbatched": False}
    return g, options, draw(mutations(entry, g, options)), draw(st.integers(0, 2 ** 20))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ENTRIES))
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_every_outcome_is_a_reference_value_or_a_named_refusal(name, data):
    entry = ENTRIES[name]
    g, options, mutation, seed = data.draw(calls(entry))
    outcome = _run(entry, g, options, mutation, seed)
    event(f"{mutation[0]}: {outcome}")


def test_the_fuzz_covers_every_public_entry_point():
    """Each public function that takes tensors is fuzzed: by name, as the same object
    (`tnconv.nn.functional.conv` is `tnconv.conv`), and every registered operation
    through `tnconv.compile(...)(...)`."""
    fuzzed = {name for name in ENTRIES if "." not in name}
    not_convolutions = {"ConvSpec", "IndexPattern", "Network", "Tensor", "EinsumProgram",
                        "ExportedEinsum", "TNConvError", "Compiled", "cache_info",
                        "clear_caches", "set_cache_size", "set_size_limit", "load_einsum",
                        "Sample"}
    assert set(tnconv.__all__) == fuzzed | not_convolutions | {"compile"}
    for name in TF.__all__:
        assert getattr(TF, name) is getattr(tnconv, name, None) \
            or f"functional.{name}" in ENTRIES, name
    from tnconv.ops.sampling import SAMPLED  # reached through compile(..., sample=...)
    assert {name.removeprefix("compile.") for name in ENTRIES
            if name.startswith("compile.")} == set(OPERATIONS) - {
                sampled.name for sampled in SAMPLED.values()}


def test_the_size_guard_is_in_force():
    assert size_limit() <= 2 ** 31  # the huge mutation relies on it
