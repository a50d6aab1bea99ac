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

// Crossover own/LAPACK measured with benchmarks/test_gram_eigenvalues.py (see benchmarks/NOTES.md).
constexpr int64_t kOwnSolverMaxDim = 96;

bool all_finite(const double* a, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(a[i])) return false;
  return true;
}

// Reduces the symmetric n × n matrix `a` (row-major; only the lower triangle is read; destroyed)
// to tridiagonal form T = Qᵀ A Q: diagonal `d` (n), sub-diagonal `e` (n, e[n-1] = 0).
// `work` holds 2n doubles.
//
// Lower triangle only: half the flops of full storage, and every inner loop still runs along a
// contiguous row (the symmetric product takes each row once as a dot and once as an axpy).
NDT_MULTIVERSION void householder_tridiagonalize(double* a, int64_t n, double* d, double* e, double* work) {
  double* v = work;
  double* p = work + n;
  for (int64_t k = 0; k + 2 < n; ++k) {
    const int64_t m = n - k - 1;                      // size of the trailing block
    const double* x = a + (k + 1) * n + k;            // column k below the diagonal, stride n
    d[k] = a[k * n + k];

    double scale = 0.0;
    for (int64_t i = 0; i < m; ++i) scale = std::max(scale, std::fabs(x[i * n]));
    double tail_sq = 0.0;                             // ‖x[1:]‖² in units of `scale`
    if (scale > 0.0)
      for (int64_t i = 1; i < m; ++i) tail_sq += (x[i * n] / scale) * (x[i * n] / scale);
    if (scale == 0.0 || tail_sq == 0.0) {             // already tridiagonal in this column
      e[k] = x[0];
      continue;
    }
    const double alpha = x[0] / scale;
    const double norm = std::sqrt(alpha * alpha + tail_sq);
    const double beta = alpha >= 0.0 ? -norm : norm;  // H x = beta·scale·e₁; sign avoids cancellation
    const double tau = (beta - alpha) / beta;
    const double inv_v0 = 1.0 / (alpha - beta);
    v[0] = 1.0;
    for (int64_t i = 1; i < m; ++i) v[i] = (x[i * n] / scale) * inv_v0;
    e[k] = beta * scale;

    // Trailing block B ← H B H with H = I − τ v vᵀ:  p = τ B v,  w = p − (τ/2)(pᵀv) v,
    // B −= v wᵀ + w vᵀ  (lower triangle).
    double* b = a + (k + 1) * n + (k + 1);
    std::fill(p, p + m, 0.0);
    for (int64_t i = 0; i < m; ++i) {
      const double* bi = b + i * n;
      const double vi = v[i];
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < i; ++j) {
        dot += bi[j] * v[j];
        p[j] += bi[j] * vi;
      }
      p[i] += dot + bi[i] * vi;
    }
    double pv = 0.0;
    for (int64_t i = 0; i < m; ++i) {
      p[i] *= tau;
      pv += p[i] * v[i];
    }
    const double half = 0.5 * tau * pv;
    for (int64_t i = 0; i < m; ++i) p[i] -= half * v[i];  // p is now w
    for (int64_t i = 0; i < m; ++i) {
      double* bi = b + i * n;
      const double vi = v[i], wi = p[i];
#pragma omp simd
      for (int64_t j = 0; j <= i; ++j) bi[j] -= vi * p[j] + wi * v[j];
    }
  }
  if (n >= 2) {
    d[n - 2] = a[(n - 2) * n + (n - 2)];
    e[n - 2] = a[(n - 1) * n + (n - 2)];
  }
  d[n - 1] = a[(n - 1) * n + (n - 1)];
  e[n - 1] = 0.0;
}

