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
