"""Shared machinery of the benchmark suite: the paired timer, thread control, rows, the machine.

Every benchmark row compares pixrank against one or more reference libraries *in the same
process*: after a warm-up, each repeat runs every side once, in an order that alternates
from one repeat to the next (A B C, then C B A, ...), so that slow drifts of a shared,
noisy machine (other processes, clock changes, thermal state) hit all sides alike. The row
reports each side's median over the repeats and the ratio ``reference time / pixrank
time`` (above 1: pixrank is faster).

Functions shorter than ``min_sample_s`` are run ``inner`` times per sample (the same
``inner`` for every side, chosen during the warm-up), and the sample is divided by
``inner``: timer resolution and the cost of ``perf_counter`` itself then stay negligible.

At 2 threads and more the timer sleeps, untimed, before every sample (0.15 s when numpy is
a side, 0.02 s otherwise: :func:`settle_seconds`), so that the idle worker threads of the
library that ran last (OpenBLAS's spin about 0.1 s after a call) do not take the cores from
the next side.

A row is a plain ``dict`` (JSON-serialisable, so a child process can hand it back):

``group``, ``row`` (what is measured), ``threads``, ``pixrank_s`` (median seconds, or
None), ``refs`` (``{name: median seconds or None}``), ``ratios`` (``{name: ref / pixrank}``),
``ratios_best`` (the same from each side's fastest repeat: robust when other jobs
only ever slow a repeat down), ``cpu_s`` (median process CPU seconds per side),
``unit`` (what the times are per, e.g. ``'call'`` or ``'epoch'``), ``flops`` (per call,
when meaningful), ``check`` (``{name: {'ok': bool, 'detail': str, ...}}``: pixrank's
output against that reference's), ``notes`` (list of strings, e.g. ``'not available:
...'``) and ``extra`` (group-specific figures such as accuracy or recall).

Reference for the method: the paired, interleaved design follows the advice of
T. Kalibera and R. Jones, "Rigorous Benchmarking in Reasonable Time", ISMM 2013.
"""
from __future__ import annotations

import contextlib
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

#: environment variables that make numpy's OpenBLAS pick a slower kernel (PERF-NOTES)
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


class NotAvailable(Exception):
    """A side of a row cannot run here (library missing, pixrank part not built yet)."""


def raiser(exc: BaseException) -> Callable[[], object]:
    """A side that cannot run: calling it raises ``exc`` (paired_time then drops it)."""
    def side():
        raise exc
    return side


