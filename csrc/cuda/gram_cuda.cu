// The core's own Gram kernel: the path for inputs cuBLAS cannot take (no unit stride, float64)
// and for builds or processes without cuBLAS, and a second implementation for the tests.
// Plain shared-memory tiling, float32 accumulation, lower-triangle tiles only; it is not meant
// to compete with cuBLAS (UNMEASURED: no GPU in the session that wrote it).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <limits>

#include "check_cuda.h"
#include "kernels_cuda.h"
#include "ndt/check.h"

namespace ndt::cuda::detail {
namespace {

constexpr int kTile = 16;

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(double v) { return static_cast<float>(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// G(i, j) = Σ_t a(i, t) · a(j, t) for i ≥ j, with a(i, t) = X[t, i] (feature side) or X[i, t]
// (sample side); X[r, c] at x[r·row_stride + c·col_stride]. Block (bx, by) computes output
// tile rows by·16…, columns bx·16…; tiles above the diagonal exit at once.
template <typename T>
__global__ void gram_lower_kernel(const T* __restrict__ x, int64_t row_stride, int64_t col_stride, int n, int k,
                                  bool feature, float* __restrict__ gram, float beta) {
  if (blockIdx.x > blockIdx.y) return;
  __shared__ float tile_i[kTile][kTile + 1];
  __shared__ float tile_j[kTile][kTile + 1];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const int i0 = static_cast<int>(blockIdx.y) * kTile, j0 = static_cast<int>(blockIdx.x) * kTile;
  // a(i, t) lives at x[i·stride_i + t·stride_t].
  const int64_t stride_i = feature ? col_stride : row_stride;
  const int64_t stride_t = feature ? row_stride : col_stride;
  // Consecutive threads (tx) must walk the index whose stride is 1, or every load of a warp hits
  // a different row (e.g. the feature side of a row-major X, where t strides by a whole row).
  const bool tx_walks_t = stride_t == 1 || stride_i != 1;
  float acc = 0.0f;
  for (int t0 = 0; t0 < k; t0 += kTile) {
    // tile_i[r][u] = a(i0 + r, t0 + u), tile_j[r][u] = a(j0 + r, t0 + u); padding (+1) keeps
    // both the row-wise and the column-wise writes free of bank conflicts.
    if (tx_walks_t) {
      const int t = t0 + tx, ri = i0 + ty, rj = j0 + ty;
      tile_i[ty][tx] = (ri < n && t < k) ? to_float(x[ri * stride_i + t * stride_t]) : 0.0f;
      tile_j[ty][tx] = (rj < n && t < k) ? to_float(x[rj * stride_i + t * stride_t]) : 0.0f;
    } else {
      const int t = t0 + ty, ri = i0 + tx, rj = j0 + tx;
      tile_i[tx][ty] = (ri < n && t < k) ? to_float(x[ri * stride_i + t * stride_t]) : 0.0f;
      tile_j[tx][ty] = (rj < n && t < k) ? to_float(x[rj * stride_i + t * stride_t]) : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kTile; ++u) acc = fmaf(tile_i[ty][u], tile_j[tx][u], acc);
    __syncthreads();
  }
  const int i = i0 + ty, j = j0 + tx;
  if (i < n && j <= i) {
    float* g = gram + static_cast<int64_t>(j) * n + i;  // column-major (i, j)
    *g = beta == 0.0f ? acc : beta * *g + acc;           // beta 0: never read uninitialised memory
  }
}

template <typename T>
void launch_typed(const MatrixView& x, int n, int k, bool feature, float* gram, float beta, cudaStream_t stream) {
  const unsigned tiles = static_cast<unsigned>((n + kTile - 1) / kTile);
  const dim3 grid(tiles, tiles), block(kTile, kTile);
  gram_lower_kernel<T><<<grid, block, 0, stream>>>(static_cast<const T*>(x.data), x.row_stride, x.col_stride, n, k,
                                                   feature, gram, beta);
  NDT_CHECK_LAUNCH();
}

}  // namespace

void launch_gram_lower(const MatrixView& x, GramSide side, float* gram, float beta, cudaStream_t stream) {
  const bool feature = side == GramSide::feature;
  const int64_t n = feature ? x.cols : x.rows, k = feature ? x.rows : x.cols;
  NDT_CHECK_ARG(n <= 65535 * static_cast<int64_t>(kTile) && k <= std::numeric_limits<int>::max(),
                "gram_update: dimensions too large for the own kernel (" << n << ", " << k << ")");
  const int ni = static_cast<int>(n), ki = static_cast<int>(k);
  switch (x.dtype) {
    case DType::float32: launch_typed<float>(x, ni, ki, feature, gram, beta, stream); break;
    case DType::float64: launch_typed<double>(x, ni, ki, feature, gram, beta, stream); break;
    case DType::float16: launch_typed<__half>(x, ni, ki, feature, gram, beta, stream); break;
    case DType::bfloat16: launch_typed<__nv_bfloat16>(x, ni, ki, feature, gram, beta, stream); break;
  }
}

}  // namespace ndt::cuda::detail
