// Launchers of the core's own CUDA kernels (private to csrc/cuda). Everything here queues work
// on `stream` and returns; launch-configuration errors throw std::runtime_error.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "ndt/gram.h"
#include "ndt/matrix_view.h"

namespace ndt::cuda::detail {

/// Grams handled by one launch of the batched kernels. The pointers travel as one kernel
/// parameter (__grid_constant__), so no descriptor is copied host → device (such a copy from
/// pageable memory may synchronise the host). 48 × 56 B + 8 B stays below the classic 4 KiB
/// kernel-parameter limit; larger batches take several launches.
constexpr int kMaxJobsPerLaunch = 48;

/// Prelude of one Gram, written by the prepare kernel (float64 ×3): trace, tr(G)²/‖G‖F², flags.
constexpr int kPreludeWidth = 3;

struct JobPointers {
  const float* gram;  ///< n × n float32, column-major, lower triangle defined
  double* a;          ///< n × n float64 workspace: full symmetric copy, then destroyed by the solver
  double* w;          ///< n float64 eigenvalues, ascending
  int* info;          ///< solver status (0 = converged)
  double* prelude;    ///< kPreludeWidth float64
  double* record;     ///< kRecordWidth float64 (metrics kernel only)
  int n;
};

struct BatchArgs {
  int count = 0;
  JobPointers job[kMaxJobsPerLaunch];
};

struct MetricArgs {
  double eps;
  double energy_threshold;
  uint32_t want;  ///< MetricBits
};

/// G ← beta·G + (XᵀX or XXᵀ), lower triangle, any strides; the own (non-cuBLAS) Gram path.
void launch_gram_lower(const MatrixView& x, GramSide side, float* gram, float beta, cudaStream_t stream);

/// Per job: prelude (finite?, trace, max|g|, tr²/‖G‖F²) and a = the full float64 copy of the
/// Gram — or the zero matrix when the Gram is non-finite or zero, so that no solver ever sees NaN.
void launch_prepare(const BatchArgs& args, cudaStream_t stream);

/// Per job (n ≤ kJacobiMaxDim): cyclic parallel-order Jacobi on a, eigenvalues ascending into w,
/// info = 0 on convergence, 1 after max_sweeps sweeps without it.
void launch_jacobi(const BatchArgs& args, int max_sweeps, cudaStream_t stream);

/// Per job: the record from prelude, w (ascending) and info; same definitions and flags as
/// metrics_from_spectrum / metrics_of_accumulators on the CPU.
void launch_metrics(const BatchArgs& args, const MetricArgs& metric, cudaStream_t stream);

}  // namespace ndt::cuda::detail