def not_available_reason(exc: BaseException) -> str:
    """One line saying why a side could not run, for the row's notes."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}"[:300]


# --------------------------------------------------------------------------------------
# optional libraries
# --------------------------------------------------------------------------------------


def import_pixrank_ops():
    """``pixrank.ops`` or :class:`NotAvailable` saying why (e.g. the kernels are not built)."""
    try:
        from pixrank import ops
        return ops
    except Exception as exc:  # ImportError, or a broken build
        raise NotAvailable(f"pixrank.ops does not import ({not_available_reason(exc)})") from exc


def import_optional(name: str):
    """Import a reference library by module name, or raise :class:`NotAvailable`."""
    try:
        return __import__(name)
    except Exception as exc:
        raise NotAvailable(f"{name} is not installed ({not_available_reason(exc)}); "
                           "install the bench extra: pip install '.[bench]'") from exc


# --------------------------------------------------------------------------------------
# threads
# --------------------------------------------------------------------------------------


#: the thread count :func:`set_threads` last set (``paired_time`` settles between sides above 1)
_THREADS = {"n": 1}

#: seconds to sleep before every timed sample at 2+ threads when numpy (OpenBLAS, pthreads
#: build) is one of the sides (see :func:`paired_time`): longer than its idle worker threads
#: keep spinning after a call, 2^28 TSC ticks (OpenBLAS's compile-time ``THREAD_TIMEOUT`` 28;
#: about 0.1 s at 2.8 GHz) before they sleep.
SETTLE_BLAS_S = 0.15
#: the same when only OpenMP runtimes are involved (pixrank, PyTorch's MKL/oneDNN, FAISS):
#: GNU OpenMP's idle workers spin ``GOMP_SPINCOUNT`` = 300,000 iterations by default (well
#: under 10 ms) before they block; hnswlib starts and joins its threads per call.
SETTLE_OMP_S = 0.02


def settle_seconds(sides=()) -> float:
    """The pause before each timed sample: 0 at 1 thread; at 2+ threads
    :data:`SETTLE_BLAS_S` if ``'numpy'`` is among ``sides``, else :data:`SETTLE_OMP_S`.

    ``$PIXRANK_BENCH_SETTLE_S`` overrides it (seconds, >= 0; e.g. 0 to measure the
    interference itself).

    Raises:
        ValueError: ``$PIXRANK_BENCH_SETTLE_S`` is not a number >= 0.
    """
    env = os.environ.get("PIXRANK_BENCH_SETTLE_S")
    if env is not None:
        try:
            val = float(env)
        except ValueError:
            raise ValueError(f"PIXRANK_BENCH_SETTLE_S must be a number of seconds, got {env!r}") from None
        if not val >= 0:
            raise ValueError(f"PIXRANK_BENCH_SETTLE_S must be >= 0, got {env!r}")
        return val if _THREADS["n"] > 1 else 0.0
    if _THREADS["n"] <= 1:
        return 0.0
    return SETTLE_BLAS_S if "numpy" in sides else SETTLE_OMP_S


def set_threads(n: int) -> dict:
    """Set every loaded library to ``n`` threads; returns what was set, per library.

    pixrank (``pixrank.set_num_threads``), PyTorch (``torch.set_num_threads``), FAISS
    (``faiss.omp_set_num_threads``), and every BLAS library threadpoolctl finds (numpy's
    OpenBLAS, FAISS's bundled OpenBLAS) through ``threadpoolctl.threadpool_limits``.
    hnswlib takes ``num_threads`` per call; the group passes it.
    """
    _THREADS["n"] = int(n)
    done = {}
    try:  # import it here: a group may set threads before it first touches pixrank
        import_pixrank_ops().set_num_threads(n)
        done["pixrank"] = n
    except NotAvailable:
        pass
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
        done["torch"] = n
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(n)
        done["faiss"] = n
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n, user_api="blas")
        done["blas"] = n
    except ImportError:
        pass
    return done


# --------------------------------------------------------------------------------------
# the paired timer
# --------------------------------------------------------------------------------------


def _time_once(fn: Callable[[], object], inner: int, cpu: list | None = None) -> float:
    """Wall seconds per call over ``inner`` calls (process CPU seconds appended to ``cpu``)."""
    c0 = time.process_time()
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    t = (time.perf_counter() - t0) / inner
    if cpu is not None:
        cpu.append((time.process_time() - c0) / inner)
    return t


def paired_time(sides: dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                min_sample_s: float = 0.02, max_inner: int = 1000,
                warmup_sides: dict[str, Callable[[], object]] | None = None) -> dict[str, dict]:
    """Time several implementations of one operation, interleaved.

    Args:
        sides: ``{name: zero-argument callable}``; a callable may raise
            :class:`NotAvailable` on the warm-up, and that side is then dropped.
        repeats: samples per side (>= 1) after the warm-up.
        warmup: untimed calls per side first (>= 1; it also sizes ``inner``).
        min_sample_s: run a callable ``inner`` times per sample so that a sample lasts
            at least this long (seconds).
        max_inner: upper bound on ``inner``.
        warmup_sides: cheaper stand-ins (same names) to warm up with instead, for
            operations of seconds each; ``inner`` is then 1.

    Between sides: at 2 threads and more, the timer sleeps :func:`settle_seconds` before
    *every* timed sample (0.15 s when numpy is a side: OpenBLAS's pthreads workers spin ~0.1 s
    after a call; else 0.02 s: OpenMP workers spin well under 10 ms), so that the worker
    threads of the side that ran last have gone idle and do not take the cores from the
    next side; every side then starts its sample
    from the same state (idle workers), and within a sample its ``inner`` calls run back to
    back as a user's loop would. The sleep is not timed. At 1 thread there are no workers
    to spin and no pause.

    Returns:
        ``{name: {'median_s', 'min_s', 'samples', 'inner'} }`` for the sides that ran, and
        ``{name: {'error': str}}`` for those that raised.
    """
    if repeats < 1 or warmup < 1:
        raise ValueError(f"paired_time: repeats and warmup must be >= 1, got {repeats}, {warmup}")
    out: dict[str, dict] = {}
    live: dict[str, Callable] = {}
    slowest = 0.0
    for name, fn in sides.items():
        try:
            t = math.inf
            for _ in range(warmup):
                t = min(t, _time_once((warmup_sides or {}).get(name, fn), 1))
            if warmup_sides:
                t = math.inf
            live[name] = fn
            slowest = max(slowest, t)
        except NotAvailable as exc:
            out[name] = {"error": f"not available: {exc}"}
        except Exception as exc:  # a crash of one side must not kill the row
            out[name] = {"error": f"failed: {not_available_reason(exc)}"}
    if not live:
        return out
    # same inner count for every side, sized on the slowest so no side runs for ages
    inner = 1 if slowest >= min_sample_s else min(max_inner, max(1, int(min_sample_s / max(slowest, 1e-7))))
    samples: dict[str, list[float]] = {name: [] for name in live}
    cpu: dict[str, list[float]] = {name: [] for name in live}
    order = list(live)
    settle = settle_seconds(live)
    for r in range(repeats):
        seq = order if r % 2 == 0 else order[::-1]
        for name in seq:
            if name not in samples:
                continue
            if settle:
                time.sleep(settle)
            try:
                samples[name].append(_time_once(live[name], inner, cpu[name]))
            except Exception as exc:
                out[name] = {"error": f"failed: {not_available_reason(exc)}"}
                del samples[name]
    for name, s in samples.items():
        out[name] = {"median_s": statistics.median(s), "min_s": min(s), "samples": s, "inner": inner,
                     "cpu_median_s": statistics.median(cpu[name])}
    return out


def make_row(group: str, row: str, threads: int, timing: dict[str, dict], refs: list[str],
             unit: str = "call", flops: float | None = None, notes: list[str] | None = None,
             extra: dict | None = None, check: dict | None = None) -> dict:
    """Assemble a row dict from :func:`paired_time` output (side ``'pixrank'`` + ``refs``)."""
    notes = list(notes or [])
    p = timing.get("pixrank", {})
    if "error" in p:
        notes.append(f"pixrank {p['error']}")
    pix = p.get("median_s")
    pix_min = p.get("min_s")
    refs_s, ratios, ratios_best = {}, {}, {}
    for name in refs:
        t = timing.get(name, {})
        if "error" in t:
            notes.append(f"{name} {t['error']}")
        refs_s[name] = t.get("median_s")
        ratios[name] = (refs_s[name] / pix) if (pix and refs_s[name]) else None
        ratios_best[name] = (t["min_s"] / pix_min) if (pix_min and t.get("min_s")) else None
    return {
        "group": group, "row": row, "threads": threads, "unit": unit,
        "pixrank_s": pix, "refs": refs_s, "ratios": ratios, "ratios_best": ratios_best, "flops": flops,
        "cpu_s": {k: v.get("cpu_median_s") for k, v in timing.items() if "cpu_median_s" in v},
        "samples": {k: v.get("samples") for k, v in timing.items() if "samples" in v},
        "check": check or {}, "notes": notes, "extra": extra or {},
    }


def unavailable_row(group: str, row: str, threads: int, refs: list[str], reason: str,
                    unit: str = "call", flops: float | None = None) -> dict:
    """A row none of whose sides could be set up (e.g. the data or a library is missing)."""
    return make_row(group, row, threads, {}, refs, unit=unit, flops=flops,
                    notes=[f"not available: {reason}"])


# --------------------------------------------------------------------------------------
# checks of pixrank's output against a reference's
# --------------------------------------------------------------------------------------


def check_close(name: str, got, want, rtol: float) -> dict:
    """Compare two arrays: worst absolute error scaled by the reference's largest magnitude.

    ``ok`` when ``max|got - want| <= rtol * max(max|want|, 1e-30)`` and the shapes agree.
    """
    import numpy as np
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return {"ok": False, "detail": f"{name}: shape {got.shape} != reference {want.shape}"}
    if got.size == 0:
        return {"ok": True, "detail": f"{name}: empty", "rel_err": 0.0}
    scale = max(float(np.max(np.abs(want))), 1e-30)
    err = float(np.max(np.abs(got - want))) / scale
    if not np.all(np.isfinite(got)):
        return {"ok": False, "detail": f"{name}: non-finite values", "rel_err": math.inf}
    return {"ok": err <= rtol, "rel_err": err, "detail": f"{name}: max |diff| / max |ref| = {err:.2e} (tol {rtol:.0e})"}


def merge_checks(*checks: dict) -> dict:
    """One check from several (all must pass)."""
    ok = all(c.get("ok", False) for c in checks)
    rel = max((c.get("rel_err", 0.0) for c in checks), default=0.0)
    return {"ok": ok, "rel_err": rel, "detail": "; ".join(c.get("detail", "") for c in checks)}


def check_topk_ids(name: str, ids_got, ids_want, queries, database, tie_tol: float = 1e-5) -> dict:
    """Same top-k ids, ties aside.

    Rows whose id lists differ are accepted when the exact (float64) cosine scores of the
    two lists agree rank by rank within ``tie_tol``: the lists then differ only in the
    order of (near-)equal scores, which float32 rounding may legitimately swap.
    """
    import numpy as np
    ids_got = np.asarray(ids_got)
    ids_want = np.asarray(ids_want)
    if ids_got.shape != ids_want.shape:
        return {"ok": False, "detail": f"{name}: ids shape {ids_got.shape} != reference {ids_want.shape}"}
    same = np.all(ids_got == ids_want, axis=1)
    bad = np.flatnonzero(~same)
    q = np.asarray(queries, dtype=np.float64)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
    worst = 0.0
    for i in bad:
        dg = np.asarray(database[ids_got[i]], dtype=np.float64)
        dw = np.asarray(database[ids_want[i]], dtype=np.float64)
        sg = dg @ q[i] / np.maximum(np.linalg.norm(dg, axis=1), 1e-30)
        sw = dw @ q[i] / np.maximum(np.linalg.norm(dw, axis=1), 1e-30)
        worst = max(worst, float(np.max(np.abs(sg - sw))))
    frac = float(same.mean()) if same.size else 1.0
    ok = worst <= tie_tol
    return {"ok": ok, "ids_equal": frac, "tie_gap": worst,
            "detail": f"{name}: {frac * 100:.2f}% of queries with identical ids; "
                      f"the others differ by ties (largest score gap {worst:.1e}, tol {tie_tol:.0e})"}


# --------------------------------------------------------------------------------------
# the machine
# --------------------------------------------------------------------------------------

_CLOCK_C = r"""
#include <stdint.h>
/* n iterations of 8 dependent 1-cycle integer adds: 8 n core cycles */
int64_t spin(int64_t n) {
    int64_t x = 0;
    for (int64_t i = 0; i < n; i++) {
        __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                         "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0" : "+r"(x));
    }
    return x;
}
"""


def measure_clock_ghz() -> tuple[float | None, str]:
    """The core clock under load, measured, in GHz, and how it was obtained.

    Compiles (with the system C compiler) a loop of dependent integer adds, each one core
    cycle on every x86-64 since the P6, runs it for ~40 ms and divides cycles by the thread's CPU time;
    median of 15. Falls back to ``/proc/cpuinfo``'s ``cpu MHz`` (the nominal or last-sampled
    clock, not a measurement) where there is no compiler or the CPU is not x86-64.
    """
    import ctypes
    if platform.machine().lower() in ("x86_64", "amd64"):
        cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if cc:
            with tempfile.TemporaryDirectory() as tmp:
                src = os.path.join(tmp, "clock.c")
                lib = os.path.join(tmp, "clock.so")
                with open(src, "w") as f:
                    f.write(_CLOCK_C)
                r = subprocess.run([cc, "-O1", "-shared", "-fPIC", src, "-o", lib],
                                   capture_output=True, text=True)
                if r.returncode == 0:
                    spin = ctypes.CDLL(lib).spin
                    spin.argtypes = [ctypes.c_int64]
                    spin.restype = ctypes.c_int64
                    n = 1_000_000
                    spin(n)
                    ghz = []
                    for _ in range(15):
                        t0 = time.thread_time()
                        spin(n * 10)
                        dt = time.thread_time() - t0
                        ghz.append(8 * n * 10 / dt / 1e9)
                    return statistics.median(ghz), (
                        "measured: a loop of 8 dependent 1-cycle integer adds per iteration, "
                        "cycles / CPU seconds of the thread (time.thread_time, so that time the thread spends "
                        "descheduled on a shared machine does not count), median of 15 runs of ~40 ms")
    mhz = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("cpu mhz"):
                    mhz = float(line.split(":")[1])
                    break
    except OSError:
        pass
    if mhz:
        return mhz / 1000, "from /proc/cpuinfo 'cpu MHz' (not measured: no C compiler or not x86-64)"
    return None, "unknown (no compiler, no /proc/cpuinfo)"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU model, SIMD flags, cores, measured clock and the fp32 peak estimate.

    Peak (fp32, per core) = FMA lanes x 2 flops x FMA pipes x clock: with AVX-512 we assume
    two 512-bit FMA pipes (16 lanes x 2 x 2 = 64 flop/cycle; Zen 5, Skylake-SP Gold/
    Platinum), with AVX2+FMA two 256-bit pipes (8 x 2 x 2 = 32 flop/cycle; Haswell and
    later, Zen 2-4); otherwise SSE's 4 lanes x 2 (8, no FMA: one add and one mul pipe).
    """
    flags = cpu_flags()
    if "avx512f" in flags:
        simd, fpc, how = "AVX-512", 64, "AVX-512 (avx512f): 2 FMA pipes x 16 fp32 lanes x 2 flop = 64 flop/cycle/core"
    elif "avx2" in flags and "fma" in flags:
        simd, fpc, how = "AVX2+FMA", 32, "AVX2+FMA, no AVX-512: 2 FMA pipes x 8 fp32 lanes x 2 flop = 32 flop/cycle/core"
    else:
        simd, fpc, how = "SSE", 8, "no AVX2/FMA: 4 fp32 lanes x (1 add + 1 mul) = 8 flop/cycle/core"
    ghz, clock_how = measure_clock_ghz()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    peak_1 = fpc * ghz if ghz else None
    return {
        "cpu": cpu_model(), "machine": platform.machine(), "simd": simd,
        "flags_simd": sorted(f for f in flags if re.match(r"(avx|fma|sse4|f16c|amx)", f)),
        "cores": cores, "clock_ghz": ghz, "clock_how": clock_how,
        "flop_per_cycle": fpc, "peak_how": how,
        "peak_gflops_1": peak_1,
        "peak_gflops": {str(n): (peak_1 * n if peak_1 else None) for n in (1, 2, 4, 8) if n <= max(cores, 2)},
        "python": sys.version.split()[0], "platform": platform.platform(),
    }


def blas_info() -> list[dict]:
    """threadpoolctl's view of the BLAS/OpenMP libraries loaded in this process."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    keep = ("user_api", "internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads", "filepath")
    return [{k: d.get(k) for k in keep} for d in threadpool_info()]


def openblas_env() -> dict:
    """The OPENBLAS_* variables as this process sees them (None: unset)."""
    return {k: os.environ.get(k) for k in OPENBLAS_VARS}


@contextlib.contextmanager
def log_section(log, title: str):
    t0 = time.perf_counter()
    log(f"[bench] {title} ...")
    yield
    log(f"[bench] {title}: {time.perf_counter() - t0:.1f} s")


def fmt_s(t: float | None) -> str:
    """Seconds in a readable unit."""
    if t is None:
        return "n/a"
    if t < 1e-3:
        return f"{t * 1e6:.1f} µs"
    if t < 1:
        return f"{t * 1e3:.2f} ms"
    return f"{t:.2f} s"
