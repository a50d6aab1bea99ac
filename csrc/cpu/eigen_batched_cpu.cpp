// Eigenvalues of many small symmetric matrices at once (ndt/eigen.h: symmetric_eigenvalues_batched).
//
// One matrix at a time, a 64 × 64 Householder reduction is too small to keep the FMA units busy
// and the QL phase is a chain of dependent divisions (benchmarks/NOTES.md). Independent matrices
// side by side in the SIMD lanes make every instruction serve kLanes of them: the reduction runs
// on groups in the compact layout (eigen_lanes.h), the QL chases one per lane.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <vector>

#include "eigen_lanes.h"
#include "ndt/check.h"
#include "ndt/eigen.h"
#include "ndt/linalg_registry.h"

namespace ndt {
namespace {

// Sizes at which `automatic` takes the lane kernels rather than LAPACK dsyevd (measured on the
// 2-core EPYC VM, benchmarks/NOTES.md): up to own_solver_max_dim() always; up to kBatchedMaxDim
// when at least two such matrices share the call (four 192 × 192 take 2.7 ms in lanes, 10 ms in
// dsyevd; one alone 2.8 ms against 1.4 ms, as it fills one lane of four).
constexpr int64_t kBatchedMaxDim = 192;
constexpr int kUnset = -1;

std::atomic<int> g_lane_kernel{kUnset};

LaneKernel kernel_from_environment() {
  const char* env = std::getenv("NDT_LANE_KERNEL");
  if (env == nullptr) return LaneKernel::automatic;
  if (std::strcmp(env, "portable") == 0) return LaneKernel::portable;
  if (std::strcmp(env, "avx2") == 0 && lane_kernel_available(LaneKernel::avx2)) return LaneKernel::avx2;
  return LaneKernel::automatic;  // "auto", unknown values, or avx2 where it cannot run
}

const detail::LaneKernels& kernels_in_use() {
  return lane_kernel() == LaneKernel::avx2 ? *detail::avx2_lane_kernels() : detail::portable_lane_kernels();
}

bool all_finite(const double* a, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(a[i])) return false;
  return true;
}

// Tridiagonalises the matrices `members` (at most kLanes, sorted by size, largest first) as one
// compact group; their diagonals go to w[k], their sub-diagonals to e[k] (e[k][n−1] = 0).
void reduce_group(const detail::LaneKernels& kernels, const double* const* a, const int64_t* n, double* const* w,
                  const std::vector<double*>& e, const int64_t* members, int64_t lanes) {
  constexpr int64_t W = detail::kLanes;
  const int64_t dim = n[members[0]];
  std::vector<double> packed(static_cast<size_t>(dim * (dim + 1) / 2 * W), 0.0);  // zero padding
  std::vector<double> d(static_cast<size_t>(dim * W)), sub(static_cast<size_t>(dim * W)),
      work(static_cast<size_t>(4 * dim * W));
  for (int64_t lane = 0; lane < lanes; ++lane) {
    const int64_t k = members[lane], nk = n[k];
    for (int64_t i = 0; i < nk; ++i)
      for (int64_t j = 0; j <= i; ++j) packed[static_cast<size_t>((i * (i + 1) / 2 + j) * W + lane)] = a[k][i * nk + j];
  }
  kernels.reduce(packed.data(), dim, d.data(), sub.data(), work.data());
  for (int64_t lane = 0; lane < lanes; ++lane) {
    const int64_t k = members[lane], nk = n[k];
    for (int64_t i = 0; i < nk; ++i) {
      w[k][i] = d[static_cast<size_t>(i * W + lane)];
      e[static_cast<size_t>(k)][i] = sub[static_cast<size_t>(i * W + lane)];
    }
    e[static_cast<size_t>(k)][nk - 1] = 0.0;
  }
}

}  // namespace

bool lane_kernel_available(LaneKernel kernel) {
  return kernel != LaneKernel::avx2 || detail::avx2_lane_kernels() != nullptr;
}

void set_lane_kernel(LaneKernel kernel) {
  NDT_CHECK_ARG(kernel == LaneKernel::automatic || kernel == LaneKernel::portable || kernel == LaneKernel::avx2,
                "unknown lane kernel " << static_cast<int>(kernel));
  NDT_CHECK_ARG(lane_kernel_available(kernel), "the AVX2 + FMA kernel cannot run on this CPU or build");
  g_lane_kernel.store(static_cast<int>(kernel));
}

