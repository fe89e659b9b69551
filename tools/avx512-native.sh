#!/usr/bin/env bash
# Build pixrank on a machine WITH AVX-512 and run the kernel tests natively on the avx512 path
# (CI's .ci/avx512-emulated.sh runs the same source against SIMDe on AVX2 machines; this script is
# the native check). Also times SGEMM on each SIMD path against numpy and PyTorch when present.
# Needs: python3 with numpy, pybind11, scikit-build-core, cmake, ninja, pytest, hypothesis; a C++17
# compiler. Installs nothing system-wide: the package goes to $SITE (default /tmp/pixrank-site).
# Usage: bash tools/avx512-native.sh [outdir]
set -uo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-/tmp/pixrank-avx512}
SITE=${SITE:-/tmp/pixrank-site}
PY=${PYTHON:-python3}
mkdir -p "$OUTDIR"
echo "== CPU"; grep -m1 "model name" /proc/cpuinfo; nproc
grep -o -w -E "avx512(f|bw|dq|vl|_bf16|_fp16|vnni)" /proc/cpuinfo | sort -u | tr '\n' ' '; echo
if ! grep -qw avx512f /proc/cpuinfo; then echo "no AVX-512 here: nothing to check natively"; exit 3; fi
echo "== build"
export CMAKE_BUILD_PARALLEL_LEVEL=$(nproc)
"$PY" -m pip install -q --no-build-isolation --no-deps --no-compile --target "$SITE" . >"$OUTDIR/build.log" 2>&1 \
  || { tail -40 "$OUTDIR/build.log"; exit 1; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'PYEOF' || exit 1
import sys, pixrank, pixrank._kernels as K
print(pixrank.__file__, "available:", K.available_simd(), "default:", K.info()["simd"])
if K.info()["simd"] != "avx512":
    sys.exit("the default SIMD path is not avx512 on this AVX-512 CPU")
PYEOF
echo "== kernel tests (default path avx512; tests parametrised over paths run every path natively)"
shopt -s nullglob
tests=(tests/test_ops*.py tests/test_kernels_simd.py)
"$PY" -m pytest -q -p no:cacheprovider --maxfail=20 "${tests[@]}" 2>&1 | tee "$OUTDIR/tests.log" | tail -25
rc=${PIPESTATUS[0]}
echo "== SGEMM timings"
"$PY" tools/gemm_paths.py 2>&1 | tee "$OUTDIR/gemm.txt"
exit $rc
