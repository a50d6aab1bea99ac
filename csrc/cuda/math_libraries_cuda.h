// cuBLAS / cuSOLVER behind a header free of their types (private to csrc/cuda).
//
// The libraries are opened with dlopen and called through function pointers (see
// ndt::cuda::load_math_libraries): the extension then has no link-time dependency on them and
// imports on machines without them. Only math_libraries_cuda.cpp includes cublas_v2.h and
// cusolverDn.h; it is compiled with NDT_CUDA_MATH_HEADERS when CMake found those headers, and
// without it every function here reports "not available".
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ndt/cuda/device.h"
#include "ndt/matrix_view.h"

namespace ndt::cuda::detail {

bool cublas_loaded();
bool cusolver_loaded();
bool math_headers_compiled();

/// The column-major operand M of a Gram product: G = M·Mᵀ (transpose = false) or Mᵀ·M (true),
/// with M rows × cols, leading dimension ld, element type dtype.
struct GramOperand {
  const void* data;
  DType dtype;
  int rows, cols, ld;
  bool transpose;
};

/// G ← beta·G + op: cublasSsyrk (float32, lower triangle) or cublasGemmEx (16-bit inputs, full
/// matrix, float32 compute and output, tensor cores). G is n × n column-major float32, ldg = n.
void cublas_gram(Context::Handles& h, const GramOperand& m, float* gram, float beta, cudaStream_t stream);

/// Workspace (float64 elements) of cusolverDnDsyevd(jobz = N, uplo = L) for an n × n matrix.
int syevd_work_size(Context::Handles& h, int n);
/// Eigenvalues (ascending) of the n × n column-major float64 matrix a (destroyed) into w; the
/// status goes to the device int *info and is never read here.
void syevd(Context::Handles& h, int n, double* a, double* w, double* work, int lwork, int* info,
           cudaStream_t stream);

/// Workspace (float64 elements) of cusolverDnDsyevjBatched for `batch` matrices of order n ≤ 32.
int syevj_batched_work_size(Context::Handles& h, int n, int batch);
/// Eigenvalues (ascending) of `batch` contiguous n × n matrices a (destroyed) into w (n · batch);
/// info: `batch` device ints.
void syevj_batched(Context::Handles& h, int n, int batch, double* a, double* w, double* work, int lwork,
                   int* info, cudaStream_t stream);

}  // namespace ndt::cuda::detail
