// GEMMs through OpenBLAS (the pinned scipy-openblas32 wheel, symbols prefixed "scipy_") on the
// program's own OpenMP threads.
//
// OpenBLAS's pthreads pool would spin against the program's OpenMP threads, so the library runs
// single-threaded (set once by the environment's init code) and daceml::openblas::gemm splits one
// product between the OpenMP threads: the rows of C when it has at least as many rows as columns,
// else its columns (in blocks of 16). Called inside a parallel region (a loop over a batch), it is
// one single-threaded call. A product with one row or one column is a GEMV (split the same way).
#pragma once
#include <omp.h>

extern "C" {
void scipy_cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha, const float* a,
                       int lda, const float* b, int ldb, float beta, float* c, int ldc);
void scipy_cblas_dgemm(int order, int transa, int transb, int m, int n, int k, double alpha, const double* a,
                       int lda, const double* b, int ldb, double beta, double* c, int ldc);
void scipy_cblas_sgemv(int order, int trans, int m, int n, float alpha, const float* a, int lda, const float* x,
                       int incx, float beta, float* y, int incy);
void scipy_cblas_dgemv(int order, int trans, int m, int n, double alpha, const double* a, int lda,
                       const double* x, int incx, double beta, double* y, int incy);
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

inline void gemv1(bool trans, long long m, long long n, float alpha, const float* a, long long lda, const float* x,
                  long long incx, float beta, float* y, long long incy) {
  scipy_cblas_sgemv(kRowMajor, trans ? kTrans : kNoTrans, (int)m, (int)n, alpha, a, (int)lda, x, (int)incx, beta, y,
                    (int)incy);
}

inline void gemv1(bool trans, long long m, long long n, double alpha, const double* a, long long lda,
                  const double* x, long long incx, double beta, double* y, long long incy) {
  scipy_cblas_dgemv(kRowMajor, trans ? kTrans : kNoTrans, (int)m, (int)n, alpha, a, (int)lda, x, (int)incx, beta, y,
                    (int)incy);
}

// y[0:len] (stride incy) = alpha * op(M) x + beta * y for a matrix-vector product written as a GEMM
// with one row or one column. M is row-major; with trans, y runs along M's columns. The output is
// split between the threads (rows of M, or its columns with trans). beta = 0 never reads y (it may
// hold NaNs), as in GEMM.
template <typename T>
inline void gemv(bool trans, long long rows, long long cols, T alpha, const T* mat, long long ld, const T* x,
                 long long incx, T beta, T* y, long long incy) {
  const long long len = trans ? cols : rows, depth = trans ? rows : cols;
  const int threads = omp_in_parallel() || len * depth < (1LL << 16) ? 1 : omp_get_max_threads();
#pragma omp parallel num_threads(threads)
  {
    const long long t = omp_get_thread_num(), nt = omp_get_num_threads();
    const long long i0 = len * t / nt, i1 = len * (t + 1) / nt;
    if (i1 > i0) {
      if (beta == T(0))
        for (long long i = i0; i < i1; ++i) y[i * incy] = T(0);
      const T b = beta == T(0) ? T(1) : beta;
      if (trans)
        gemv1(true, depth, i1 - i0, alpha, mat + i0, ld, x, incx, b, y + i0 * incy, incy);
      else
        gemv1(false, i1 - i0, depth, alpha, mat + i0 * ld, ld, x, incx, b, y + i0 * incy, incy);
    }
  }
}

// products below this many multiply-adds run on one thread (splitting costs more than it saves)
constexpr long long kSplitWork = 1LL << 18;

// Row-major C[m, n] = alpha * op(A)[m, k] @ op(B)[k, n] + beta * C, with op(X) = X^T where the flag is set.
template <typename T>
inline void gemm(bool ta, bool tb, long long m, long long n, long long k, T alpha, const T* a, long long lda,
                 const T* b, long long ldb, T beta, T* c, long long ldc) {
  if (m == 1 && n > 1) {  // c = op(B)^T a: B is [n, k] when transposed, else [k, n]
    gemv<T>(!tb, tb ? n : k, tb ? k : n, alpha, b, ldb, a, ta ? lda : 1, beta, c, 1);
    return;
  }
  if (n == 1 && m > 1) {  // c = op(A) b: A is [k, m] when transposed, else [m, k]
    gemv<T>(ta, ta ? k : m, ta ? m : k, alpha, a, lda, b, tb ? 1 : ldb, beta, c, ldc);
    return;
  }
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads <= 1 || m * n * k < kSplitWork) {
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
      // boundary i of nt column blocks: n * i / nt rounded up to a multiple of 16, at most n
      auto bound = [&](long long i) { const long long c = (n * i / nt + 15) / 16 * 16; return c < n ? c : n; };
      const long long c0 = bound(t), c1 = bound(t + 1);
      if (c1 > c0)
        gemm1(ta, tb, m, c1 - c0, k, alpha, a, lda, tb ? b + c0 * ldb : b + c0, ldb, beta, c + c0, ldc);
    }
  }
}

}  // namespace openblas
}  // namespace daceml
