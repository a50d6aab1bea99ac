// Symmetric eigenvalues on the CPU.
//
// Own solver (small n, where LAPACK's workspace queries and blocking cost more than the work):
// Householder reduction to tridiagonal form, then the implicit QL iteration with Wilkinson shifts
// on the tridiagonal matrix, eigenvalues only. Large n: LAPACK dsyevd (blocked, BLAS-3).
#include <algorithm>
#include <climits>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "ndt/check.h"
#include "ndt/eigen.h"
#include "ndt/linalg_registry.h"
#include "simd.h"

namespace ndt {
namespace {

// Crossover measured with benchmarks/bench_eigen.py (see benchmarks/NOTES.md).
constexpr int64_t kOwnSolverMaxDim = 96;

bool all_finite(const double* a, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(a[i])) return false;
  return true;
}

// Reduces the symmetric n × n matrix `a` (row-major, full storage; destroyed) to tridiagonal
// form T = Qᵀ A Q: diagonal `d` (n), sub-diagonal `e` (n, e[n-1] = 0). `work` holds 2n doubles.
//
// Full storage (both triangles) costs twice the flops of a packed triangle but turns every inner
// loop into a contiguous row operation that the compiler vectorises; for n ≤ ~100 that wins.
NDT_MULTIVERSION void householder_tridiagonalize(double* a, int64_t n, double* d, double* e, double* work) {
  double* v = work;
  double* p = work + n;
  for (int64_t k = 0; k + 2 < n; ++k) {
    const int64_t m = n - k - 1;                 // size of the trailing block
    double* x = a + k * n + (k + 1);             // row k right of the diagonal == column k below it
    d[k] = a[k * n + k];

    double scale = 0.0;
    for (int64_t i = 0; i < m; ++i) scale = std::max(scale, std::fabs(x[i]));
    double tail_sq = 0.0;                        // ‖x[1:]‖² in units of `scale`
    if (scale > 0.0)
      for (int64_t i = 1; i < m; ++i) tail_sq += (x[i] / scale) * (x[i] / scale);
    if (scale == 0.0 || tail_sq == 0.0) {        // already tridiagonal in this column
      e[k] = x[0];
      continue;
    }
    const double alpha = x[0] / scale;
    const double norm = std::sqrt(alpha * alpha + tail_sq);
    const double beta = alpha >= 0.0 ? -norm : norm;   // H x = beta·scale·e₁, sign avoids cancellation
    const double tau = (beta - alpha) / beta;
    const double inv_v0 = 1.0 / (alpha - beta);
    v[0] = 1.0;
    for (int64_t i = 1; i < m; ++i) v[i] = (x[i] / scale) * inv_v0;
    e[k] = beta * scale;

    // Trailing block B ← H B H with H = I − τ v vᵀ:  p = τ B v,  w = p − (τ/2)(pᵀv) v,
    // B −= v wᵀ + w vᵀ.
    double* b = a + (k + 1) * n + (k + 1);
    double pv = 0.0;
    for (int64_t i = 0; i < m; ++i) {
      const double* bi = b + i * n;
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t j = 0;
      for (; j + 4 <= m; j += 4) {
        s0 += bi[j] * v[j];
        s1 += bi[j + 1] * v[j + 1];
        s2 += bi[j + 2] * v[j + 2];
        s3 += bi[j + 3] * v[j + 3];
      }
      for (; j < m; ++j) s0 += bi[j] * v[j];
      p[i] = tau * ((s0 + s1) + (s2 + s3));
      pv += p[i] * v[i];
    }
    const double half = 0.5 * tau * pv;
    for (int64_t i = 0; i < m; ++i) p[i] -= half * v[i];  // p is now w
    for (int64_t i = 0; i < m; ++i) {
      double* bi = b + i * n;
      const double vi = v[i], wi = p[i];
      for (int64_t j = 0; j < m; ++j) bi[j] -= vi * p[j] + wi * v[j];
    }
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + (n - 2)];
    e[n - 2] = a[(n - 2) * n + (n - 1)];
  }
  d[n - 1] = a[(n - 1) * n + (n - 1)];
  e[n - 1] = 0.0;
}

