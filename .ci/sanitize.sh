#!/usr/bin/env bash
# Build pixrank._kernels with AddressSanitizer + UndefinedBehaviorSanitizer (CMake option
# PIXRANK_SANITIZE) into build/asan, WITHOUT touching the installed package, and run the kernel tests
# against that build. Exits non-zero on any sanitizer report or test failure.
#
# Usage: bash .ci/sanitize.sh [extra pytest args]      (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
PY=${PYTHON:-python3}

. .ci/kernel-build.sh
ensure_build_tools
libasan=$("$CXX" -print-file-name=libasan.so)
if [[ ! -e "$libasan" ]]; then
  echo "sanitize.sh: $CXX has no libasan.so (install the compiler's sanitizer runtime)" >&2
  exit 1
fi
build_kernels build/asan -DPIXRANK_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo

# A throw-away package tree: the pure-Python sources plus the sanitizer build of the extension.
make_package_tree

# libasan must come first; libstdc++ is preloaded too, or ASan cannot intercept __cxa_throw (the
# python binary itself does not link libstdc++, so it is not loaded when ASan initialises).
libstdcxx=$("$CXX" -print-file-name=libstdc++.so)
export LD_PRELOAD="$libasan:$libstdcxx${LD_PRELOAD:+:$LD_PRELOAD}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:log_path=$tmp/logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1:log_path=$tmp/logs/ubsan"
export PIXRANK_SANITIZE_RUN=1

# Import the sanitizer build, not an installed (or editable) pixrank. A scikit-build-core editable
# install puts a redirecting finder on sys.meta_path; the runner drops it so that PYTHONPATH wins.
runner="$tmp/run_tests.py"
cat > "$runner" <<PYEOF
import os, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                    and "Redirecting" not in type(f).__name__]
import pixrank._kernels as k
path = os.path.realpath(k.__file__)
print("sanitize.sh: pixrank._kernels from", path, "sanitize =", k.info().get("sanitize"))
if not path.startswith(os.path.realpath("$tmp")) or not k.info().get("sanitize"):
    sys.exit("sanitize.sh: the tests would not use the sanitizer build")
import pytest
sys.exit(pytest.main(sys.argv[1:]))
PYEOF

shopt -s nullglob
tests=(tests/test_ops*.py tests/test_kernels_simd.py)
status=0
"$PY" "$runner" -q -p no:cacheprovider "${tests[@]}" "$@" || status=$?
reports=("$tmp"/logs/*)
if (( ${#reports[@]} )); then
  echo "sanitize.sh: sanitizer reports:" >&2
  cat "${reports[@]}" >&2
  status=${status:-1}; (( status == 0 )) && status=1
fi
if (( status != 0 )); then echo "sanitize.sh: FAILED (status $status)" >&2; exit "$status"; fi
echo "sanitize.sh: kernel tests passed under AddressSanitizer + UndefinedBehaviorSanitizer"
