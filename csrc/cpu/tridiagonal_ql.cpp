// Deflation and shifts of the QL chase (see tridiagonal_ql.h).
#include "tridiagonal_ql.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ndt {
namespace detail {
int64_t first_negligible(const double* d, const double* e2, int64_t l, int64_t n) {
  int64_t m = l;
  for (; m + 1 < n; ++m) {
    const double size = std::fabs(d[m]) + std::fabs(d[m + 1]);
    if (e2[m] <= kQlEps2 * std::max(size * size, 1.0)) break;
  }
  return m;
}

void ql_begin(QlChase& q, double* d, double* e, int64_t n) {
  q.d = d;
  q.e2 = e;
  q.n = n;
  q.sweeps_left = 30 * n;
  for (int64_t i = 0; i < n; ++i) q.scale = std::max({q.scale, std::fabs(d[i]), std::fabs(e[i])});
  if (q.scale == 0.0) {
    q.done = true;
    return;
  }
  const double inv_scale = 1.0 / q.scale;
  for (int64_t i = 0; i < n; ++i) {
    d[i] *= inv_scale;
    const double ei = e[i] * inv_scale;
    e[i] = ei * ei;
  }
  e[n - 1] = 0.0;
}

void ql_next_sweep(QlChase& q, NegligibleScan scan) {
  double* d = q.d;
  double* e2 = q.e2;
  const int64_t n = q.n;
  while (q.l < n) {
    const int64_t l = q.l;
    // Deflate at the first negligible e[m], m ≥ l: |e| ≤ eps·(|d_m| + |d_m+1|), or ≤ eps·‖T‖.
    const int64_t m = scan(d, e2, l, n);
    if (m + 1 < n) e2[m] = 0.0;
    if (m == l) {  // 1 × 1 block: converged
      q.l += 1;
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
      q.l += 2;
      continue;
    }
    if (q.sweeps_left-- == 0) {
      q.failed = q.done = true;
      return;
    }
    // Shift: the eigenvalue of the leading 2 × 2 block closer to d[l].
    const double rte = std::sqrt(e2[l]);
    const double g = (d[l + 1] - d[l]) / (2.0 * rte);
    const double r = std::sqrt(g * g + 1.0);
    q.sigma = d[l] - rte / (g + std::copysign(r, g));
    q.c = 1.0;
    q.s = 0.0;
    q.gamma = d[m] - q.sigma;
    q.p = q.gamma * q.gamma;
    q.m = m;
    q.i = m - 1;
    q.sweeping = true;
    return;
  }
  q.done = true;
}

}  // namespace detail
}  // namespace ndt
