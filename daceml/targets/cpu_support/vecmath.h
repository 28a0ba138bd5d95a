// daceml: force-included (g++ -include) into every CPU translation unit of a compiled program.
//
// Declares the math functions that glibc's libmvec has vector versions of as SIMD functions, so
// that GCC vectorizes loops calling them (an elementwise map of exp/erf/tanh/...) instead of
// calling the scalar function per element. glibc's own headers do this only under -ffast-math,
// which daceml does not use: a shared object built with it sets flush-to-zero for the whole
// process. Together with -fno-math-errno (these functions then have no side effects) and -lmvec.
// libmvec's functions are accurate to a few ulp and do not touch the floating-point state.
#pragma once
#ifdef __cplusplus
// libstdc++'s <math.h> puts std::erf, std::floor, ... into the global namespace: a float argument
// of a bare erf(x) in a tasklet then calls erff, not the double version.
#include <cmath>
#include <math.h>
#endif
#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__CUDACC__)
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
