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
#include <memory>
#include <vector>

#include "ndt/check.h"
#include "ndt/eigen.h"
#include "ndt/linalg_registry.h"
#include "simd.h"
#include "tridiagonal_ql.h"

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

// Eigenvalues of symmetric tridiagonal matrices (d, e): the implicit QL iteration with a
// Wilkinson-type shift in its square-root-free form (Pal, Walker & Kahan; Reinsch's tqlrat), which
// works on e² and needs no sqrt in the rotation loop. That loop is a chain of dependent divisions
// (~20 ns per rotation here, ~2 sweeps per eigenvalue; see benchmarks/NOTES.md), so it, not the
// O(n³) reduction, dominates up to n ≈ 128 — and two independent matrices rotated in lockstep
// fill each other's latency. Hence the iteration is written as a resumable "chase" per matrix
// (tridiagonal_ql.h).
using detail::QlChase;
using detail::ql_begin;
using detail::ql_next_sweep;


// Rotates K sweeping chases in lockstep until (at least) one of them ends its sweep. The state
// lives in locals, i.e. registers, and the K rotation chains are independent, so the CPU overlaps
// them.
template <int K>
void ql_rotate_lockstep(QlChase* const* qs) {
  double* d[K];
  double* e2[K];
  int64_t i[K], l[K], m[K];
  double c[K], s[K], gamma[K], p[K], sigma[K];
  for (int k = 0; k < K; ++k) {
    const QlChase& q = *qs[k];
    d[k] = q.d, e2[k] = q.e2, i[k] = q.i, l[k] = q.l, m[k] = q.m;
    c[k] = q.c, s[k] = q.s, gamma[k] = q.gamma, p[k] = q.p, sigma[k] = q.sigma;
  }
  bool running = true;
  while (running) {
    for (int k = 0; k < K; ++k) {
      const double bb = e2[k][i[k]];
      const double r = p[k] + bb;  // > 0: e2 > 0 inside an unreduced block
      if (i[k] != m[k] - 1) e2[k][i[k] + 1] = s[k] * r;
      const double old_c = c[k];
      c[k] = p[k] / r;
      s[k] = bb / r;
      const double old_gamma = gamma[k];
      const double alpha = d[k][i[k]];
      gamma[k] = c[k] * (alpha - sigma[k]) - s[k] * old_gamma;
      d[k][i[k] + 1] = old_gamma + (alpha - gamma[k]);
      p[k] = c[k] != 0.0 ? (gamma[k] * gamma[k]) / c[k] : old_c * bb;
      if (--i[k] < l[k]) running = false;
    }
  }
  for (int k = 0; k < K; ++k) {
    QlChase& q = *qs[k];
    q.i = i[k], q.c = c[k], q.s = s[k], q.gamma = gamma[k], q.p = p[k];
    if (i[k] < l[k]) detail::ql_finish_sweep(q);
  }
}

