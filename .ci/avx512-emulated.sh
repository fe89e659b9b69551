#!/usr/bin/env bash
# Run pixrank's AVX-512 code on a machine WITHOUT AVX-512: build pixrank._kernels with the CMake option
# PIXRANK_AVX512_EMULATED (the AVX-512 translation units compiled, unchanged, against SIMD Everywhere's
# portable intrinsics on AVX2+FMA; cpp/simd_avx512.hpp) into build/avx512emu, WITHOUT touching the
# installed package, and run the GEMM / conv / top-k kernel tests on the avx512 path
# (PIXRANK_SIMD=avx512; the runner checks before every test that the avx512 path is the one in use and
# deselects the tests parametrised over the other paths). Exits non-zero on any failure.
#
# Needs an x86-64 CPU with AVX2+FMA and SIMDe's headers (installed with apt-get when missing).
# Usage: bash .ci/avx512-emulated.sh [extra pytest args]      (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! grep -qw avx2 /proc/cpuinfo 2>/dev/null || ! grep -qw fma /proc/cpuinfo 2>/dev/null; then
  echo "avx512-emulated.sh: this CPU lacks AVX2+FMA, which the emulation runs on: skipped" >&2
  exit 0
fi

# SIMDe (header-only). Debian/Ubuntu: libsimde-dev.
have_simde() { printf '#include <simde/x86/avx512.h>\n' | "${CXX:-g++}" -x c++ -std=c++17 -fsyntax-only - 2>/dev/null; }
if ! have_simde; then
  if command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -qq libsimde-dev >/dev/null 2>&1 ||
      { apt-get update -qq && apt-get install -y -qq libsimde-dev >/dev/null; }
  fi
  have_simde || { echo "avx512-emulated.sh: SIMDe headers not found (install libsimde-dev)" >&2; exit 1; }
fi

. .ci/kernel-build.sh
ensure_build_tools
build_kernels build/avx512emu -DPIXRANK_AVX512_EMULATED=ON -DCMAKE_BUILD_TYPE=Release

# A throw-away package tree: the pure-Python sources plus the emulated build of the extension; its
# sitecustomize drops an editable install's finder, in the test process and in the fresh interpreters
# some tests start.
make_package_tree
export PIXRANK_SIMD=avx512

runner="$tmp/run_tests.py"
cat > "$runner" <<PYEOF
import os, sys
import pixrank._kernels as k
import pixrank
path = os.path.realpath(k.__file__)
info = k.info()
print("avx512-emulated.sh: pixrank._kernels from", path, "simd =", info["simd"],
      "avx512_emulated =", info.get("avx512_emulated"), "gemm_tile =", info["gemm_tile"])
if not path.startswith(os.path.realpath("$tmp")) or not info.get("avx512_emulated"):
    sys.exit("avx512-emulated.sh: the tests would not use the emulated AVX-512 build")
if info["simd"] != "avx512" or pixrank.info()["simd"] != "avx512":
    sys.exit("avx512-emulated.sh: PIXRANK_SIMD=avx512 did not select the avx512 path")
import pytest

class AVX512Only:
    """Fail any test that would run its kernels on another path than avx512."""
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item):
        if k.info()["simd"] != "avx512":
            pytest.fail(f"{item.nodeid}: running on {k.info()['simd']}, not avx512", pytrace=False)

sys.exit(pytest.main(sys.argv[1:], plugins=[AVX512Only()]))
PYEOF

# The kernel tests (GEMM, linear/conv forward and backward, pooling, softmax, top-k, errors): the ones
# parametrised over SIMD paths keep only their avx512 cases. About 30 s on 2 cores (SIMDe turns each
# 512-bit operation into two 256-bit ones, so the emulation is only ~2x slower than AVX2 code).
shopt -s nullglob
tests=(tests/test_ops*.py tests/test_kernels_simd.py)
select="not generic and not avx2"
status=0
"$PY" "$runner" -q -p no:cacheprovider "${tests[@]}" -k "$select" "$@" || status=$?
if (( status != 0 )); then echo "avx512-emulated.sh: FAILED (status $status)" >&2; exit "$status"; fi
echo "avx512-emulated.sh: kernel tests passed on the emulated AVX-512 path"