// Eigenvalues of the symmetric tridiagonal matrix (d, e): the implicit QL iteration with a
// Wilkinson-type shift in its square-root-free form (Pal, Walker & Kahan; Reinsch's tqlrat), which
// works on e² and needs no sqrt in the rotation loop. That loop is a chain of dependent divisions
// (~20 ns per rotation here, ~2.2 sweeps per eigenvalue; see benchmarks/NOTES.md), so it, not the
// O(n³) reduction, dominates up to n ≈ 128. d is overwritten with the
// eigenvalues (unsorted), e is destroyed. Returns false after 30·n sweeps without convergence.
NDT_MULTIVERSION bool tridiagonal_ql_eigenvalues(double* d, double* e, int64_t n) {
  constexpr double kEps = std::numeric_limits<double>::epsilon();
  constexpr double kEps2 = kEps * kEps;
  // Scale to max |entry| = 1: squares can neither overflow nor (harmfully) underflow, and the
  // absolute deflation floor below is eps·‖T‖.
  double scale = 0.0;
  for (int64_t i = 0; i < n; ++i) scale = std::max({scale, std::fabs(d[i]), std::fabs(e[i])});
  if (scale == 0.0) return true;
  const double inv_scale = 1.0 / scale;
  double* e2 = e;
  for (int64_t i = 0; i < n; ++i) {
    d[i] *= inv_scale;
    const double ei = e[i] * inv_scale;
    e2[i] = ei * ei;
  }
  e2[n - 1] = 0.0;

  int64_t sweeps_left = 30 * n;
  int64_t l = 0;
  while (l < n) {
    // Deflate at the first negligible e[m], m ≥ l: |e| ≤ eps·(|d_m| + |d_m+1|), or ≤ eps·‖T‖.
    int64_t m = l;
    for (; m + 1 < n; ++m) {
      const double size = std::fabs(d[m]) + std::fabs(d[m + 1]);
      if (e2[m] <= kEps2 * std::max(size * size, 1.0)) break;
    }
    if (m + 1 < n) e2[m] = 0.0;
    if (m == l) {  // 1 × 1 block: converged
      ++l;
      continue;
    }
    if (m == l + 1) {  // 2 × 2 block: closed form, the smaller root from the product to avoid cancellation
      const double a = d[l], c = d[l + 1], b2 = e2[l];
      const double mean = 0.5 * (a + c);
      const double radius = std::sqrt(0.25 * (a - c) * (a - c) + b2);
      const double big = mean + std::copysign(radius, mean);
      d[l] = big;
      d[l + 1] = big != 0.0 ? (a * c - b2) / big : 0.0;
      e2[l] = 0.0;
      l += 2;
      continue;
    }
    if (sweeps_left-- == 0) return false;

    // Shift: the eigenvalue of the leading 2 × 2 block closer to d[l].
    const double rte = std::sqrt(e2[l]);
    double sigma = (d[l + 1] - d[l]) / (2.0 * rte);
    const double r0 = std::sqrt(sigma * sigma + 1.0);
    sigma = d[l] - rte / (sigma + std::copysign(r0, sigma));

    // Chase the bulge from m up to l.
    double c = 1.0, s = 0.0;
    double gamma = d[m] - sigma;
    double p = gamma * gamma;
    for (int64_t i = m - 1; i >= l; --i) {
      const double bb = e2[i];
      const double r = p + bb;  // > 0: e2[i] > 0 inside an unreduced block
      if (i != m - 1) e2[i + 1] = s * r;
      const double old_c = c;
      c = p / r;
      s = bb / r;
      const double old_gamma = gamma;
      const double alpha = d[i];
      gamma = c * (alpha - sigma) - s * old_gamma;
      d[i + 1] = old_gamma + (alpha - gamma);
      p = c != 0.0 ? (gamma * gamma) / c : old_c * bb;
    }
    e2[l] = s * p;
    d[l] = sigma + gamma;
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
  const double nd = static_cast<double>(n);
  const BlasThreadScope threads(4.0 / 3.0 * nd * nd * nd);
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
  // Iterate on A / max|Aᵢⱼ| so that ‖Av‖² can neither overflow nor underflow.
  double scale = 0.0;
  for (int64_t i = 0; i < n * n; ++i) scale = std::max(scale, std::fabs(a[i]));
  if (!std::isfinite(scale)) {
    *lambda_max = std::numeric_limits<double>::quiet_NaN();
    return false;
  }
  if (scale == 0.0) {
    *lambda_max = 0.0;
    return true;
  }
  const double inv_scale = 1.0 / scale;
  for (int64_t it = 0; it < max_iter; ++it) {
    double rayleigh = 0.0, av_sq = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double* ai = a + i * n;
      double s = 0.0;
      for (int64_t j = 0; j < n; ++j) s += ai[j] * v[static_cast<size_t>(j)];
      s *= inv_scale;
      av[static_cast<size_t>(i)] = s;
      rayleigh += s * v[static_cast<size_t>(i)];
      av_sq += s * s;
    }
    if (!(av_sq > 0.0)) {  // A v = 0 (v in the null space) or NaN: let the full solver decide
      *lambda_max = std::numeric_limits<double>::quiet_NaN();
      return false;
    }
    // ‖Av − ρv‖² = ‖Av‖² − ρ² for unit v: below tol the Rayleigh quotient is within tol·ρ of an
    // eigenvalue. Power iteration converges to the largest one unless the start vector has no
    // component along it; for the non-negative Grams of ReLU data the top eigenvector is
    // non-negative (Perron), so the positive start vector always has one.
    const double residual_sq = std::max(av_sq - rayleigh * rayleigh, 0.0);
    *lambda_max = rayleigh * scale;
    if (residual_sq <= rel_tol * rel_tol * rayleigh * rayleigh) return true;
    const double inv = 1.0 / std::sqrt(av_sq);
    for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = av[static_cast<size_t>(i)] * inv;
  }
  return false;
}

}  // namespace ndt
