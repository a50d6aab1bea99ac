// Before and inside the eigensolve: the per-Gram prelude (finiteness, trace, tr²/‖G‖F², the
// float64 copy) and the own batched Jacobi solver for small Grams. One thread block per Gram,
// every Gram of a batch in one launch.
//
// NEVER RUN: compiled only (no GPU in the writing session). The Jacobi kernel is the part most
// likely to need fixing; tests/test_cuda.py compares it with cuSOLVER and torch.linalg.eigvalsh.
#include <cmath>

#include "check_cuda.h"
#include "kernels_cuda.h"
#include "ndt/cuda/device.h"
#include "ndt/metrics.h"
#include "reduce_cuda.cuh"

namespace ndt::cuda::detail {
namespace {

// Convergence: off-diagonal Frobenius norm ≤ kJacobiTol · ‖A‖F. Near convergence a sweep leaves
// off-diagonal round-off of about n·ε·‖A‖F (≈ 7e-15 for n = 64), so 1e-13 is reachable, and the
// eigenvalues are then within 1e-13·‖A‖F (Weyl) — far below the float32 Gram's own error.
constexpr double kJacobiTol = 1e-13;
constexpr int kMaxPairs = static_cast<int>(kJacobiMaxDim / 2);

__global__ void __launch_bounds__(kBlockThreads) prepare_kernel(const __grid_constant__ BatchArgs args) {
  const JobPointers& job = args.job[blockIdx.x];
  const int n = job.n;
  const int64_t nn = static_cast<int64_t>(n) * n;
  const int tid = static_cast<int>(threadIdx.x);
  __shared__ double scratch[kWarps];

  double non_finite = 0.0, max_abs = 0.0, trace = 0.0;
  for (int64_t idx = tid; idx < nn; idx += kBlockThreads) {
    const int64_t i = idx % n, j = idx / n;  // column-major: consecutive threads, consecutive i
    if (i < j) continue;
    const double g = static_cast<double>(job.gram[idx]);
    if (!isfinite(g)) {
      non_finite = 1.0;
      continue;
    }
    max_abs = fmax(max_abs, fabs(g));
    if (i == j) trace += g;
  }
  non_finite = block_reduce(non_finite, MaxOp{}, scratch);
  max_abs = block_reduce(max_abs, MaxOp{}, scratch);
  trace = block_reduce(trace, SumOp{}, scratch);
  const bool bad = non_finite != 0.0;
  const bool zero = !bad && (trace <= 0.0 || max_abs == 0.0);

  // tr(G)² / ‖G‖F² relative to max|Gᵢⱼ| (finite for every finite Gram), as gram_prelude on the CPU.
  double scaled_frobenius_sq = 0.0;
  if (!bad && !zero) {
    const double inv = 1.0 / max_abs;
    for (int64_t idx = tid; idx < nn; idx += kBlockThreads) {
      const int64_t i = idx % n, j = idx / n;
      if (i < j) continue;
      const double v = static_cast<double>(job.gram[idx]) * inv;
      scaled_frobenius_sq += (i == j ? 1.0 : 2.0) * v * v;
    }
  }
  scaled_frobenius_sq = block_reduce(scaled_frobenius_sq, SumOp{}, scratch);

  // Full symmetric float64 copy for the solver; the zero matrix stands in for a flagged Gram so
  // that no solver iterates on NaN (its record is decided by the prelude alone).
  for (int64_t idx = tid; idx < nn; idx += kBlockThreads) {
    const int64_t i = idx % n, j = idx / n;
    if (i < j) continue;
    const double v = (bad || zero) ? 0.0 : static_cast<double>(job.gram[idx]);
    job.a[i + j * n] = v;
    job.a[j + i * n] = v;
  }
  if (tid == 0) {
    const double inv = (bad || zero) ? 0.0 : 1.0 / max_abs;
    job.prelude[0] = bad ? NAN : (zero ? 0.0 : trace);
    job.prelude[1] = (bad || zero) ? NAN : (trace * inv) * (trace * inv) / scaled_frobenius_sq;
    job.prelude[2] = static_cast<double>(bad ? kFlagNonFinite : (zero ? kFlagZero : 0u));
  }
}

// Two-sided cyclic Jacobi with the round-robin (tournament) ordering: in each of the m − 1 rounds
// of a sweep (m = n rounded up to even), m/2 disjoint index pairs are rotated at once. Their
// rotations commute, so the round is A ← JᵀAJ with J orthogonal: first all row updates, then all
// column updates, each element owned by exactly one thread.
__global__ void __launch_bounds__(kBlockThreads) jacobi_kernel(const __grid_constant__ BatchArgs args,
                                                                int max_sweeps) {
  const JobPointers& job = args.job[blockIdx.x];
  const int n = job.n;
  const int tid = static_cast<int>(threadIdx.x);
  __shared__ double a[kJacobiMaxDim][kJacobiMaxDim + 1];  // +1: column walks hit distinct banks
  __shared__ double rot_c[kMaxPairs], rot_s[kMaxPairs];
  __shared__ int rot_p[kMaxPairs], rot_q[kMaxPairs];
  __shared__ double scratch[kWarps];

  for (int idx = tid; idx < n * n; idx += kBlockThreads) a[idx % n][idx / n] = job.a[idx];
  __syncthreads();

  const int m = n + (n & 1);
  const int pairs = m / 2;
  bool converged = false;
  for (int sweep = 0;; ++sweep) {
    double off = 0.0, total = 0.0;
    for (int idx = tid; idx < n * n; idx += kBlockThreads) {
      const int i = idx % n, j = idx / n;
      const double v = a[i][j] * a[i][j];
      total += v;
      if (i != j) off += v;
    }
    off = block_reduce(off, SumOp{}, scratch);
    total = block_reduce(total, SumOp{}, scratch);
    if (off <= kJacobiTol * kJacobiTol * total) {  // also true for the zero matrix and n = 1
      converged = true;
      break;
    }
    if (sweep == max_sweeps || !isfinite(total)) break;

    for (int round = 0; round < m - 1; ++round) {
      if (tid < pairs) {
        int p, q;
        if (tid == 0) {
          p = round;
          q = m - 1;
        } else {
          p = (round + tid) % (m - 1);
          q = (round - tid + (m - 1)) % (m - 1);
        }
        if (p > q) {
          const int t = p;
          p = q;
          q = t;
        }
        double c = 1.0, s = 0.0;
        if (q < n && a[p][q] != 0.0) {  // q = n is the padding index of odd n
          const double apq = a[p][q];
          const double tau = (a[q][q] - a[p][p]) / (2.0 * apq);
          // t = tan θ, the smaller root of t² + 2τt − 1 = 0 (|θ| ≤ π/4); τ² overflowing gives t = 0.
          const double t = (tau >= 0.0 ? 1.0 : -1.0) / (fabs(tau) + sqrt(1.0 + tau * tau));
          c = 1.0 / sqrt(1.0 + t * t);
          s = t * c;
        }
        rot_p[tid] = p;
        rot_q[tid] = q;
        rot_c[tid] = c;
        rot_s[tid] = s;
      }
      __syncthreads();
      for (int idx = tid; idx < pairs * n; idx += kBlockThreads) {  // rows p, q ← Jᵀ·A
        const int k = idx / n, j = idx % n;
        const double s = rot_s[k];
        if (s == 0.0) continue;
        const double c = rot_c[k];
        const int p = rot_p[k], q = rot_q[k];
        const double apj = a[p][j], aqj = a[q][j];
        a[p][j] = c * apj - s * aqj;
        a[q][j] = s * apj + c * aqj;
      }
      __syncthreads();
      for (int idx = tid; idx < pairs * n; idx += kBlockThreads) {  // columns p, q ← A·J
        const int k = idx / n, i = idx % n;
        const double s = rot_s[k];
        if (s == 0.0) continue;
        const double c = rot_c[k];
        const int p = rot_p[k], q = rot_q[k];
        const double aip = a[i][p], aiq = a[i][q];
        a[i][p] = c * aip - s * aiq;
        a[i][q] = s * aip + c * aiq;
      }
      __syncthreads();
      if (tid < pairs && rot_s[tid] != 0.0) {  // annihilated exactly, not just to round-off
        a[rot_p[tid]][rot_q[tid]] = 0.0;
        a[rot_q[tid]][rot_p[tid]] = 0.0;
      }
      __syncthreads();
    }
  }

  // Ascending eigenvalues: each diagonal element's rank (ties broken by index) is its slot.
  for (int i = tid; i < n; i += kBlockThreads) {
    const double d = a[i][i];
    int rank = 0;
    for (int j = 0; j < n; ++j) {
      const double e = a[j][j];
      rank += (e < d || (e == d && j < i)) ? 1 : 0;
    }
    job.w[rank] = d;
  }
  if (tid == 0) *job.info = converged ? 0 : 1;
}

}  // namespace

void launch_prepare(const BatchArgs& args, cudaStream_t stream) {
  if (args.count == 0) return;
  prepare_kernel<<<args.count, kBlockThreads, 0, stream>>>(args);
  NDT_CHECK_LAUNCH();
}

void launch_jacobi(const BatchArgs& args, int max_sweeps, cudaStream_t stream) {
  if (args.count == 0) return;
  jacobi_kernel<<<args.count, kBlockThreads, 0, stream>>>(args, max_sweeps);
  NDT_CHECK_LAUNCH();
}

}  // namespace ndt::cuda::detail