// Eigenvalues (unsorted, in d[k]) of `count` tridiagonal matrices (d[k], e[k]) of sizes n[k];
// e is destroyed. ok[k] is false where the iteration did not converge.
void tridiagonal_ql_eigenvalues(double* const* d, double* const* e, const int64_t* n, int64_t count, bool* ok) {
  std::vector<QlChase> chases(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) ql_begin(chases[static_cast<size_t>(k)], d[k], e[k], n[k]);
  std::vector<QlChase*> sweeping;
  for (;;) {
    sweeping.clear();
    for (QlChase& q : chases) {
      if (!q.done && !q.sweeping) ql_next_sweep(q);
      if (q.sweeping) sweeping.push_back(&q);
    }
    if (sweeping.empty()) break;
    size_t k = 0;
    for (; k + 2 <= sweeping.size(); k += 2) ql_rotate_lockstep<2>(&sweeping[k]);
    if (k < sweeping.size()) ql_rotate_lockstep<1>(&sweeping[k]);
  }
  for (int64_t k = 0; k < count; ++k) {
    const QlChase& q = chases[static_cast<size_t>(k)];
    ok[k] = !q.failed;
    for (int64_t j = 0; j < q.n; ++j) q.d[j] *= q.scale;
  }
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

void symmetric_eigenvalues_many(double* const* a, const int64_t* n, double* const* w, int64_t count, bool* ok,
                                EigenSolver solver) {
  NDT_CHECK_ARG(solver == EigenSolver::automatic || solver == EigenSolver::tridiagonal_ql ||
                    solver == EigenSolver::lapack,
                "symmetric_eigenvalues: unknown solver " << static_cast<int>(solver));
  // Matrices for the own solver are reduced one by one, then their QL phases run together.
  std::vector<double*> ql_d, ql_e;
  std::vector<int64_t> ql_n, ql_index;
  std::vector<std::vector<double>> off_diagonals;
  for (int64_t k = 0; k < count; ++k) {
    NDT_CHECK_ARG(n[k] >= 1, "symmetric_eigenvalues: n must be >= 1, got " << n[k]);
    ok[k] = all_finite(a[k], n[k] * n[k]);
    if (!ok[k]) continue;
    if (n[k] == 1) {
      w[k][0] = a[k][0];
      continue;
    }
    EigenSolver use = solver;
    if (use == EigenSolver::automatic)
      use = (n[k] <= kOwnSolverMaxDim || linalg().dsyevd == nullptr) ? EigenSolver::tridiagonal_ql
                                                                     : EigenSolver::lapack;
    if (use == EigenSolver::lapack) {
      ok[k] = lapack_solver(a[k], n[k], w[k]);
      continue;
    }
    std::vector<double> scratch(static_cast<size_t>(3 * n[k]));
    householder_tridiagonalize(a[k], n[k], w[k], scratch.data(), scratch.data() + n[k]);
    scratch.resize(static_cast<size_t>(n[k]));  // keep e, drop the work space
    off_diagonals.push_back(std::move(scratch));
    ql_index.push_back(k);
  }
  for (size_t j = 0; j < ql_index.size(); ++j) {
    ql_d.push_back(w[ql_index[j]]);
    ql_e.push_back(off_diagonals[j].data());
    ql_n.push_back(n[ql_index[j]]);
  }
  const std::unique_ptr<bool[]> converged(new bool[ql_index.size() + 1]);  // vector<bool> has no data()
  tridiagonal_ql_eigenvalues(ql_d.data(), ql_e.data(), ql_n.data(), static_cast<int64_t>(ql_index.size()),
                             converged.get());
  for (size_t j = 0; j < ql_index.size(); ++j) ok[ql_index[j]] = converged[j];
  for (int64_t k = 0; k < count; ++k) {
    if (ok[k]) std::sort(w[k], w[k] + n[k], std::greater<double>());
    else std::fill(w[k], w[k] + n[k], std::numeric_limits<double>::quiet_NaN());
  }
}

bool symmetric_eigenvalues(double* a, int64_t n, double* w, EigenSolver solver) {
  bool ok = false;
  symmetric_eigenvalues_many(&a, &n, &w, 1, &ok, solver);
  return ok;
}

namespace {

// y = A x for the row-major symmetric n × n matrix A (full storage): one contiguous dot per row.
NDT_MULTIVERSION void symmetric_matvec(const double* a, int64_t n, const double* x, double* y) {
  for (int64_t i = 0; i < n; ++i) {
    const double* ai = a + i * n;
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < n; ++j) s += ai[j] * x[j];
    y[i] = s;
  }
}

// Removes from w its components along the rows q₀…q_{k−1} of `basis` (classical Gram-Schmidt:
// all coefficients from the same w, then one update) and returns the coefficient on q_{k−1}.
NDT_MULTIVERSION double orthogonalize(const double* basis, int64_t k, int64_t n, double* w, double* coefficients) {
  for (int64_t i = 0; i < k; ++i) {
    const double* qi = basis + i * n;
    double c = 0.0;
#pragma omp simd reduction(+ : c)
    for (int64_t t = 0; t < n; ++t) c += qi[t] * w[t];
    coefficients[i] = c;
  }
  for (int64_t i = 0; i < k; ++i) {
    const double* qi = basis + i * n;
    const double c = coefficients[i];
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) w[t] -= c * qi[t];
  }
  return coefficients[k - 1];
}