// Eigenvalues of the symmetric tridiagonal matrix (d, e) by the implicit QL method with
// Wilkinson's shift; d is overwritten with them (unsorted), e is destroyed.
// Returns false if some eigenvalue needed more than kMaxSweeps sweeps.
bool tridiagonal_ql_eigenvalues(double* d, double* e, int64_t n) {
  constexpr int kMaxSweeps = 60;
  constexpr double kEps = std::numeric_limits<double>::epsilon();
  // Scale to max |entry| = 1 so that sqrt(f² + g²) cannot overflow: std::hypot is several times
  // slower and the rotations below are the QL phase's inner loop.
  double scale = 0.0;
  for (int64_t i = 0; i < n; ++i) scale = std::max({scale, std::fabs(d[i]), std::fabs(e[i])});
  if (scale == 0.0) return true;
  const double inv_scale = 1.0 / scale;
  for (int64_t i = 0; i < n; ++i) {
    d[i] *= inv_scale;
    e[i] *= inv_scale;
  }
  for (int64_t l = 0; l < n; ++l) {
    for (int sweep = 0;; ++sweep) {
      // Split off a block at the first negligible sub-diagonal element at or after l.
      int64_t m = l;
      for (; m + 1 < n; ++m) {
        const double size = std::fabs(d[m]) + std::fabs(d[m + 1]);
        if (std::fabs(e[m]) <= kEps * size) break;
      }
      if (m == l) break;  // d[l] has converged
      if (sweep == kMaxSweeps) return false;

      // Wilkinson shift from the leading 2 × 2 block of the unreduced part.
      double g = (d[l + 1] - d[l]) / (2.0 * e[l]);
      double r = std::sqrt(g * g + 1.0);
      g = d[m] - d[l] + e[l] / (g + std::copysign(r, g));
      double s = 1.0, c = 1.0, p = 0.0;
      bool underflow = false;
      for (int64_t i = m - 1; i >= l; --i) {
        // One Givens rotation chasing the bulge from the bottom (m) up to l.
        const double f = s * e[i];
        const double b = c * e[i];
        r = std::sqrt(f * f + g * g);
        e[i + 1] = r;
        if (r == 0.0) {  // the rotation underflowed: deflate and restart from l
          d[i + 1] -= p;
          e[m] = 0.0;
          underflow = true;
          break;
        }
        s = f / r;
        c = g / r;
        g = d[i + 1] - p;
        r = (d[i] - g) * s + 2.0 * c * b;
        p = s * r;
        d[i + 1] = g + p;
        g = c * r - b;
      }
      if (underflow) continue;
      d[l] -= p;
      e[l] = g;
      e[m] = 0.0;
    }
  }
  for (int64_t i = 0; i < n; ++i) d[i] *= scale;
  return true;
}

bool own_solver(double* a, int64_t n, double* w) {
  std::vector<double> scratch(static_cast<size_t>(3 * n));
  double* e = scratch.data();
  householder_tridiagonalize(a, n, w, e, scratch.data() + n);
  return tridiagonal_ql_eigenvalues(w, e, n);
}

bool lapack_solver(double* a, int64_t n, double* w) {
  const dsyevd_fn dsyevd = linalg().dsyevd;
  NDT_CHECK_ARG(dsyevd != nullptr, "symmetric_eigenvalues: LAPACK dsyevd is not registered (is SciPy installed?)");
  NDT_CHECK_ARG(n <= INT_MAX, "symmetric_eigenvalues: n too large for 32-bit LAPACK");
  char jobz = 'N', uplo = 'U';  // column-major upper == row-major lower; both are filled anyway
  int in = static_cast<int>(n), lda = in, info = 0;
  int lwork = -1, liwork = -1, iwork_query = 0;
  double work_query = 0.0;
  dsyevd(&jobz, &uplo, &in, a, &lda, w, &work_query, &lwork, &iwork_query, &liwork, &info);
  if (info != 0) return false;
  lwork = std::max(static_cast<int>(work_query), 2 * in + 1);
  liwork = std::max(iwork_query, 1);
  std::vector<double> work(static_cast<size_t>(lwork));
  std::vector<int> iwork(static_cast<size_t>(liwork));
  dsyevd(&jobz, &uplo, &in, a, &lda, w, work.data(), &lwork, iwork.data(), &liwork, &info);
  return info == 0;
}

}  // namespace

