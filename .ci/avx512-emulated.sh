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

# Build tools: pybind11's CMake config, cmake and ninja may live only in pip's isolated build env.
if ! "$PY" -m pybind11 --cmakedir >/dev/null 2>&1; then "$PY" -m pip install -q pybind11; fi
if ! command -v cmake >/dev/null 2>&1; then "$PY" -m pip install -q cmake; fi
generator=()
if command -v ninja >/dev/null 2>&1 || "$PY" -m pip install -q ninja; then
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
fi
CXX=$(command -v "${CXX:-g++}")

# A cache made with another generator or compiler is rebuilt from scratch (CMake would otherwise drop
# the -D settings below when it notices the compiler change).
build=build/avx512emu
if [[ -f "$build/CMakeCache.txt" ]] &&
   { ! grep -q "^CMAKE_GENERATOR:INTERNAL=${generator[1]:-Unix Makefiles}$" "$build/CMakeCache.txt" ||
     ! grep -q "^CMAKE_CXX_COMPILER:[A-Z]*=$CXX$" "$build/CMakeCache.txt"; }; then
  rm -rf "$build"
fi
cmake -S . -B "$build" "${generator[@]}" -DPIXRANK_AVX512_EMULATED=ON -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CXX_COMPILER="$CXX" -DPython_EXECUTABLE="$(command -v "$PY")" \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)"
so=$(find "$build" -maxdepth 1 -name '_kernels*.so' | head -n 1)
if [[ -z "$so" ]]; then echo "avx512-emulated.sh: no _kernels*.so in $build" >&2; exit 1; fi

# A throw-away package tree: the pure-Python sources plus the emulated build of the extension.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r python/pixrank "$tmp/pixrank"
find "$tmp/pixrank" -name '_kernels*.so' -delete
cp "$so" "$tmp/pixrank/"
export PYTHONPATH="$tmp${PYTHONPATH:+:$PYTHONPATH}"
export PIXRANK_SIMD=avx512

# Import the emulated build, not an installed (or editable) pixrank: a scikit-build-core editable
# install puts a redirecting finder on sys.meta_path (from a .pth file); a sitecustomize module on
# PYTHONPATH (run after the .pth files) drops it so that PYTHONPATH wins, in the test process and in
# the fresh interpreters some tests start.
cat > "$tmp/sitecustomize.py" <<'PYEOF'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                    and "Redirecting" not in type(f).__name__]
PYEOF
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
