// GEMMs through OpenBLAS (the pinned scipy-openblas32 wheel, symbols prefixed "scipy_") on the
// program's own OpenMP threads.
//
// OpenBLAS's pthreads pool would spin against the program's OpenMP threads, so the library runs
// single-threaded (set once by the environment's init code) and daceml::openblas::gemm splits one
// product between the OpenMP threads: the rows of C when it has at least as many rows as columns,
// else its columns (in blocks of 16). Called inside a parallel region (a loop over a batch), it is
// one single-threaded call.
#pragma once
#include <omp.h>

extern "C" {
void scipy_cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha, const float* a,
                       int lda, const float* b, int ldb, float beta, float* c, int ldc);
void scipy_cblas_dgemm(int order, int transa, int transb, int m, int n, int k, double alpha, const double* a,
                       int lda, const double* b, int ldb, double beta, double* c, int ldc);
void scipy_openblas_set_num_threads(int threads);
}

namespace daceml {
namespace openblas {

enum { kRowMajor = 101, kNoTrans = 111, kTrans = 112 };

inline void gemm1(bool ta, bool tb, long long m, long long n, long long k, float alpha, const float* a,
                  long long lda, const float* b, long long ldb, float beta, float* c, long long ldc) {
  scipy_cblas_sgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, (int)m, (int)n, (int)k, alpha, a,
                    (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

inline void gemm1(bool ta, bool tb, long long m, long long n, long long k, double alpha, const double* a,
                  long long lda, const double* b, long long ldb, double beta, double* c, long long ldc) {
  scipy_cblas_dgemm(kRowMajor, ta ? kTrans : kNoTrans, tb ? kTrans : kNoTrans, (int)m, (int)n, (int)k, alpha, a,
                    (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

// products below this many multiply-adds run on one thread (splitting costs more than it saves)
constexpr long long kSplitWork = 1LL << 18;

// Row-major C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C, with op(X) = X^T where the flag is set.
template <typename T>
inline void gemm(bool ta, bool tb, long long m, long long n, long long k, T alpha, const T* a, long long lda,
                 const T* b, long long ldb, T beta, T* c, long long ldc) {
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads <= 1 || m * n * k < kSplitWork || (m < 2 && n < 32)) {
    gemm1(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    const long long t = omp_get_thread_num(), nt = omp_get_num_threads();
    if (m >= n) {
      const long long r0 = m * t / nt, r1 = m * (t + 1) / nt;
      if (r1 > r0)
        gemm1(ta, tb, r1 - r0, n, k, alpha, ta ? a + r0 : a + r0 * lda, lda, b, ldb, beta, c + r0 * ldc, ldc);
    } else {
      auto bound = [&](long long i) { return i >= nt ? n : ((n * i / nt + 15) / 16 * 16 < n ? (n * i / nt + 15) / 16 * 16 : n); };
      const long long c0 = bound(t), c1 = bound(t + 1);
      if (c1 > c0)
        gemm1(ta, tb, m, c1 - c0, k, alpha, a, lda, tb ? b + c0 * ldb : b + c0, ldb, beta, c + c0, ldc);
    }
  }
}

}  // namespace openblas
}  // namespace daceml