// Largest eigenvalue `theta` of the k × k tridiagonal (alpha, beta) and |last component| of its
// unit eigenvector, the factor of the Lanczos residual ‖A y − θ y‖ = beta_k · |s_k|.
bool top_ritz_pair(const std::vector<double>& alpha, const std::vector<double>& beta, int64_t k, double* theta,
                   double* last_component) {
  std::vector<double> d(alpha.begin(), alpha.begin() + k), e(static_cast<size_t>(k), 0.0);
  std::copy(beta.begin(), beta.begin() + (k - 1), e.begin());
  double* dp = d.data();
  double* ep = e.data();
  bool ok = false;
  tridiagonal_ql_eigenvalues(&dp, &ep, &k, 1, &ok);
  if (!ok) return false;
  *theta = *std::max_element(d.begin(), d.end());
  if (k == 1) {
    *last_component = 1.0;
    return true;
  }
  // Its eigenvector by inverse iteration with a shift just above θ: σI − T is then positive
  // definite, so the tridiagonal LDLᵀ solve needs no pivoting; the gap to the next Ritz value
  // versus (σ − θ) makes two solves from a flat start more than enough.
  double norm_t = 0.0;
  for (int64_t i = 0; i < k; ++i) norm_t = std::max(norm_t, std::fabs(alpha[static_cast<size_t>(i)]) +
                                                                  (i > 0 ? beta[static_cast<size_t>(i - 1)] : 0.0) +
                                                                  (i + 1 < k ? beta[static_cast<size_t>(i)] : 0.0));
  const double sigma = *theta + 1e-10 * std::max(norm_t, std::numeric_limits<double>::min());
  std::vector<double> diag(static_cast<size_t>(k)), x(static_cast<size_t>(k), 1.0);
  for (int sweep = 0; sweep < 2; ++sweep) {
    // Forward elimination of (σI − T) x_new = x, then back substitution.
    diag[0] = sigma - alpha[0];
    for (int64_t i = 1; i < k; ++i) {
      const double l = -beta[static_cast<size_t>(i - 1)] / diag[static_cast<size_t>(i - 1)];
      diag[static_cast<size_t>(i)] = sigma - alpha[static_cast<size_t>(i)] + l * beta[static_cast<size_t>(i - 1)];
      x[static_cast<size_t>(i)] -= l * x[static_cast<size_t>(i - 1)];
    }
    x[static_cast<size_t>(k - 1)] /= diag[static_cast<size_t>(k - 1)];
    for (int64_t i = k - 2; i >= 0; --i)
      x[static_cast<size_t>(i)] = (x[static_cast<size_t>(i)] + beta[static_cast<size_t>(i)] * x[static_cast<size_t>(i + 1)]) /
                                  diag[static_cast<size_t>(i)];
    double norm_sq = 0.0;
    for (double xi : x) norm_sq += xi * xi;
    const double inv = 1.0 / std::sqrt(norm_sq);
    if (!std::isfinite(inv)) return false;
    for (double& xi : x) xi *= inv;
  }
  *last_component = std::fabs(x[static_cast<size_t>(k - 1)]);
  return true;
}

}  // namespace

