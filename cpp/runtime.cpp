// pixrank kernels: thread count, SIMD selection, aligned workspaces (see runtime.hpp).
#include "runtime.hpp"

#include <atomic>
#include <cstdlib>
#include <limits>
#include <new>
#include <stdexcept>
#include <thread>

#if defined(__linux__)
#include <sched.h>
#endif
#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define PIXRANK_HAVE_ATFORK 1
#endif

namespace pixrank {

// ---------------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------------

int affinity_cpus() {
#if defined(__linux__) && defined(CPU_COUNT)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n >= 1) return n;
    }
#endif
    unsigned hc = std::thread::hardware_concurrency();
    return hc >= 1 ? static_cast<int>(hc) : 1;
}

namespace {
// Upper bound on the thread count: more is never useful and guards against absurd requests.
constexpr int64_t kMaxThreads = 1024;

// GNU libgomp is not fork-safe: a child forked after the parent ran a parallel region hangs in its
// first one. The kernels therefore run serially in such a child (multiprocessing workers, etc.).
std::atomic<bool> g_pool_maybe_started{false};
std::atomic<bool> g_forked_child{false};

void on_fork_child() {
    if (g_pool_maybe_started.load()) g_forked_child.store(true);
}

std::atomic<int>& threads_slot() {
    static std::atomic<int> slot{[] {
#ifdef PIXRANK_HAVE_ATFORK
        pthread_atfork(nullptr, nullptr, &on_fork_child);
#endif
        return affinity_cpus();
    }()};
    return slot;
}
}  // namespace

int num_threads() {
    const int n = threads_slot().load(std::memory_order_relaxed);
    if (g_forked_child.load(std::memory_order_relaxed)) return 1;
    if (n > 1 && !g_pool_maybe_started.load(std::memory_order_relaxed)) g_pool_maybe_started.store(true);
    return n;
}

bool serial_after_fork() { return g_forked_child.load(); }

void set_num_threads(int64_t n) {
    if (n < 1 || n > kMaxThreads)
        throw std::invalid_argument("set_num_threads: n must be in [1, " + std::to_string(kMaxThreads) +
                                    "], got " + std::to_string(n));
    threads_slot().store(static_cast<int>(n), std::memory_order_relaxed);
}

const char* threading_backend() {
#ifdef _OPENMP
    return "openmp";
#else
    return "serial";
#endif
}

// ---------------------------------------------------------------------------------------------
// SIMD
// ---------------------------------------------------------------------------------------------

const char* simd_name(Simd s) {
    switch (s) {
        case Simd::avx512: return "avx512";
        case Simd::avx2: return "avx2";
        default: return "generic";
    }
}

namespace {

bool cpu_has(Simd s) {
    switch (s) {
        case Simd::generic: return true;
#if defined(PIXRANK_X86_KERNELS) && (defined(__GNUC__) || defined(__clang__))
        case Simd::avx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case Simd::avx512:
#if defined(PIXRANK_AVX512_EMULATED)
            // Test build: the AVX-512 source is compiled against SIMDe, which builds it from AVX2+FMA.
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
            // The AVX-512 kernels use AVX-512F only (plus AVX2/FMA in shared code).
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
                   __builtin_cpu_supports("fma");
#endif
#endif
        default: return false;
    }
}

struct SimdState {
    std::vector<Simd> available;
    std::atomic<int> current{0};
    std::string env_rejected;
    SimdState() {
#if defined(PIXRANK_X86_KERNELS) && (defined(__GNUC__) || defined(__clang__))
        __builtin_cpu_init();
#endif
        for (Simd s : {Simd::generic, Simd::avx2, Simd::avx512})
            if (cpu_has(s)) available.push_back(s);
        Simd chosen = available.back();
        if (const char* env = std::getenv("PIXRANK_SIMD")) {
            std::string want(env);
            bool found = false;
            for (Simd s : available)
                if (want == simd_name(s)) {
                    chosen = s;
                    found = true;
                }
            if (!found && !want.empty()) env_rejected = want;
        }
        current.store(static_cast<int>(chosen));
    }
};

SimdState& simd_state() {
    static SimdState state;
    return state;
}

}  // namespace

std::vector<Simd> simd_available() { return simd_state().available; }

Simd simd_current() { return static_cast<Simd>(simd_state().current.load(std::memory_order_relaxed)); }

const std::string& simd_env_rejected() { return simd_state().env_rejected; }

void simd_set(const std::string& name) {
    SimdState& st = simd_state();
    std::string names;
    for (Simd s : st.available) {
        if (name == simd_name(s)) {
            st.current.store(static_cast<int>(s));
            return;
        }
        names += names.empty() ? "" : ", ";
        names += simd_name(s);
    }
    throw std::invalid_argument("set_simd: '" + name + "' is not available on this CPU/build (available: " +
                                names + ")");
}

// ---------------------------------------------------------------------------------------------
// Workspace
// ---------------------------------------------------------------------------------------------

AlignedBuffer::~AlignedBuffer() { std::free(ptr_); }

float* AlignedBuffer::get(size_t n) {
    if (n <= cap_ && ptr_) return ptr_;
    if (n > (std::numeric_limits<size_t>::max() - 64) / sizeof(float)) throw std::bad_alloc();
    // Grow geometrically so that a slowly increasing sequence of requests reallocates rarely.
    size_t want = n > cap_ + cap_ / 2 ? n : cap_ + cap_ / 2;
    size_t bytes = (want * sizeof(float) + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (!p) {
        want = n;
        bytes = (want * sizeof(float) + 63) / 64 * 64;
        p = std::aligned_alloc(64, bytes);
        if (!p) throw std::bad_alloc();
    }
    std::free(ptr_);
    ptr_ = static_cast<float*>(p);
    cap_ = want;
    return ptr_;
}

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) ||
        r > std::numeric_limits<int64_t>::max() / 8)
        throw std::invalid_argument(std::string(what) + ": size overflow (" + std::to_string(a) + " * " +
                                    std::to_string(b) + ")");
    return r;
}

}  // namespace pixrank
