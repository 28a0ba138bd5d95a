// Force-included into every CUDA translation unit daceml compiles (nvcc -include).
// CUDA 13's CUB (CCCL 3) removed names that DaCe 1.0.2's runtime headers still use
// (dace/reduction.h, dace/cuda/multidim_gbar.cuh); this maps them to their
// replacements. Older CUB versions are left alone.
#pragma once
#if defined(__CUDACC__)
#include <cstddef>
#include <cub/version.cuh>
#if defined(CUB_VERSION) && CUB_VERSION >= 300000
#include <cub/cub.cuh>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>
namespace cub {
template <typename ValueType, typename ConversionOp, typename InputIteratorT, typename OffsetT = std::ptrdiff_t>
using TransformInputIterator = thrust::transform_iterator<ConversionOp, InputIteratorT, ValueType, ValueType>;
template <typename ValueType, typename OffsetT = std::ptrdiff_t>
using CountingInputIterator = thrust::counting_iterator<ValueType>;
__device__ __forceinline__ void CTA_SYNC() { __syncthreads(); }
}  // namespace cub
#endif
#endif