bool largest_eigenvalue_psd(const double* a, int64_t n, double* lambda_max, double rel_tol, int64_t max_iter) {
  NDT_CHECK_ARG(n >= 1, "largest_eigenvalue_psd: n must be >= 1");
  NDT_CHECK_ARG(max_iter >= 1, "largest_eigenvalue_psd: max_iter must be >= 1");
  *lambda_max = std::numeric_limits<double>::quiet_NaN();
  // Iterate on A / max|Aᵢⱼ| (entries ≤ 1 against unit vectors), so that nothing overflows for
  // Grams with entries near the float64 limit; a non-finite α is refused below all the same.
  if (!all_finite(a, n * n)) return false;  // (std::max would skip a NaN)
  double scale = 0.0;
  for (int64_t i = 0; i < n * n; ++i) scale = std::max(scale, std::fabs(a[i]));
  if (scale == 0.0) {
    *lambda_max = 0.0;
    return true;
  }
  const double inv_scale = 1.0 / scale;
  // Lanczos with full reorthogonalisation. Power iteration needs ~log(ε)/log(λ₂/λ₁) steps — hundreds
  // for the λ₂/λ₁ ≈ 0.9–0.99 of trained weights and of many activation Grams — while Lanczos
  // converges at the rate set by √((λ₁−λ₂)/(λ₂−λₙ)): a few dozen steps here.
  const int64_t steps = std::min(n, max_iter);
  const size_t un = static_cast<size_t>(n);
  std::vector<double> basis(static_cast<size_t>(steps) * un), w(un), scaled_q(un),
      coefficients(static_cast<size_t>(steps));
  std::vector<double> alpha, beta;
  alpha.reserve(static_cast<size_t>(steps));
  beta.reserve(static_cast<size_t>(steps));
  // Start from a fixed positive pseudo-random vector: reproducible run to run, and never orthogonal
  // to the top eigenvector of a Gram with non-negative entries (Perron); for signed data (Linear
  // outputs before a ReLU, weights) orthogonality is a measure-zero accident, and rounding
  // reintroduces the component within a few steps.
  uint64_t state = 0x9E3779B97F4A7C15ull;
  double norm_sq = 0.0;
  for (size_t i = 0; i < un; ++i) {
    state ^= state << 13; state ^= state >> 7; state ^= state << 17;
    basis[i] = 0.5 + static_cast<double>(state >> 11) * 0x1.0p-53;  // in [0.5, 1.5)
    norm_sq += basis[i] * basis[i];
  }
  for (size_t i = 0; i < un; ++i) basis[i] /= std::sqrt(norm_sq);

  for (int64_t j = 0; j < steps; ++j) {
    const double* q = basis.data() + static_cast<size_t>(j) * un;
    for (size_t t = 0; t < un; ++t) scaled_q[t] = q[t] * inv_scale;  // (A/s)q as A(q/s): no overflow
    symmetric_matvec(a, n, scaled_q.data(), w.data());
    // w ⟂ q₀…q_j, twice ("twice is enough"); the coefficients on q_j sum to α_j.
    double a_j = orthogonalize(basis.data(), j + 1, n, w.data(), coefficients.data());
    a_j += orthogonalize(basis.data(), j + 1, n, w.data(), coefficients.data());
    if (!std::isfinite(a_j)) return false;
    alpha.push_back(a_j);
    double b_sq = 0.0;
    for (double wi : w) b_sq += wi * wi;
    const double b_j = std::sqrt(b_sq);
    beta.push_back(b_j);
    double theta = 0.0, last = 0.0;
    if (!top_ritz_pair(alpha, beta, j + 1, &theta, &last)) return false;
    // ‖A y − θ y‖ = β_j |s_j| for the Ritz vector y: below tol·θ, θ is within tol·θ of an
    // eigenvalue and within (tol·θ)²/gap of λ₁ (Ritz values approach λ₁ from below).
    const bool invariant = b_j <= 1e-14 * std::max(theta, 1e-300);  // Krylov space exhausted: θ exact
    if (invariant || b_j * last <= rel_tol * theta || j + 1 == n) {
      *lambda_max = theta * scale;
      return theta > 0.0;  // θ = 0: the start vector lay in the null space; the full solver decides
    }
    if (j + 1 < steps) {
      double* next = basis.data() + static_cast<size_t>(j + 1) * un;
      for (size_t t = 0; t < un; ++t) next[t] = w[t] / b_j;
    }
  }
  return false;
}

}  // namespace ndt
