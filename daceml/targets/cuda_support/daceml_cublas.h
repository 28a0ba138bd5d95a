// daceml's GEMM calls through cuBLAS (the `cublas` implementations of MatMul and Gemm in
// daceml/onnx/ops/gpu_blas.py). Host code: each call is queued on the stream the program gives
// the node (daceml binds every stream of a CUDA program to the caller's torch stream), on
// device pointers. Products are stated row-major (as the ONNX arrays are stored) and passed
// to column-major cuBLAS transposed: Y^T = op(B)^T op(A)^T.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>

namespace daceml {
namespace cublas {

[[noreturn]] inline void fail(const char* node, const std::string& what) {
    const std::string message = std::string("daceml: cuBLAS call of node '") + node + "' failed: " + what;
    std::fprintf(stderr, "%s\n", message.c_str());
    throw std::runtime_error(message);
}

inline void check(cublasStatus_t status, const char* node, const char* call) {
    if (status != CUBLAS_STATUS_SUCCESS)
        fail(node, std::string(call) + " returned " + cublasGetStatusName(status) + " (" +
                       cublasGetStatusString(status) + ")");
}

inline void check(cudaError_t status, const char* node, const char* call) {
    if (status != cudaSuccess) fail(node, std::string(call) + " returned " + cudaGetErrorString(status));
}

/* One handle per device, created at the first call on it (the handle's default math mode:
   full fp32, no TF32). */
inline cublasHandle_t handle(const char* node, int* device_index = nullptr) {
    static cublasHandle_t handles[64] = {};
    int d = 0;
    check(cudaGetDevice(&d), node, "cudaGetDevice");
    if (d < 0 || d >= 64) fail(node, "device index " + std::to_string(d) + " out of range");
    if (handles[d] == nullptr) check(cublasCreate(&handles[d]), node, "cublasCreate");
    if (device_index != nullptr) *device_index = d;
    return handles[d];
}

/* At least n ones of type T on the current device (grown on demand; filled once, synchronously). */
template <typename T>
const T* ones(long long n, const char* node) {
    static T* buffers[64] = {};
    static long long sizes[64] = {};
    int d = 0;
    handle(node, &d);
    if (sizes[d] < n) {
        if (buffers[d] != nullptr) check(cudaFree(buffers[d]), node, "cudaFree");
        buffers[d] = nullptr;
        sizes[d] = 0;
        check(cudaMalloc((void**)&buffers[d], n * (long long)sizeof(T)), node, "cudaMalloc");
        std::vector<T> host(n, T(1));
        check(cudaMemcpy(buffers[d], host.data(), n * (long long)sizeof(T), cudaMemcpyHostToDevice), node,
              "cudaMemcpy");
        sizes[d] = n;
    }
    return buffers[d];
}

inline int as_int(long long v, const char* node, const char* what) {
    if (v < 0 || v > INT_MAX) fail(node, std::string(what) + " = " + std::to_string(v) + " does not fit cuBLAS's int");
    return (int)v;
}

inline cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                const float* alpha, const float* a, int lda, long long sa, const float* b, int ldb,
                                long long sb, const float* beta, float* c, int ldc, long long sc, int batch) {
    if (batch == 1) return cublasSgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return cublasSgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch);
}

inline cublasStatus_t gemm_call(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                                const double* alpha, const double* a, int lda, long long sa, const double* b, int ldb,
                                long long sb, const double* beta, double* c, int ldc, long long sc, int batch) {
    if (batch == 1) return cublasDgemm(h, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return cublasDgemmStridedBatched(h, ta, tb, m, n, k, alpha, a, lda, sa, b, ldb, sb, beta, c, ldc, sc, batch);
}

/* Row-major, batched: for b < batch, C_b (m x n, row stride ldc) = alpha op(A_b) op(B_b) + beta C_b,
   op(X) = X^T where ta / tb; A_b = a + b * sa (stride 0: shared by every b), likewise B_b, C_b. */
template <typename T>
void gemm(cudaStream_t stream, const char* node, bool ta, bool tb, long long m, long long n, long long k, T alpha,
          const T* a, long long lda, long long sa, const T* b, long long ldb, long long sb, T beta, T* c,
          long long ldc, long long sc, long long batch) {
    if (m == 0 || n == 0 || batch == 0) return;
    cublasHandle_t h = handle(node);
    check(cublasSetStream(h, stream), node, "cublasSetStream");
    const cublasOperation_t opa = ta ? CUBLAS_OP_T : CUBLAS_OP_N, opb = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    // column-major: C^T (n x m, ld ldc) = op(B)^T (n x k) op(A)^T (k x m)
    check(gemm_call(h, opb, opa, as_int(n, node, "n"), as_int(m, node, "m"), as_int(k, node, "k"), &alpha, b,
                    as_int(ldb, node, "ldb"), sb, a, as_int(lda, node, "lda"), sa, &beta, c,
                    as_int(ldc, node, "ldc"), sc, as_int(batch, node, "batch")),
          node, batch == 1 ? "cublas<t>gemm" : "cublas<t>gemmStridedBatched");
}

/* Y (m x n, row-major, contiguous) = the row vector `row` (n elements) repeated in every row:
   the product ones(m x 1) row(1 x n). */
template <typename T>
void broadcast_rows(cudaStream_t stream, const char* node, long long m, long long n, const T* row, T* y) {
    if (m == 0 || n == 0) return;
    const T* one = ones<T>(m, node);
    gemm<T>(stream, node, false, false, m, n, 1, T(1), one, 1, 0, row, n, 0, T(0), y, n, 0, 1);
}

/* Y (m x n, row-major, contiguous) = the column vector `col` (m elements) repeated in every column. */
template <typename T>
void broadcast_cols(cudaStream_t stream, const char* node, long long m, long long n, const T* col, T* y) {
    if (m == 0 || n == 0) return;
    const T* one = ones<T>(n, node);
    gemm<T>(stream, node, false, false, m, n, 1, T(1), col, 1, 0, one, n, 0, T(0), y, n, 0, 1);
}

template <typename T>
void copy(cudaStream_t stream, const char* node, long long count, const T* src, T* dst) {
    if (count == 0 || src == dst) return;
    check(cudaMemcpyAsync(dst, src, count * (long long)sizeof(T), cudaMemcpyDeviceToDevice, stream), node,
          "cudaMemcpyAsync");
}

}  // namespace cublas
}  // namespace daceml
