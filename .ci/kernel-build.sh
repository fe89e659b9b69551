# Sourced by .ci/sanitize.sh and .ci/avx512-emulated.sh: build pixrank._kernels with extra CMake
# options into its own build folder and run tests against that build, WITHOUT touching the installed
# (or editable) pixrank. Expects PY (the interpreter) and the repository root as the working folder.
#
#   ensure_build_tools            pybind11's CMake config, cmake and (if installable) ninja; sets the
#                                 array `generator` (-G Ninja, or empty for CMake's default)
#   build_kernels DIR OPT...      configure + build into DIR with the -D options OPT...; a cache made
#                                 with another generator or compiler is rebuilt from scratch (CMake would
#                                 otherwise drop the -D settings when it notices the change); sets `so`
#   make_package_tree             a throw-away folder `tmp` (removed on exit) holding the pure-Python
#                                 sources plus $so, first on PYTHONPATH, with a sitecustomize module that
#                                 drops scikit-build-core's editable finder so that PYTHONPATH wins, in the
#                                 test process and in the fresh interpreters some tests start

ensure_build_tools() {
  # pybind11, cmake and ninja may live only in pip's isolated build environment.
  if ! "$PY" -m pybind11 --cmakedir >/dev/null 2>&1; then "$PY" -m pip install -q pybind11; fi
  if ! command -v cmake >/dev/null 2>&1; then "$PY" -m pip install -q cmake; fi
  generator=()
  if command -v ninja >/dev/null 2>&1 || "$PY" -m pip install -q ninja; then
    command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  fi
  CXX=$(command -v "${CXX:-g++}")
}

build_kernels() {
  local build=$1; shift
  if [[ -f "$build/CMakeCache.txt" ]] &&
     { ! grep -q "^CMAKE_GENERATOR:INTERNAL=${generator[1]:-Unix Makefiles}$" "$build/CMakeCache.txt" ||
       ! grep -q "^CMAKE_CXX_COMPILER:[A-Z]*=$CXX$" "$build/CMakeCache.txt"; }; then
    rm -rf "$build"
  fi
  cmake -S . -B "$build" "${generator[@]}" "$@" \
    -DCMAKE_CXX_COMPILER="$CXX" -DPython_EXECUTABLE="$(command -v "$PY")" \
    -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
  cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)"
  so=$(find "$build" -maxdepth 1 -name '_kernels*.so' | head -n 1)
  if [[ -z "$so" ]]; then echo "$(basename "$0"): no _kernels*.so in $build" >&2; exit 1; fi
}

make_package_tree() {
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp -r python/pixrank "$tmp/pixrank"
  find "$tmp/pixrank" -name '_kernels*.so' -delete
  cp "$so" "$tmp/pixrank/"
  mkdir -p "$tmp/logs"
  cat > "$tmp/sitecustomize.py" <<'PYEOF'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                    and "Redirecting" not in type(f).__name__]
PYEOF
  export PYTHONPATH="$tmp${PYTHONPATH:+:$PYTHONPATH}"
}