int64_t own_solver_max_dim() { return kOwnSolverMaxDim; }

bool symmetric_eigenvalues(double* a, int64_t n, double* w, EigenSolver solver) {
  NDT_CHECK_ARG(n >= 1, "symmetric_eigenvalues: n must be >= 1, got " << n);
  if (!all_finite(a, n * n)) {
    std::fill(w, w + n, std::numeric_limits<double>::quiet_NaN());
    return false;
  }
  if (solver == EigenSolver::automatic)
    solver = (n <= kOwnSolverMaxDim || linalg().dsyevd == nullptr) ? EigenSolver::tridiagonal_ql
                                                                   : EigenSolver::lapack;
  bool ok;
  if (n == 1) {
    w[0] = a[0];
    ok = true;
  } else if (solver == EigenSolver::tridiagonal_ql) {
    ok = own_solver(a, n, w);
  } else if (solver == EigenSolver::lapack) {
    ok = lapack_solver(a, n, w);
  } else {
    NDT_CHECK_ARG(false, "symmetric_eigenvalues: unknown solver " << static_cast<int>(solver));
  }
  if (!ok) {
    std::fill(w, w + n, std::numeric_limits<double>::quiet_NaN());
    return false;
  }
  std::sort(w, w + n, std::greater<double>());
  return true;
}

bool largest_eigenvalue_psd(const double* a, int64_t n, double* lambda_max, double rel_tol, int64_t max_iter) {
  NDT_CHECK_ARG(n >= 1, "largest_eigenvalue_psd: n must be >= 1");
  // Start from a fixed vector with no special alignment to the eigenvectors (a deterministic
  // pseudo-random sequence), so results are reproducible run to run.
  std::vector<double> v(static_cast<size_t>(n)), av(static_cast<size_t>(n));
  uint64_t state = 0x9E3779B97F4A7C15ull;
  double norm_sq = 0.0;
  for (auto& vi : v) {
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    vi = 0.5 + static_cast<double>(state >> 11) * 0x1.0p-53;  // in [0.5, 1.5): positive
    norm_sq += vi * vi;
  }
  for (auto& vi : v) vi /= std::sqrt(norm_sq);
  for (int64_t it = 0; it < max_iter; ++it) {
    double rayleigh = 0.0, av_sq = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double* ai = a + i * n;
      double s = 0.0;
      for (int64_t j = 0; j < n; ++j) s += ai[j] * v[static_cast<size_t>(j)];
      av[static_cast<size_t>(i)] = s;
      rayleigh += s * v[static_cast<size_t>(i)];
      av_sq += s * s;
    }
    if (!(av_sq > 0.0)) {  // A v = 0 (zero matrix) or NaN
      *lambda_max = av_sq == 0.0 ? 0.0 : std::numeric_limits<double>::quiet_NaN();
      return av_sq == 0.0;
    }
    // ‖Av − ρv‖² = ‖Av‖² − ρ² for unit v: below tol the Rayleigh quotient is within tol·ρ of an
    // eigenvalue. Power iteration converges to the largest one unless the start vector has no
    // component along it; for the non-negative Grams of ReLU data the top eigenvector is
    // non-negative (Perron), so the positive start vector always has one.
    const double residual_sq = std::max(av_sq - rayleigh * rayleigh, 0.0);
    *lambda_max = rayleigh;
    if (residual_sq <= rel_tol * rel_tol * rayleigh * rayleigh) return true;
    const double inv = 1.0 / std::sqrt(av_sq);
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = av[static_cast<size_t>(i)] * inv;
  }
  return false;
}

}  // namespace ndt