LaneKernel lane_kernel() {
  int chosen = g_lane_kernel.load();
  if (chosen == kUnset) {
    int expected = kUnset;
    g_lane_kernel.compare_exchange_strong(expected, static_cast<int>(kernel_from_environment()));
    chosen = g_lane_kernel.load();
  }
  const auto kernel = static_cast<LaneKernel>(chosen);
  if (kernel != LaneKernel::automatic) return kernel;
  return lane_kernel_available(LaneKernel::avx2) ? LaneKernel::avx2 : LaneKernel::portable;
}

int64_t batched_solver_max_dim() { return kBatchedMaxDim; }

void symmetric_eigenvalues_batched(const double* const* a, const int64_t* n, double* const* w, int64_t count,
                                   bool* ok, EigenSolver solver) {
  NDT_CHECK_ARG(solver == EigenSolver::automatic || solver == EigenSolver::tridiagonal_ql ||
                    solver == EigenSolver::lapack,
                "symmetric_eigenvalues: unknown solver " << static_cast<int>(solver));
  NDT_CHECK_ARG(count >= 0, "symmetric_eigenvalues: negative count " << count);
  for (int64_t k = 0; k < count; ++k) NDT_CHECK_ARG(n[k] >= 1, "symmetric_eigenvalues: n must be >= 1, got " << n[k]);
  const bool have_lapack = linalg().dsyevd != nullptr;
  const int64_t alone_max_dim = own_solver_max_dim();
  int64_t mid_sized = 0;  // matrices that take the lane kernels only in company
  for (int64_t k = 0; k < count; ++k) {
    ok[k] = all_finite(a[k], n[k] * n[k]);
    if (ok[k] && n[k] > alone_max_dim && n[k] <= kBatchedMaxDim) ++mid_sized;
  }
  const int64_t own_max_dim = mid_sized >= 2 ? kBatchedMaxDim : alone_max_dim;
  std::vector<int64_t> own;  // matrices for the lane kernels
  for (int64_t k = 0; k < count; ++k) {
    if (!ok[k]) continue;
    if (n[k] == 1) {
      w[k][0] = a[k][0];
      continue;
    }
    const bool lapack = solver == EigenSolver::lapack ||
                        (solver == EigenSolver::automatic && n[k] > own_max_dim && have_lapack);
    if (lapack) {  // dsyevd destroys its input
      std::vector<double> copy(a[k], a[k] + n[k] * n[k]);
      ok[k] = symmetric_eigenvalues(copy.data(), n[k], w[k], EigenSolver::lapack);
      continue;
    }
    own.push_back(k);
  }
  // Largest first, so each group pads its smaller members up to a close size.
  std::stable_sort(own.begin(), own.end(), [&](int64_t x, int64_t y) { return n[x] > n[y]; });
  const detail::LaneKernels& kernels = kernels_in_use();
  int64_t own_total = 0;
  for (const int64_t k : own) own_total += n[k];
  std::vector<double> off_diagonals(static_cast<size_t>(own_total));  // one buffer for all
  std::vector<double*> e(static_cast<size_t>(count), nullptr);
  double* next_e = off_diagonals.data();
  for (const int64_t k : own) {
    e[static_cast<size_t>(k)] = next_e;
    next_e += n[k];
  }
  for (size_t first = 0; first < own.size(); first += detail::kLanes) {
    const auto lanes = static_cast<int64_t>(std::min(own.size() - first, static_cast<size_t>(detail::kLanes)));
    reduce_group(kernels, a, n, w, e, own.data() + first, lanes);
  }
  std::vector<detail::QlChase> chases(own.size());
  std::vector<detail::QlChase*> pointers(own.size());
  for (size_t j = 0; j < own.size(); ++j) {
    const int64_t k = own[j];
    detail::ql_begin(chases[j], w[k], e[static_cast<size_t>(k)], n[k]);
    pointers[j] = &chases[j];
  }
  if (!own.empty()) kernels.ql(pointers.data(), static_cast<int64_t>(own.size()), n[own.front()]);
  for (size_t j = 0; j < own.size(); ++j) {
    const detail::QlChase& q = chases[j];
    ok[own[j]] = !q.failed;
    for (int64_t i = 0; i < q.n; ++i) q.d[i] *= q.scale;
  }
  for (int64_t k = 0; k < count; ++k) {
    if (ok[k]) std::sort(w[k], w[k] + n[k], std::greater<double>());
    else std::fill(w[k], w[k] + n[k], std::numeric_limits<double>::quiet_NaN());
  }
}

}  // namespace ndt
