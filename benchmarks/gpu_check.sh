#!/usr/bin/env bash
# The whole GPU verification in one short script (issue 7, item 4), under 8 minutes:
#   1. the test suite on CUDA tensors (TNCONV_TEST_DEVICE=cuda), stopping at the first failure;
#   2. the GPU benchmark: `python -m benchmarks --device cuda --quick`, then the full layer
#      list with fewer repeats in the time that is left.
#
# Usage: [PYTHON=python3] benchmarks/gpu_check.sh [OUTPUT_DIR]
#   OUTPUT_DIR defaults to $OUT when set, else benchmarks/results/gpu. Written there:
#   tests.log, quick/results.md (+ .png), quick.log, full/results.md (+ .png), full.log.
#
# Needs only a python3 with torch (CUDA build), numpy, opt_einsum, networkx, pytest and
# hypothesis; tnconv runs from this checkout through PYTHONPATH (no install, no Graphviz,
# no network). networkx or opt_einsum may be missing on a bare torch image: the script
# then tries `pip install` quietly and stops with a message if that is not possible.
# matplotlib is optional (without it no PNG is written).
# The Graphviz-only tests (tests/test_render.py, tests/test_gallery.py and the doctests of
# tnconv/render.py, tnconv/gallery.py) are left out: they skip without the `dot` program
# anyway and touch no tensors, so they say nothing about CUDA.
# Exit status: that of the tests, or else that of the benchmarks (1 = a wrong result).
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
LIMIT=${GPU_CHECK_SECONDS:-470}
OUT_DIR="${1:-${OUT:-benchmarks/results/gpu}}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

"$PY" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device"
print("torch", torch.__version__, "on", torch.cuda.get_device_name())' || exit 2
missing=$("$PY" -c 'import importlib.util as u
print(" ".join(m for m in ("numpy", "opt_einsum", "networkx", "pytest", "hypothesis")
               if u.find_spec(m) is None))')
if [ -n "$missing" ]; then
  echo "missing Python packages: $missing; trying pip install (quietly)"
  "$PY" -m pip install -q $missing >/dev/null 2>&1 || { echo "cannot install $missing"; exit 2; }
fi

left() { echo $(( LIMIT - (SECONDS - START) )); }
# min(N, seconds left), at least 1
cap() { local l; l=$(left); l=$(( l < $1 ? l : $1 )); echo $(( l > 1 ? l : 1 )); }

echo "== 1. test suite on CUDA (at most 270 s)"
TNCONV_TEST_DEVICE=cuda timeout "$(cap 270)" "$PY" -m pytest -q -x -p no:cacheprovider \
  --ignore=tests/test_render.py --ignore=tests/test_gallery.py \
  --ignore=tnconv/render.py --ignore=tnconv/gallery.py 2>&1 | tee "$OUT_DIR/tests.log" | tail -n 15
tests_rc=${PIPESTATUS[0]}
echo "tests: exit status $tests_rc ($((SECONDS - START)) s so far)"

echo "== 2a. GPU benchmark, quick ($(left) s left)"
timeout "$(cap 120)" "$PY" -m benchmarks --device cuda --quick \
  --out "$OUT_DIR/quick" >"$OUT_DIR/quick.log" 2>&1
bench_rc=$?
sed -n '/^## Bars/,/^## Per-call/p' "$OUT_DIR/quick/results.md" 2>/dev/null \
  || tail -n 20 "$OUT_DIR/quick.log"

if [ "$(left)" -gt 60 ]; then
  echo "== 2b. GPU benchmark, every layer, 3 repeats ($(left) s left)"
  timeout "$(cap $(( $(left) - 5 )))" "$PY" -m benchmarks --device cuda --repeats 3 --budget 1 \
    --out "$OUT_DIR/full" >"$OUT_DIR/full.log" 2>&1
  full_rc=$?
  if [ $full_rc -eq 124 ]; then
    echo "full run stopped at the time limit: full/results.md holds the layers done (see full.log)"
  fi
  sed -n '/^## Bars/,/^## Per-call/p' "$OUT_DIR/full/results.md" 2>/dev/null
  [ $full_rc -ne 124 ] && [ $bench_rc -eq 0 ] && bench_rc=$full_rc
fi
echo "done in $((SECONDS - START)) s; tables in $OUT_DIR"
[ "$tests_rc" -ne 0 ] && exit "$tests_rc"
exit "$bench_rc"
