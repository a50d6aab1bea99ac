// Host entry of the device Gram update (ndt/cuda/device.h): argument checks and the choice between
// cuBLAS and the own kernel (gram_cuda.cu). Host code, compiled against the CUDA runtime API.
//
// Rule kept everywhere below: nothing waits for the device and nothing reads device memory on the
// host; allocation is the caller's (torch's stream-ordered caching allocator) or happens once in
// a constructor.
//
// NEVER RUN: compiled only (no GPU in the writing session).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <mutex>

#include "check_cuda.h"
#include "kernels_cuda.h"
#include "math_libraries_cuda.h"
#include "ndt/check.h"
#include "ndt/cuda/device.h"

namespace ndt::cuda {
namespace {

// Describes x as the column-major operand of a cuBLAS Gram product, if cuBLAS can read it
// directly (one unit stride, non-negative leading dimension large enough, float32/16-bit).
bool cublas_operand(const MatrixView& x, GramSide side, detail::GramOperand* out) {
  if (x.dtype == DType::float64) return false;
  if (x.rows > INT_MAX || x.cols > INT_MAX) return false;
  const bool feature = side == GramSide::feature;
  int64_t m_rows, m_cols, ld;
  bool m_is_xt;  // the buffer read column-major is Xᵀ (X row-major) or X (X column-major)
  if (x.col_stride == 1 && (x.row_stride >= x.cols || x.rows == 1)) {
    m_is_xt = true;
    m_rows = x.cols;
    m_cols = x.rows;
    ld = x.rows == 1 ? x.cols : x.row_stride;
  } else if (x.row_stride == 1 && (x.col_stride >= x.rows || x.cols == 1)) {
    m_is_xt = false;
    m_rows = x.rows;
    m_cols = x.cols;
    ld = x.cols == 1 ? x.rows : x.col_stride;
  } else {
    return false;
  }
  if (ld > INT_MAX) return false;
  // feature: G = XᵀX = M·Mᵀ if M = Xᵀ, else Mᵀ·M; sample: the other way round.
  out->data = x.data;
  out->dtype = x.dtype;
  out->rows = static_cast<int>(m_rows);
  out->cols = static_cast<int>(m_cols);
  out->ld = static_cast<int>(std::max<int64_t>(ld, 1));
  out->transpose = feature != m_is_xt;
  return true;
}

}  // namespace

void gram_update(Context& ctx, const MatrixView& x, GramSide side, float* gram, float beta, Stream stream,
                 bool use_cublas) {
  validate(x, "gram_update");
  NDT_CHECK_ARG(gram != nullptr, "gram_update: null Gram pointer");
  NDT_CHECK_ARG(beta == 0.0f || beta == 1.0f, "gram_update: beta must be 0 or 1, got " << beta);
  const int64_t n = side == GramSide::feature ? x.cols : x.rows;
  NDT_CHECK_ARG(n <= INT_MAX && n * n / n == n, "gram_update: Gram dimension " << n << " too large");
  detail::DeviceGuard guard(ctx.device());
  const cudaStream_t s = detail::to_stream(stream);
  detail::GramOperand operand{};
  if (use_cublas && ctx.has_cublas() && cublas_operand(x, side, &operand)) {
    detail::cublas_gram(ctx.handles(), operand, gram, beta, s);
    return;
  }
  detail::launch_gram_lower(x, side, gram, beta, s);
}

}  // namespace ndt::cuda
