// The QL iteration on symmetric tridiagonal matrices as a resumable "chase" per matrix: the
// bookkeeping (scaling, deflation, shifts) shared by the single-matrix solver (eigen_cpu.cpp),
// which rotates two chases in lockstep, and the batched one (eigen_batched_cpu.cpp), which
// rotates one chase per SIMD lane. Internal to the core.
#pragma once

#include <cstdint>
#include <limits>

namespace ndt {
namespace detail {

// The QL iteration on one tridiagonal matrix, resumable between sweeps.
struct QlChase {
  double* d = nullptr;   // diagonal (scaled); the eigenvalues on return
  double* e2 = nullptr;  // squared sub-diagonal (scaled), destroyed
  int64_t n = 0;
  double scale = 0.0;
  int64_t l = 0;  // d[0..l) have converged
  int64_t m = 0;  // the current sweep chases the bulge from m − 1 up to l
  int64_t i = 0;  // next rotation index of the current sweep
  double c = 1.0, s = 0.0, gamma = 0.0, p = 0.0, sigma = 0.0;
  int64_t sweeps_left = 0;
  bool sweeping = false, done = false, failed = false;
};

/// Points the chase at (d, e) of size n, scales to max |entry| = 1 (squares can then neither
/// overflow nor harmfully underflow, and the absolute deflation floor is eps·‖T‖) and squares
/// the sub-diagonal in place (e[n-1] is ignored and set to 0).
void ql_begin(QlChase& q, double* d, double* e, int64_t n);

/// eps² of the deflation test.
constexpr double kQlEps2 = std::numeric_limits<double>::epsilon() * std::numeric_limits<double>::epsilon();

/// The first m ≥ l whose e²[m] is negligible — e[m]² ≤ eps²·max((|d[m]| + |d[m+1]|)², 1), the 1
/// being ‖T‖ after ql_begin's scaling — or n − 1 if none.
int64_t first_negligible(const double* d, const double* e2, int64_t l, int64_t n);
using NegligibleScan = int64_t (*)(const double* d, const double* e2, int64_t l, int64_t n);

/// Deflates what has converged and sets up the next sweep (q.sweeping), or marks the chase done
/// (q.failed after 30·n sweeps). `scan`: first_negligible or a faster equivalent (it runs before
/// every sweep and is as long as the sweep).
void ql_next_sweep(QlChase& q, NegligibleScan scan = first_negligible);

/// Closes a sweep whose rotations reached row l (q.i < q.l).
inline void ql_finish_sweep(QlChase& q) {
  q.e2[q.l] = q.s * q.p;
  q.d[q.l] = q.sigma + q.gamma;
  q.sweeping = false;
}

}  // namespace detail
}  // namespace ndt
