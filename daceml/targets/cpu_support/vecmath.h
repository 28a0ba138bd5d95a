// daceml: force-included (g++ -include) into every CPU translation unit of a compiled program.
//
// Declares the math functions that glibc's libmvec has vector versions of as SIMD functions, so
// that GCC vectorizes loops calling them (an elementwise map of exp/erf/tanh/...) instead of
// calling the scalar function per element. glibc's own headers do this only under -ffast-math,
// which daceml does not use: a shared object built with it sets flush-to-zero for the whole
// process. Together with -fno-math-errno (these functions then have no side effects) and -lmvec.
// libmvec's functions are accurate to a few ulp and do not touch the floating-point state.
// daceml defines DACEML_LIBMVEC where it links libmvec (daceml/config.py).
//
// Also defines daceml_expf, an inline exp for loops that do little else (the sigmoid / SiLU
// epilogues of convolutions and GEMMs): it vectorizes into straight-line code, where expf
// becomes a call into libmvec per vector.
#pragma once
#ifdef __cplusplus
// libstdc++'s <math.h> puts std::erf, std::floor, ... into the global namespace: a float argument
// of a bare erf(x) in a tasklet then calls erff, not the double version.
#include <cmath>
#include <math.h>
#endif
#if defined(DACEML_LIBMVEC) && defined(__x86_64__) && defined(__GLIBC__) && !defined(__CUDACC__)
#include <features.h>
#if __GLIBC_PREREQ(2, 35)
#define DACEML_SIMD_DECLARE(name) \
    extern "C" double name(double) __attribute__((simd("notinbranch"))); \
    extern "C" float name##f(float) __attribute__((simd("notinbranch")));
DACEML_SIMD_DECLARE(exp)
DACEML_SIMD_DECLARE(exp2)
DACEML_SIMD_DECLARE(expm1)
DACEML_SIMD_DECLARE(log)
DACEML_SIMD_DECLARE(log2)
DACEML_SIMD_DECLARE(log10)
DACEML_SIMD_DECLARE(log1p)
DACEML_SIMD_DECLARE(sin)
DACEML_SIMD_DECLARE(cos)
DACEML_SIMD_DECLARE(tan)
DACEML_SIMD_DECLARE(asin)
DACEML_SIMD_DECLARE(acos)
DACEML_SIMD_DECLARE(atan)
DACEML_SIMD_DECLARE(sinh)
DACEML_SIMD_DECLARE(cosh)
DACEML_SIMD_DECLARE(tanh)
DACEML_SIMD_DECLARE(asinh)
DACEML_SIMD_DECLARE(acosh)
DACEML_SIMD_DECLARE(atanh)
DACEML_SIMD_DECLARE(erf)
DACEML_SIMD_DECLARE(erfc)
DACEML_SIMD_DECLARE(cbrt)
#undef DACEML_SIMD_DECLARE
#endif
#endif

#ifdef __cplusplus
// exp(x) for float: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so r is exact to a few
// ulp), exp(r) by a degree-6 polynomial (Cephes' expf coefficients), 2^n built in the exponent
// bits. Branch-free; x is clamped to [-87.3, 88.7] (the result then saturates at about 1.2e-38 and
// 3.4e+38 instead of reaching 0 and inf: what the sigmoid and SiLU epilogues, 1 / (1 +
// daceml_expf(-v)), need), NaN stays NaN. Relative error <= 2e-7.
static inline float daceml_expf(float x) {
    x = x < -87.33654f ? -87.33654f : (x > 88.72283f ? 88.72283f : x);
    const float n = __builtin_rintf(x * 1.44269504088896341f);
    float r = __builtin_fmaf(n, -0.693145751953125f, x);
    r = __builtin_fmaf(n, -1.428606765330187045e-06f, r);
    float p = 1.9875691500E-4f;
    p = __builtin_fmaf(p, r, 1.3981999507E-3f);
    p = __builtin_fmaf(p, r, 8.3334519073E-3f);
    p = __builtin_fmaf(p, r, 4.1665795894E-2f);
    p = __builtin_fmaf(p, r, 1.6666665459E-1f);
    p = __builtin_fmaf(p, r, 5.0000001201E-1f);
    p = __builtin_fmaf(p * r, r, r) + 1.0f;
    const int bits = ((int)n + 127) << 23;
    float scale;
    __builtin_memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}
#endif
