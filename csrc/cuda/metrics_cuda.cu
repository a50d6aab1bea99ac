// Metrics from eigenvalues on the device: one thread block per Gram, every Gram of a batch in one
// launch, records written to device memory. The definitions, the eps placements, the order of
// the checks and the flags are those of metrics_from_spectrum and metrics_of_accumulators in
// csrc/cpu/metrics_cpu.cpp; keep the two in step.
//
// NEVER RUN: compiled only (no GPU in the writing session).
#include <cmath>

#include "check_cuda.h"
#include "kernels_cuda.h"
#include "ndt/cuda/device.h"
#include "ndt/metrics.h"
#include "reduce_cuda.cuh"

namespace ndt::cuda::detail {
namespace {

// The CPU's filled(): requested metrics get `value`, the others NaN; trace and λmax get `value`.
__device__ void write_filled(double* record, double value, uint32_t want, uint32_t flags) {
  const double nan = NAN;
  record[0] = (want & kStableRank) ? value : nan;
  record[1] = (want & kParticipationRatio) ? value : nan;
  record[2] = (want & kCumulative90) ? value : nan;
  record[3] = (want & kNuclearNormRatio) ? value : nan;
  record[4] = (want & kParticipationRatioEig) ? value : nan;
  record[5] = (want & kEffectiveRank) ? value : nan;
  record[6] = value;
  record[7] = value;
  record[8] = static_cast<double>(flags);
}

__global__ void __launch_bounds__(kBlockThreads) metrics_kernel(const __grid_constant__ BatchArgs args,
                                                                 MetricArgs metric) {
  const JobPointers& job = args.job[blockIdx.x];
  const int n = job.n;
  const int tid = static_cast<int>(threadIdx.x);
  const uint32_t want = metric.want;
  double* record = job.record;
  __shared__ double scratch[kWarps];
  __shared__ int int_scratch[kWarps];
  __shared__ double chunk_prefix[kBlockThreads];

  // Every early return below depends only on values all threads share, so no thread is left
  // waiting at a barrier.
  const double trace = job.prelude[0];
  double participation_ratio_eig = job.prelude[1];
  const auto prelude_flags = static_cast<uint32_t>(job.prelude[2]);
  if (prelude_flags & kFlagNonFinite) {
    if (tid == 0) write_filled(record, NAN, want, kFlagNonFinite);
    return;
  }
  if (prelude_flags & kFlagZero) {
    if (tid == 0) write_filled(record, 0.0, want, kFlagZero);
    return;
  }
  if (*job.info != 0) {  // the solver's status, read on the device only
    if (tid == 0) write_filled(record, NAN, want, kFlagNotConverged);
    return;
  }

  // w is ascending; descending index d is w[n − 1 − d].
  const double* w = job.w;
  double non_finite = 0.0, top = 0.0;
  for (int i = tid; i < n; i += kBlockThreads) {
    const double l = w[i];
    if (!isfinite(l)) non_finite = 1.0;
    else top = fmax(top, l);
  }
  non_finite = block_reduce(non_finite, MaxOp{}, scratch);
  top = block_reduce(top, MaxOp{}, scratch);
  if (non_finite != 0.0 || isinf(trace)) {
    if (tid == 0) write_filled(record, NAN, want, kFlagNonFinite);
    return;
  }
  const double lambda_max = fmax(top, 0.0);
  if (lambda_max == 0.0 || trace <= 0.0) {
    if (tid == 0) write_filled(record, 0.0, want, kFlagZero);
    return;
  }

  double lambda_sum = 0.0, scaled_sq_sum = 0.0, sigma_sum = 0.0;
  for (int i = tid; i < n; i += kBlockThreads) {
    const double l = fmax(w[i], 0.0);  // PSD: negatives are round-off
    lambda_sum += l;
    scaled_sq_sum += (l / lambda_max) * (l / lambda_max);
    sigma_sum += sqrt(l);
  }
  lambda_sum = block_reduce(lambda_sum, SumOp{}, scratch);
  scaled_sq_sum = block_reduce(scaled_sq_sum, SumOp{}, scratch);
  sigma_sum = block_reduce(sigma_sum, SumOp{}, scratch);
  if (isnan(participation_ratio_eig))
    participation_ratio_eig = (lambda_sum / lambda_max) * (lambda_sum / lambda_max) / scaled_sq_sum;

  // Second pass: ndt's participation ratio (needs Σσ + eps) and the entropy (needs Σσ).
  const double eps = metric.eps;
  const double denom = sigma_sum + eps;
  double sq = 0.0, entropy = 0.0;
  for (int i = tid; i < n; i += kBlockThreads) {
    const double sigma = sqrt(fmax(w[i], 0.0));
    const double p = sigma / denom;
    sq += p * p;
    const double q = sigma / sigma_sum;
    if (q > 0.0) entropy -= q * log(q);
  }
  sq = block_reduce(sq, SumOp{}, scratch);
  entropy = block_reduce(entropy, SumOp{}, scratch);

  // cumulative_90: first k (1-based, descending order) whose running energy reaches the
  // threshold, n if none. Chunked scan: thread t owns descending indices [t·C, t·C + C); for
  // n ≤ kBlockThreads every chunk is one element and the sums run in the CPU's sequential order.
  // The denominator is the scan's own total, not the tree-reduced lambda_sum: the CPU divides
  // by the same sequential sum it accumulates, so at threshold 1.0 it stops exactly at the last
  // non-zero eigenvalue; a total summed in another order can differ in the last bit and move k.
  int k90 = n;
  if (want & kCumulative90) {
    __shared__ double scan_total;
    const int chunk = (n + kBlockThreads - 1) / kBlockThreads;
    const int begin = min(tid * chunk, n), end = min(begin + chunk, n);
    double local = 0.0;
    for (int d = begin; d < end; ++d) local += fmax(w[n - 1 - d], 0.0);
    chunk_prefix[tid] = local;
    __syncthreads();
    if (tid == 0) {
      double running = 0.0;
      for (int t = 0; t < kBlockThreads; ++t) {
        const double v = chunk_prefix[t];
        chunk_prefix[t] = running;
        running += v;
      }
      scan_total = running;
    }
    __syncthreads();
    const double total = scan_total;
    double cumulative = chunk_prefix[tid];
    int found = n;
    for (int d = begin; d < end; ++d) {
      cumulative += fmax(w[n - 1 - d], 0.0);
      if (cumulative / total >= metric.energy_threshold) {
        found = d + 1;
        break;
      }
    }
    k90 = block_reduce(found, MinIntOp{}, int_scratch);
  }

  if (tid == 0) {
    const double nan = NAN;
    const double sigma_max = sqrt(lambda_max);
    record[0] = (want & kStableRank) ? trace / (lambda_max + eps) : nan;
    record[1] = (want & kParticipationRatio) ? 1.0 / (sq + eps) : nan;
    record[2] = (want & kCumulative90) ? static_cast<double>(k90) : nan;
    record[3] = (want & kNuclearNormRatio) ? sigma_sum / (sigma_max + eps) : nan;
    record[4] = (want & kParticipationRatioEig) ? participation_ratio_eig : nan;
    record[5] = (want & kEffectiveRank) ? exp(entropy) : nan;
    record[6] = trace;
    record[7] = lambda_max;
    record[8] = 0.0;
  }
}

}  // namespace

void launch_metrics(const BatchArgs& args, const MetricArgs& metric, cudaStream_t stream) {
  if (args.count == 0) return;
  metrics_kernel<<<args.count, kBlockThreads, 0, stream>>>(args, metric);
  NDT_CHECK_LAUNCH();
}

}  // namespace ndt::cuda::detail
