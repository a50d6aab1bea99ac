// The batched eigensolver's algorithm, written once over a "lanes" type V (eigen_lanes_avx2.cpp,
// eigen_lanes_portable.cpp) that supplies W-wide arithmetic:
//   V::width, V::reg, V::mask; zero, set1, load, store, add, sub, mul, div, sqrt, abs, max,
//   fmadd(a, b, c) = a·b + c, fnmadd(a, b, c) = c − a·b, fmsub(a, b, c) = a·b − c,
//   gt, ge, ne (→ mask), both (mask ∧ mask), any (mask → bool), select(mask, a, b),
//   gather(pointers, offset) → lane l = pointers[l][offset], scatter(pointers, offset, reg),
//   first_negligible (as detail::first_negligible).
//
// Included by exactly those two files, each inside its own NDT_LANES_NAMESPACE (and the AVX2 one
// inside a target pragma), after <algorithm>, <cstdint>, <limits>, <utility>, <vector> and eigen_lanes.h:
// nothing here has a symbol the two compilations could share.
#pragma once

namespace ndt {
namespace detail {
namespace NDT_LANES_NAMESPACE {

// Element (i, j ≤ i) of the packed compact lower triangle.
template <class V>
inline double* packed_at(double* a, int64_t i, int64_t j) {
  return a + (i * (i + 1) / 2 + j) * V::width;
}

// p = B v for the trailing block B = rows/columns k+1… (m of them) of the packed lower triangle,
// two rows at a time: each row is a dot (two partial sums each, so the FMA latency does not
// serialise it) and an axpy into p, and the two rows' axpys share one load and store of p.
template <class V>
inline void lower_times_vector(double* a, int64_t k, int64_t m, const double* v, double* p) {
  using reg = typename V::reg;
  constexpr int64_t W = V::width;
  const reg zero = V::zero();
  for (int64_t i = 0; i < m; ++i) V::store(p + i * W, zero);
  int64_t i = 0;
  for (; i + 2 <= m; i += 2) {
    const double* b0 = packed_at<V>(a, k + 1 + i, k + 1);
    const double* b1 = packed_at<V>(a, k + 2 + i, k + 1);
    const reg v0 = V::load(v + i * W), v1 = V::load(v + (i + 1) * W);
    reg dot0a = zero, dot0b = zero, dot1a = zero, dot1b = zero;
    int64_t j = 0;
    for (; j + 2 <= i; j += 2) {
      const reg vj = V::load(v + j * W), vk = V::load(v + (j + 1) * W);
      const reg b0j = V::load(b0 + j * W), b0k = V::load(b0 + (j + 1) * W);
      const reg b1j = V::load(b1 + j * W), b1k = V::load(b1 + (j + 1) * W);
      dot0a = V::fmadd(b0j, vj, dot0a);
      dot0b = V::fmadd(b0k, vk, dot0b);
      dot1a = V::fmadd(b1j, vj, dot1a);
      dot1b = V::fmadd(b1k, vk, dot1b);
      V::store(p + j * W, V::fmadd(b1j, v1, V::fmadd(b0j, v0, V::load(p + j * W))));
      V::store(p + (j + 1) * W, V::fmadd(b1k, v1, V::fmadd(b0k, v0, V::load(p + (j + 1) * W))));
    }
    for (; j < i; ++j) {
      const reg vj = V::load(v + j * W), b0j = V::load(b0 + j * W), b1j = V::load(b1 + j * W);
      dot0a = V::fmadd(b0j, vj, dot0a);
      dot1a = V::fmadd(b1j, vj, dot1a);
      V::store(p + j * W, V::fmadd(b1j, v1, V::fmadd(b0j, v0, V::load(p + j * W))));
    }
    // Row i's diagonal, row i+1's entries in columns i and i+1.
    const reg b1i = V::load(b1 + i * W);
    const reg pi = V::fmadd(V::load(b0 + i * W), v0, V::add(V::load(p + i * W), V::add(dot0a, dot0b)));
    V::store(p + i * W, V::fmadd(b1i, v1, pi));
    const reg dot1 = V::add(V::fmadd(b1i, v0, dot1a), dot1b);  // column i is even: dot1a's
    V::store(p + (i + 1) * W, V::fmadd(V::load(b1 + (i + 1) * W), v1, V::add(V::load(p + (i + 1) * W), dot1)));
  }
  if (i < m) {  // the last row when m is odd, summed in the same order as in a pair
    const double* bi = packed_at<V>(a, k + 1 + i, k + 1);
    const reg vi = V::load(v + i * W);
    reg dot_even = zero, dot_odd = zero;
    for (int64_t j = 0; j < i; ++j) {
      const reg b = V::load(bi + j * W);
      if (j % 2 == 0) dot_even = V::fmadd(b, V::load(v + j * W), dot_even);
      else dot_odd = V::fmadd(b, V::load(v + j * W), dot_odd);
      V::store(p + j * W, V::fmadd(b, vi, V::load(p + j * W)));
    }
    V::store(p + i * W, V::fmadd(V::load(bi + i * W), vi, V::add(V::load(p + i * W), V::add(dot_even, dot_odd))));
  }
}

// The Householder reflector H = I − τ v vᵀ that zeroes column k below its first sub-diagonal entry
// (m entries): v (v[0] = 1) and τ per lane; d[k] and e[k]. In a lane whose column is already
// reduced (zero, or zero below its first entry) it is the identity (τ = 0, v = e₁), so that the
// lane's update is an exact no-op instead of a branch. Returns whether any lane reflects.
template <class V>
inline bool make_reflector(double* a, int64_t k, int64_t m, double* v, double* d, double* e, typename V::reg* tau) {
  using reg = typename V::reg;
  constexpr int64_t W = V::width;
  const reg zero = V::zero(), one = V::set1(1.0);
  V::store(d + k * W, V::load(packed_at<V>(a, k, k)));
  // Scaled to max |x| = 1 (the squares can then neither overflow nor underflow harmfully);
  // division rather than a reciprocal, which overflows for subnormal columns.
  reg scale = zero;
  for (int64_t i = 0; i < m; ++i) scale = V::max(scale, V::abs(V::load(packed_at<V>(a, k + 1 + i, k))));
  const auto nonzero = V::gt(scale, zero);
  const reg safe_scale = V::select(nonzero, scale, one);
  reg tail_sq = zero;
  for (int64_t i = 0; i < m; ++i) {
    const reg u = V::div(V::load(packed_at<V>(a, k + 1 + i, k)), safe_scale);
    V::store(v + i * W, u);
    if (i > 0) tail_sq = V::fmadd(u, u, tail_sq);
  }
  const auto reflect = V::both(nonzero, V::gt(tail_sq, zero));
  const reg x0 = V::load(packed_at<V>(a, k + 1, k));
  *tau = zero;
  if (!V::any(reflect)) {  // every lane already tridiagonal in this column (zero padding, say)
    V::store(e + k * W, x0);
    return false;
  }
  const reg alpha = V::load(v);
  const reg norm = V::sqrt(V::fmadd(alpha, alpha, tail_sq));
  const reg beta = V::select(V::ge(alpha, zero), V::sub(zero, norm), norm);  // sign avoids cancellation
  // Lanes that do not reflect compute garbage (0/0) here; the selects drop it.
  *tau = V::select(reflect, V::div(V::sub(beta, alpha), beta), zero);
  const reg inv_v0 = V::select(reflect, V::div(one, V::sub(alpha, beta)), zero);
  V::store(e + k * W, V::select(reflect, V::mul(beta, safe_scale), x0));
  V::store(v, one);
  for (int64_t i = 1; i < m; ++i) V::store(v + i * W, V::mul(V::load(v + i * W), inv_v0));
  return true;
}

// p (= B v on entry) becomes w = τ p − (τ/2)(τ pᵀv) v.
template <class V>
inline void householder_w(double* p, const double* v, typename V::reg tau, int64_t m) {
  using reg = typename V::reg;
  constexpr int64_t W = V::width;
  reg pv = V::zero();
  for (int64_t i = 0; i < m; ++i) {
    const reg pi = V::mul(V::load(p + i * W), tau);
    V::store(p + i * W, pi);
    pv = V::fmadd(pi, V::load(v + i * W), pv);
  }
  const reg half = V::mul(V::mul(V::set1(0.5), tau), pv);
  for (int64_t i = 0; i < m; ++i) V::store(p + i * W, V::fnmadd(half, V::load(v + i * W), V::load(p + i * W)));
}

// One entry of B −= v wᵀ + w vᵀ.
template <class V>
inline typename V::reg updated(const double* b, typename V::reg vi, typename V::reg wi, const double* v,
                               const double* w, int64_t j) {
  constexpr int64_t W = V::width;
  return V::fnmadd(wi, V::load(v + j * W), V::fnmadd(vi, V::load(w + j * W), V::load(b)));
}

// B −= v wᵀ + w vᵀ on the block's rows first..m−1 (lower triangle).
template <class V>
inline void rank2_update(double* a, int64_t k, int64_t m, const double* v, const double* w, int64_t first) {
  constexpr int64_t W = V::width;
  for (int64_t i = first; i < m; ++i) {
    double* bi = packed_at<V>(a, k + 1 + i, k + 1);
    const auto vi = V::load(v + i * W), wi = V::load(w + i * W);
    for (int64_t j = 0; j <= i; ++j) V::store(bi + j * W, updated<V>(bi + j * W, vi, wi, v, w, j));
  }
}

// The next step's product fused into this step's update: B −= v wᵀ + w vᵀ on the block's rows
// and columns 1… (column 0, the next reflector's, was updated first), and p' = B' v' on the
// updated values, B' being that part. One pass over the block instead of two: from n ≈ 45 on,
// the packed group no longer fits L1, and each pass streams it from L2. The sums run in the same
// order as lower_times_vector's.
template <class V>
inline void rank2_update_and_product(double* a, int64_t k, int64_t m, const double* v, const double* w,
                                     const double* v_next, double* p_next) {
  using reg = typename V::reg;
  constexpr int64_t W = V::width;
  const reg zero = V::zero();
  for (int64_t i = 0; i + 1 < m; ++i) V::store(p_next + i * W, zero);
  for (int64_t i = 1; i < m; ++i) {
    double* bi = packed_at<V>(a, k + 1 + i, k + 2);  // row i of the block from column 1
    const double* vs = v + W;                          // v and w from index 1, like B'
    const double* ws = w + W;
    const reg vi = V::load(v + i * W), wi = V::load(w + i * W), vni = V::load(v_next + (i - 1) * W);
    reg dot_even = zero, dot_odd = zero;
    int64_t j = 0;  // column of B'
    for (; j + 2 <= i - 1; j += 2) {
      const reg b0 = updated<V>(bi + j * W, vi, wi, vs, ws, j);
      const reg b1 = updated<V>(bi + (j + 1) * W, vi, wi, vs, ws, j + 1);
      V::store(bi + j * W, b0);
      V::store(bi + (j + 1) * W, b1);
      dot_even = V::fmadd(b0, V::load(v_next + j * W), dot_even);
      dot_odd = V::fmadd(b1, V::load(v_next + (j + 1) * W), dot_odd);
      V::store(p_next + j * W, V::fmadd(b0, vni, V::load(p_next + j * W)));
      V::store(p_next + (j + 1) * W, V::fmadd(b1, vni, V::load(p_next + (j + 1) * W)));
    }
    if (j < i - 1) {  // (j is even here)
      const reg b0 = updated<V>(bi + j * W, vi, wi, vs, ws, j);
      V::store(bi + j * W, b0);
      dot_even = V::fmadd(b0, V::load(v_next + j * W), dot_even);
      V::store(p_next + j * W, V::fmadd(b0, vni, V::load(p_next + j * W)));
      ++j;
    }
    const reg diag = updated<V>(bi + j * W, vi, wi, vs, ws, j);
    V::store(bi + j * W, diag);
    V::store(p_next + j * W,
             V::fmadd(diag, vni, V::add(V::load(p_next + j * W), V::add(dot_even, dot_odd))));
  }
}

// See LaneKernels::reduce. The same steps as householder_tridiagonalize (eigen_cpu.cpp) for each
// lane, but every operation serves W matrices.
//
// A lane's arithmetic does not depend on the other lanes, nor on zero padding (padded rows add
// exact zeros, and a row's sums run in the same order whether it is paired or alone), so each
// matrix gets the same bits in any batch.
template <class V>
void reduce_lanes(double* a, int64_t n, double* d, double* e, double* work) {
  using reg = typename V::reg;
  constexpr int64_t W = V::width;
  double* v = work;                   // this step's Householder vector
  double* p = work + n * W;           // B v, then w
  double* v_next = work + 2 * n * W;  // the next step's, and its B' v'
  double* p_next = work + 3 * n * W;
  reg tau = V::zero();
  bool reflects = n > 2 && make_reflector<V>(a, 0, n - 1, v, d, e, &tau);
  bool have_product = false;  // p already holds B v (fused into the previous step)
  for (int64_t k = 0; k + 2 < n; ++k) {
    const int64_t m = n - k - 1;  // size of the trailing block B
    if (reflects) {
      if (!have_product) lower_times_vector<V>(a, k, m, v, p);
      householder_w<V>(p, v, tau, m);
    }
    if (k + 3 >= n) {  // the last reflector
      if (reflects) rank2_update<V>(a, k, m, v, p, 0);
      break;
    }
    // Column 0 of the block first: it is the next reflector's column.
    if (reflects)
      for (int64_t i = 0; i < m; ++i) {
        double* bi0 = packed_at<V>(a, k + 1 + i, k + 1);
        V::store(bi0, updated<V>(bi0, V::load(v + i * W), V::load(p + i * W), v, p, 0));
      }
    reg tau_next = V::zero();
    const bool next_reflects = make_reflector<V>(a, k + 1, m - 1, v_next, d, e, &tau_next);
    have_product = reflects && next_reflects;
    if (have_product) rank2_update_and_product<V>(a, k, m, v, p, v_next, p_next);
    else if (reflects) rank2_update<V>(a, k, m, v, p, 1);
    std::swap(v, v_next);
    std::swap(p, p_next);
    tau = tau_next;
    reflects = next_reflects;
  }
  if (n >= 2) {
    V::store(d + (n - 2) * W, V::load(packed_at<V>(a, n - 2, n - 2)));
    V::store(e + (n - 2) * W, V::load(packed_at<V>(a, n - 1, n - 2)));
  }
  V::store(d + (n - 1) * W, V::load(packed_at<V>(a, n - 1, n - 1)));
  V::store(e + (n - 1) * W, V::zero());
}

// `steps` rotations of the square-root-free QL sweep (as ql_rotate_lockstep in eigen_cpu.cpp) in
// L = R·W lanes at once; lane l rotates at dp[l][−t], ep[l][−t] in step t. R registers per
// quantity: R independent chains per instruction stream, to hide the division latency further.
template <class V, int R>
inline void rotate_lanes(double* const* dp, double* const* ep, double* c_, double* s_, double* g_, double* p_,
                         const double* sigma_, int64_t steps) {
  using reg = typename V::reg;
  constexpr int W = V::width;
  const reg zero = V::zero(), one = V::set1(1.0);
  reg c[R], s[R], g[R], p[R], sigma[R];
  for (int r = 0; r < R; ++r) {
    c[r] = V::load(c_ + r * W), s[r] = V::load(s_ + r * W), g[r] = V::load(g_ + r * W);
    p[r] = V::load(p_ + r * W), sigma[r] = V::load(sigma_ + r * W);
  }
  for (int64_t t = 0; t < steps; ++t) {
    for (int r = 0; r < R; ++r) {
      const reg bb = V::gather(ep + r * W, -t);
      const reg alpha = V::gather(dp + r * W, -t);
      const reg rr = V::add(p[r], bb);  // > 0 inside an unreduced block
      // (At a sweep's first rotation s = 0: this rewrites the deflated e²[m] = 0 with 0.)
      V::scatter(ep + r * W, 1 - t, V::mul(s[r], rr));
      const reg old_c = c[r], old_g = g[r];
      // The rotation chain p → r → γ → p is what bounds the QL phase when few matrices share the
      // lanes, so it is kept short: γ = c(α − σ) − sγ_old = (p(α − σ) − bb·γ_old)·(1/r), whose
      // numerator does not wait for the division, and γ²/c = γ²·(r/p) with r/p computed beside
      // 1/r: one division on the chain instead of two (benchmarks/NOTES.md, "Batched eigensolver").
      const reg inv_r = V::div(one, rr);
      const reg inv_c = V::div(rr, p[r]);
      const reg numerator = V::fmsub(p[r], V::sub(alpha, sigma[r]), V::mul(bb, old_g));
      c[r] = V::mul(p[r], inv_r);
      s[r] = V::mul(bb, inv_r);
      g[r] = V::mul(numerator, inv_r);
      V::scatter(dp + r * W, 1 - t, V::add(old_g, V::sub(alpha, g[r])));
      p[r] = V::select(V::ne(c[r], zero), V::mul(V::mul(g[r], g[r]), inv_c), V::mul(old_c, bb));
    }
  }
  for (int r = 0; r < R; ++r) {
    V::store(c_ + r * W, c[r]), V::store(s_ + r * W, s[r]), V::store(g_ + r * W, g[r]);
    V::store(p_ + r * W, p[r]);
  }
}

// See LaneKernels::ql. Each lane holds one chase; all lanes rotate until the first of them ends
// its sweep (known in advance: every lane takes one step per rotation, so no per-step test), then
// the ended ones deflate and start their next sweep, or hand the lane to a chase not started yet.
// A lane without a chase rotates NaNs in a private buffer (`idle`), so the loop needs no masks.
template <class V, int R>
void ql_lanes(QlChase* const* chases, int64_t count, int64_t max_n) {
  constexpr int L = R * V::width;
  std::vector<double> idle(static_cast<size_t>(2 * (max_n + 2)), std::numeric_limits<double>::quiet_NaN());
  QlChase* lane[L];
  alignas(64) double c[L], s[L], g[L], p[L], sigma[L];
  double* dp[L];
  double* ep[L];
  int64_t next = 0;
  auto take_next_chase = [&](int l) {
    while (next < count) {
      QlChase& q = *chases[next++];
      if (!q.done && !q.sweeping) ql_next_sweep(q, &V::first_negligible);
      if (q.sweeping) {
        lane[l] = &q;
        return;
      }
    }
    lane[l] = nullptr;
  };
  // The lanes' state stays here between runs; only a lane whose sweep ended goes back to its chase.
  constexpr int64_t kIdle = std::numeric_limits<int64_t>::max();
  int64_t remaining[L];  // rotations left in the lane's sweep
  auto load_lane = [&](int l) {
    if (const QlChase* q = lane[l]) {
      dp[l] = q->d + q->i, ep[l] = q->e2 + q->i;
      c[l] = q->c, s[l] = q->s, g[l] = q->gamma, p[l] = q->p, sigma[l] = q->sigma;
      remaining[l] = q->i - q->l + 1;
    } else {  // from the top of `idle`, walking down at most max_n − 1 rows per run
      dp[l] = idle.data() + max_n, ep[l] = idle.data() + 2 * max_n + 2;
      c[l] = s[l] = g[l] = p[l] = sigma[l] = 0.0;
      remaining[l] = kIdle;
    }
  };
  for (int l = 0; l < L; ++l) {
    take_next_chase(l);
    load_lane(l);
  }
  for (;;) {
    const int64_t steps = *std::min_element(remaining, remaining + L);
    if (steps == kIdle) break;  // no lane busy
    rotate_lanes<V, R>(dp, ep, c, s, g, p, sigma, steps);
    for (int l = 0; l < L; ++l) {
      QlChase* q = lane[l];
      if (q == nullptr) {
        load_lane(l);  // back to the top of `idle`
        continue;
      }
      dp[l] -= steps, ep[l] -= steps, remaining[l] -= steps;
      if (remaining[l] > 0) continue;
      q->c = c[l], q->s = s[l], q->gamma = g[l], q->p = p[l];
      q->i = q->l - 1;
      ql_finish_sweep(*q);
      ql_next_sweep(*q, &V::first_negligible);
      if (!q->sweeping) take_next_chase(l);
      load_lane(l);
    }
  }
}

// One register per quantity while the chases fit in it; two (twice the chains in flight) for more:
// idle lanes cost divider time, and with few chases the divider, not the latency, would bound.
template <class V>
void ql_lanes_auto(QlChase* const* chases, int64_t count, int64_t max_n) {
  if (count <= V::width) ql_lanes<V, 1>(chases, count, max_n);
  else ql_lanes<V, 2>(chases, count, max_n);
}

}  // namespace NDT_LANES_NAMESPACE
}  // namespace detail
}  // namespace ndt
