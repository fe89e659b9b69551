// pixrank kernels: the one place the AVX-512 translation units get their intrinsics from.
//
// Release builds (the default): <immintrin.h>, and the file including this header is compiled with
// -mavx512f -mavx2 -mfma (CMakeLists.txt); it is only called after CPUID reported AVX-512F.
//
// Test builds with the CMake option PIXRANK_AVX512_EMULATED=ON (never a release build): SIMD
// Everywhere (SIMDe, https://github.com/simd-everywhere/simde, Debian package libsimde-dev) provides
// portable implementations of the same _mm512_* intrinsics and the __m512 / __mmask16 types under
// their Intel names (SIMDE_ENABLE_NATIVE_ALIASES), built from AVX2+FMA instructions. The AVX-512 kernel
// source is then compiled unchanged WITHOUT -mavx512* flags, so that an AVX2-only machine can run the
// AVX-512 code path (selected with set_simd("avx512") / PIXRANK_SIMD=avx512) and test it against
// numpy; info()["avx512_emulated"] is true in such a build. See .ci/avx512-emulated.sh.
#pragma once

#if defined(PIXRANK_AVX512_EMULATED)
#if defined(__AVX512F__)
#error "PIXRANK_AVX512_EMULATED: compile the AVX-512 translation units without -mavx512* flags"
#endif
#ifndef SIMDE_ENABLE_NATIVE_ALIASES
#define SIMDE_ENABLE_NATIVE_ALIASES
#endif
#include <simde/x86/avx512.h>
#else
#include <immintrin.h>
#endif

// Masked 16-float load (lanes outside the mask read as 0.0f and their memory is not touched) and masked
// store (lanes outside the mask leave memory untouched): the AVX-512F intrinsics in a release build. The
// SIMDe release this project tests with (0.7.4) has no _mm512_maskz_loadu_ps / _mm512_mask_storeu_ps,
// so the emulated build does the same lane by lane (touching only the selected lanes, like the hardware).
namespace pixrank {
namespace avx512 {
namespace {
#if defined(PIXRANK_AVX512_EMULATED)
inline __m512 maskz_loadu_ps(__mmask16 m, const float* p) {
    alignas(64) float t[16];
    for (int i = 0; i < 16; ++i) t[i] = ((m >> i) & 1u) ? p[i] : 0.0f;
    return _mm512_load_ps(t);
}
inline void mask_storeu_ps(float* p, __mmask16 m, __m512 v) {
    alignas(64) float t[16];
    _mm512_store_ps(t, v);
    for (int i = 0; i < 16; ++i)
        if ((m >> i) & 1u) p[i] = t[i];
}
#else
inline __m512 maskz_loadu_ps(__mmask16 m, const float* p) { return _mm512_maskz_loadu_ps(m, p); }
inline void mask_storeu_ps(float* p, __mmask16 m, __m512 v) { _mm512_mask_storeu_ps(p, m, v); }
#endif
}  // namespace
}  // namespace avx512
}  // namespace pixrank
