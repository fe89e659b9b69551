// pixrank kernels: run-time services shared by every kernel.
//
//   * thread count (set_num_threads / get_num_threads; default: the CPUs this process may use),
//   * the SIMD variant in use (detected once by CPUID, overridable by env PIXRANK_SIMD and set_simd),
//   * parallel_for: an OpenMP loop (serial when OpenMP is absent) that carries the first exception
//     thrown by any worker back to the calling thread,
//   * AlignedBuffer: a 64-byte aligned, grow-only float workspace, kept thread-local by callers so
//     that repeated calls do not map fresh pages (PERF-NOTES: page faults cost).
//
// Plain C++17; no Python headers here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pixrank {

// ---------------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------------

// Number of threads kernels use (>= 1); always 1 in a process forked after the parent used threads
// (GNU OpenMP cannot run parallel regions in such a child).
int num_threads();
// True in such a forked child.
bool serial_after_fork();
// Sets the number of threads; throws std::invalid_argument when n < 1.
void set_num_threads(int64_t n);
// CPUs this process may run on (sched_getaffinity), at least 1.
int affinity_cpus();
// "openmp" or "serial".
const char* threading_backend();

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

inline bool in_parallel() {
#ifdef _OPENMP
    return omp_in_parallel() != 0;
#else
    return false;
#endif
}

// Collects the first exception thrown inside a parallel region so that it can be rethrown on the
// calling thread after the region ends (exceptions must not escape an OpenMP region).
class ExceptionCarrier {
public:
    template <class F>
    void run(F&& f) noexcept {
        try {
            f();
        } catch (...) {
            std::lock_guard<std::mutex> lock(mu_);
            if (!ep_) ep_ = std::current_exception();
        }
    }
    void rethrow() {
        if (ep_) std::rethrow_exception(ep_);
    }
    bool failed() {
        std::lock_guard<std::mutex> lock(mu_);
        return static_cast<bool>(ep_);
    }

private:
    std::mutex mu_;
    std::exception_ptr ep_;
};

// Calls f(begin, end) on chunks of [0, n) in parallel on up to `threads` threads (static schedule,
// chunks of at least `grain` iterations). Exceptions from workers are rethrown here. Runs serially
// when called from inside another parallel region.
template <class F>
void parallel_for(int64_t n, int64_t grain, F&& f, int threads = 0) {
    if (n <= 0) return;
    if (threads <= 0 || serial_after_fork()) threads = num_threads();
    if (grain < 1) grain = 1;
    int64_t max_chunks = (n + grain - 1) / grain;
    int64_t nt = threads < max_chunks ? threads : max_chunks;
    if (nt <= 1 || in_parallel()) {
        f(int64_t(0), n);
        return;
    }
    ExceptionCarrier carrier;
#ifdef _OPENMP
#pragma omp parallel num_threads(static_cast<int>(nt))
    {
        const int64_t t = omp_get_thread_num();
        const int64_t team = omp_get_num_threads();
        const int64_t begin = n * t / team;
        const int64_t end = n * (t + 1) / team;
        if (begin < end) carrier.run([&] { f(begin, end); });
    }
#else
    carrier.run([&] { f(int64_t(0), n); });
#endif
    carrier.rethrow();
}

// Calls f(i, slot) for every i in [0, n) on up to `threads` threads, handing out indices dynamically
// (a preempted thread does not hold the others back); slot in [0, threads) names the executing
// thread, for per-thread partial results. Exceptions from workers are rethrown here. Serial (slot 0)
// inside another parallel region or with one thread.
template <class F>
void parallel_dynamic(int64_t n, int threads, F&& f) {
    if (n <= 0) return;
    if (threads <= 0 || serial_after_fork()) threads = num_threads();
    const int64_t nt = threads < n ? threads : n;
    if (nt <= 1 || in_parallel()) {
        for (int64_t i = 0; i < n; ++i) f(i, int64_t(0));
        return;
    }
    ExceptionCarrier carrier;
#ifdef _OPENMP
#pragma omp parallel for num_threads(static_cast<int>(nt)) schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
        const int64_t slot = omp_get_thread_num();
        carrier.run([&] { f(i, slot); });
    }
#else
    carrier.run([&] {
        for (int64_t i = 0; i < n; ++i) f(i, int64_t(0));
    });
#endif
    carrier.rethrow();
}

// ---------------------------------------------------------------------------------------------
// SIMD variant
// ---------------------------------------------------------------------------------------------

enum class Simd : int { generic = 0, avx2 = 1, avx512 = 2 };

const char* simd_name(Simd s);
// Variants compiled in AND supported by this CPU, best last ("generic" always first).
std::vector<Simd> simd_available();
// The variant in use (chosen once at start-up: the best available, or env PIXRANK_SIMD).
Simd simd_current();
// Forces a variant by name; throws std::invalid_argument if unknown or not available here.
void simd_set(const std::string& name);
// The value of PIXRANK_SIMD at start-up if it named an unavailable variant ("" otherwise).
const std::string& simd_env_rejected();

// ---------------------------------------------------------------------------------------------
// Workspace
// ---------------------------------------------------------------------------------------------

// 64-byte aligned grow-only buffer of floats. Not copyable. Throws std::bad_alloc on failure.
class AlignedBuffer {
public:
    AlignedBuffer() = default;
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    ~AlignedBuffer();
    // Returns a pointer to at least n floats (contents unspecified).
    float* get(size_t n);

private:
    float* ptr_ = nullptr;
    size_t cap_ = 0;
};

// Overflow-checked size arithmetic: throws std::invalid_argument naming `what`.
int64_t checked_mul(int64_t a, int64_t b, const char* what);

}  // namespace pixrank
