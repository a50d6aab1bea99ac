#include "ndt/jumps.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>

#include "ndt/check.h"

namespace ndt {

namespace {

constexpr double kEps = std::numeric_limits<double>::epsilon();
// Values beyond ±kTame never enter the rolling sums (their squares could overflow them); a window
// that holds one is decided by the exact path, which overflows exactly as numpy does.
constexpr double kTame = 1e100;
// Relative slack on every decision taken from the rolling sums, on top of the error bound.
constexpr double kMargin = 1e-9;
constexpr double kNdtMinStd = 1e-10;  // ndt skips a window whose std is below this

double pairwise(const double* a, int64_t n) {  // numpy's pairwise_sum (loops_utils.h.src)
  if (n < 8) {
    double res = -0.0;
    for (int64_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (int j = 0; j < 8; ++j) r[j] = a[j];
    int64_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (int j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  int64_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise(a, n2) + pairwise(a + n2, n - n2);
}

bool tame(double x) { return std::fabs(x) <= kTame; }  // false for NaN and ±inf too

uint64_t bits_of(double x) {
  uint64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

// Σ(x−K) and Σ(x−K)² of the counted entries of a window, about a shift K that each exact
// recompute moves to the window mean (so the terms stay as small as the window's spread, whatever
// the series' level). a1, a2 sum the magnitudes of every term added or removed since then: the
// rounding error of s1 (s2) is at most (count + 2·ops + 8)·ε·a1 (a2), however long the run.
struct Moments {
  double shift = 0, s1 = 0, s2 = 0, a1 = 0, a2 = 0;
  int64_t count = 0, ops = 0;

  void add(double x) {
    const double d = x - shift, d2 = d * d;
    s1 += d;
    s2 += d2;
    a1 += std::fabs(d);
    a2 += d2;
    ++count;
    ++ops;
  }
  void remove(double x) {
    const double d = x - shift, d2 = d * d;
    s1 -= d;
    s2 -= d2;
    a1 += std::fabs(d);
    a2 += d2;
    --count;
    ++ops;
  }
  // Exact recompute from the counted entries v[i] (counted(i) true), about their mean. Any
  // summation order is fine here (the bound holds for all); four partial sums keep it short.
  template <class Counted>
  void recompute(const double* v, int64_t n, Counted counted) {
    double p0[4] = {0, 0, 0, 0};
    int64_t c = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool in = counted(i);
      p0[i & 3] += in ? v[i] : 0.0;
      c += in;
    }
    shift = c ? ((p0[0] + p0[1]) + (p0[2] + p0[3])) / static_cast<double>(c) : 0.0;
    double p1[4] = {0, 0, 0, 0}, p2[4] = {0, 0, 0, 0}, pa[4] = {0, 0, 0, 0};
    for (int64_t i = 0; i < n; ++i) {
      const double d = counted(i) ? v[i] - shift : 0.0;
      p1[i & 3] += d;
      p2[i & 3] += d * d;
      pa[i & 3] += std::fabs(d);
    }
    s1 = (p1[0] + p1[1]) + (p1[2] + p1[3]);
    s2 = a2 = (p2[0] + p2[1]) + (p2[2] + p2[3]);
    a1 = (pa[0] + pa[1]) + (pa[2] + pa[3]);
    count = c;
    ops = 0;
  }
};

// Rolling updates (two per sample once a window is full) between exact recomputes.
constexpr int64_t kRecomputeEvery = 4;  // × window

// Mean and population variance from Moments (count ≥ 1), with bounds on how far they can lie
// from what numpy computes on the same window: the rolling sums' rounding plus numpy's own
// (two-pass, pairwise: mean off by ≤ δ, Σ(x−μ̂)² relative (n+4)ε).
struct Estimate {
  double mean, var, tol_mean, tol_var;
};

Estimate estimate(const Moments& m) {
  const double n = static_cast<double>(m.count), inv_n = 1.0 / n;  // ≤ 1 ulp off: inside the bounds
  const double m1 = m.s1 * inv_n, second = m.s2 * inv_n, mean_abs = m.a1 * inv_n;
  const double rounding = (2.0 * kEps) * (n + 2.0 * static_cast<double>(m.ops) + 8.0);
  const double e1 = rounding * mean_abs;     // |m1 − exact Σ(x−K)/n|
  const double e2 = rounding * m.a2 * inv_n;  // |second − exact Σ(x−K)²/n|
  const double delta = ((n + 2.0) * kEps) * (std::fabs(m.shift) + mean_abs);  // numpy's mean error
  Estimate e;
  e.mean = m.shift + m1;
  e.var = second - m1 * m1;
  e.tol_mean = e1 + (4.0 * kEps) * (std::fabs(e.mean) + std::fabs(m1)) + delta;
  // ours: e2 + |m1² − exact m1²| + the last roundings; numpy's: (n+4)ε relative + δ² (two-pass)
  e.tol_var = e2 + (2.0 * std::fabs(m1) + e1) * e1 + ((2.0 * kEps) * (n + 8.0)) * (second + m1 * m1 + e2) +
              2.0 * delta * delta + n * 1e-300;
  return e;
}

// Upper bound of |x − numpy's mean| (NaN/inf when x is).
double numerator_bound(const Estimate& e, double x) {
  return std::fabs(x - e.mean) * (1.0 + 4.0 * kEps) + e.tol_mean;
}

// numpy's window.mean() and window.std() of w[0..n), bit for bit; sq: n doubles of scratch.
void numpy_mean_std(const double* w, int64_t n, double* sq, double* mean, double* stdev) {
  const double dn = static_cast<double>(n);
  const double mu = numpy_sum(w, n) / dn;
  for (int64_t i = 0; i < n; ++i) {
    const double d = w[i] - mu;
    sq[i] = d * d;  // stored, then summed: no fused multiply-add can change the rounding
  }
  *mean = mu;
  *stdev = std::sqrt(numpy_sum(sq, n) / dn);
}

// ---- ndt's rule --------------------------------------------------------------------------------

struct NdtSeries {
  std::vector<double> ring;  // 2W: every value at slot p and p + W, so the window is contiguous
  int64_t head = 0;          // slot of the oldest value of the window
  int64_t size = 0;          // window length, min(samples, W)
  int64_t nonfinite = 0;     // NaN/±inf in the window
  int64_t wild = 0;          // finite values beyond ±kTame in the window
  Moments moments;           // of the tame values
  uint64_t run_bits = 0;     // the last value pushed, and how many times in a row
  int64_t run = 0;
  int64_t cache_n = 0;       // numpy's mean/std of a window of cache_n copies of cache_bits
  uint64_t cache_bits = 0;
  double cache_mean = 0, cache_std = 0;
};

// ---- the default rule --------------------------------------------------------------------------

struct DefaultSeries {
  int64_t m = 0;                 // finite samples so far
  std::vector<double> x;         // the last ≥ 2k+2 finite samples, by finite index (ring)
  std::vector<int64_t> index;    // their push indices
  std::vector<int64_t> step;     // and training steps
  std::vector<double> block;     // k doubles of scratch: one block, sorted
  std::vector<double> level;     // L_j, ring of ≥ k+1
  std::vector<double> fifo;      // D_t, ring of ≥ g+1: D_{t−g..t} not yet in the reference
  std::vector<uint8_t> fifo_use; // 0 once excluded (step 5)
  std::vector<double> ref;       // reference ring, 2W mirrored like NdtSeries::ring
  std::vector<uint8_t> ref_use;
  int64_t ref_head = 0, ref_size = 0;
  int64_t usable = 0;            // usable entries in the reference
  int64_t usable_wild = 0;       // of which non-tame (never in the moments)
  Moments moments;               // of the usable tame entries
  std::vector<double> z;         // z_t, ring of ≥ 2k, exact where hot
  std::vector<uint8_t> hot;      // 0: |z_t| certainly < threshold (value not kept)
};

}  // namespace

double numpy_sum(const double* a, int64_t n) { return 0.0 + pairwise(a, n); }

void validate(const NdtRule& r) {
  NDT_CHECK_ARG(r.window >= 2, "ndt window must be >= 2, got " << r.window);
  NDT_CHECK_ARG(r.window <= (int64_t{1} << 26), "ndt window must be <= 2^26, got " << r.window);
  NDT_CHECK_ARG(r.z_threshold > 0, "ndt z_threshold must be > 0, got " << r.z_threshold);
  NDT_CHECK_ARG(r.min_samples >= 1, "ndt min_samples must be >= 1, got " << r.min_samples);
}

void validate(const DefaultRule& r) {
  NDT_CHECK_ARG(r.block >= 3, "block must be >= 3 (the trimmed mean drops 2 of its samples), got " << r.block);
  NDT_CHECK_ARG(r.block <= (int64_t{1} << 20), "block must be <= 2^20, got " << r.block);
  NDT_CHECK_ARG(1 <= r.min_reference && r.min_reference <= r.window,
                "need 1 <= min_reference <= window, got min_reference=" << r.min_reference
                                                                        << ", window=" << r.window);
  NDT_CHECK_ARG(r.window <= (int64_t{1} << 26), "window must be <= 2^26, got " << r.window);
  NDT_CHECK_ARG(r.threshold > 0, "threshold must be > 0, got " << r.threshold);
  NDT_CHECK_ARG(r.min_scale > 0, "min_scale must be > 0, got " << r.min_scale);
}

namespace {

template <class Rule>
Rule checked(const Rule& r) {
  validate(r);
  return r;
}

int64_t checked_series(int64_t series) {
  NDT_CHECK_ARG(series >= 1, "series must be >= 1, got " << series);
  NDT_CHECK_ARG(series <= (int64_t{1} << 24), "series must be <= 2^24, got " << series);
  return series;
}

size_t sz(int64_t n) { return static_cast<size_t>(n); }

// ndt's decision for sample x at push index i ≥ min_samples, window = s.ring[head, head+size).
// Returns true and |z| in *z for a jump.
// threshold2 = (z_threshold·(1 − kMargin))², or 0 where that square is not a normal number (then
// every sample that is not certainly skipped takes the exact path).
bool ndt_decide(NdtSeries& s, const NdtRule& rule, double threshold2, double x, double* sq, double* z) {
  // A NaN/inf in the window makes numpy's mean NaN or inf and its z NaN; NaN at x makes z NaN.
  if (s.nonfinite > 0 || std::isnan(x)) return false;
  const int64_t n = s.size;
  const double* w = s.ring.data() + s.head;
  double mean, stdev;
  if (s.run >= n) {  // constant window (a stuck metric): numpy's stats once per (value, length)
    if (s.cache_n != n || s.cache_bits != s.run_bits) {
      numpy_mean_std(w, n, sq, &s.cache_mean, &s.cache_std);
      s.cache_n = n;
      s.cache_bits = s.run_bits;
    }
    mean = s.cache_mean;
    stdev = s.cache_std;
  } else {
    if (s.wild == 0) {
      const Estimate e = estimate(s.moments);
      const double floor2 = kNdtMinStd * kNdtMinStd;
      if (e.var + e.tol_var < floor2 * (1.0 - 1e-6)) return false;  // numpy's std < 1e-10: skipped
      const double num = numerator_bound(e, x);  // numpy's |z| ≤ threshold if num < threshold·σ_lo:
      if (num * num < threshold2 * (e.var - e.tol_var)) return false;  // squared, no sqrt
    }
    numpy_mean_std(w, n, sq, &mean, &stdev);  // undecided: numpy's arithmetic on this window
  }
  if (stdev < kNdtMinStd) return false;
  *z = std::fabs((x - mean) / stdev);
  return *z > rule.z_threshold;
}

void ndt_append(NdtSeries& s, int64_t window, double x) {
  if (s.size == window) {
    const double old = s.ring[sz(s.head)];
    if (!std::isfinite(old)) --s.nonfinite;
    else if (!tame(old)) --s.wild;
    else s.moments.remove(old);
    s.ring[sz(s.head)] = s.ring[sz(s.head + window)] = x;
    s.head = s.head + 1 == window ? 0 : s.head + 1;
  } else {
    s.ring[sz(s.size)] = s.ring[sz(s.size + window)] = x;
    ++s.size;
  }
  if (!std::isfinite(x)) ++s.nonfinite;
  else if (!tame(x)) ++s.wild;
  else s.moments.add(x);
  const uint64_t b = bits_of(x);
  s.run = (s.run > 0 && b == s.run_bits) ? s.run + 1 : 1;
  s.run_bits = b;
  if (s.moments.ops >= kRecomputeEvery * window) {  // exact recompute: bounded rounding, however long the run
    const double* w = s.ring.data() + s.head;
    s.moments.recompute(w, s.size, [w](int64_t i) { return tame(w[i]); });
  }
}

// x², or 0 when that is not a normal number (overflow, underflow, inf).
double safe_square(double x) {
  const double x2 = x * x;
  return std::isnormal(x2) ? x2 : 0.0;
}

// ---- the default rule, online ------------------------------------------------------------------

// Puts D_j (usable or not) into the reference ring, evicting the oldest when it holds W.
void reference_enter(DefaultSeries& s, int64_t window, double d, bool use) {
  if (s.ref_size == window) {
    const size_t h = sz(s.ref_head);
    if (s.ref_use[h]) {
      --s.usable;
      if (!tame(s.ref[h])) --s.usable_wild;
      else s.moments.remove(s.ref[h]);
    }
    s.ref[h] = s.ref[h + sz(window)] = d;
    s.ref_use[h] = s.ref_use[h + sz(window)] = use ? 1 : 0;
    s.ref_head = s.ref_head + 1 == window ? 0 : s.ref_head + 1;
  } else {
    const size_t p = sz(s.ref_size);
    s.ref[p] = s.ref[p + sz(window)] = d;
    s.ref_use[p] = s.ref_use[p + sz(window)] = use ? 1 : 0;
    ++s.ref_size;
  }
  if (use) {
    ++s.usable;
    if (!tame(d)) ++s.usable_wild;
    else s.moments.add(d);
  }
  if (s.moments.ops >= kRecomputeEvery * window) {
    const double* v = s.ref.data() + s.ref_head;
    const uint8_t* u = s.ref_use.data() + s.ref_head;
    s.moments.recompute(v, s.ref_size, [v, u](int64_t i) { return u[i] && tame(v[i]); });
  }
}

// z_t of D_t against the current reference (step 3). Returns false when |z_t| is certainly below
// the threshold (z not computed); true with the exact z (as default_rule_indices computes it).
// threshold2 = (threshold·(1 − kMargin))² and min_scale2 = min_scale² rounded down, or 0 where not
// normal numbers (always conservative: more exact paths, never a wrong decision).
bool default_score(DefaultSeries& s, const DefaultRule& rule, double threshold2, double min_scale2, double d,
                   double* scratch, double* sq, double* z) {
  if (s.ref_size < rule.min_reference || s.usable < rule.min_reference) {
    *z = 0.0;
    return true;
  }
  if (s.usable_wild == 0) {  // |z| < threshold if num < threshold·max(σ_lo, min_scale), squared:
    const Estimate e = estimate(s.moments);
    const double num = numerator_bound(e, d);
    if (num * num < threshold2 * std::max(e.var - e.tol_var, min_scale2)) return false;
  }
  const double* v = s.ref.data() + s.ref_head;
  const uint8_t* u = s.ref_use.data() + s.ref_head;
  int64_t n = 0;
  for (int64_t i = 0; i < s.ref_size; ++i)
    if (u[i]) scratch[n++] = v[i];
  const double dn = static_cast<double>(n);
  const double mu = numpy_sum(scratch, n) / dn;
  for (int64_t i = 0; i < n; ++i) {
    const double dev = scratch[i] - mu;
    sq[i] = dev * dev;
  }
  // The reference takes dev @ dev (a BLAS dot, summation order platform-specific); numpy's
  // pairwise sum of the squares agrees with it to within a few ulps.
  const double sigma = std::sqrt(numpy_sum(sq, n) / dn);
  *z = (d - mu) / std::max(sigma, rule.min_scale);
  return true;
}

// Ring sizes of DefaultSeries, powers of two (an index is i & mask, no division), and the squared
// thresholds of the fast decisions.
struct DefaultShape {
  int64_t k, r, g;
  uint64_t xmask, lmask, fmask, zmask;  // x/index/step ≥ 2k+2, level ≥ k+1, fifo ≥ g+1, z ≥ 2k
  double threshold2, min_scale2;
  explicit DefaultShape(const DefaultRule& rule)
      : k(rule.block), r(rule.block - 1), g(2 * rule.block), xmask(pow2_mask(2 * rule.block + 2)),
        lmask(pow2_mask(rule.block + 1)), fmask(pow2_mask(2 * rule.block + 1)), zmask(pow2_mask(2 * rule.block)),
        threshold2(safe_square(rule.threshold * (1.0 - kMargin))),
        min_scale2(safe_square(rule.min_scale) * (1.0 - 4.0 * kEps)) {}
  static uint64_t pow2_mask(int64_t at_least) {
    uint64_t size = 1;
    while (size < static_cast<uint64_t>(at_least)) size <<= 1;
    return size - 1;
  }
};

size_t at(int64_t i, uint64_t mask) { return static_cast<size_t>(static_cast<uint64_t>(i) & mask); }

// Compare-exchange as min/max (minsd/maxsd: no branch, random data mispredicts every branch).
// Of −0.0 and 0.0 it may keep two copies of one: that changes at most the sign of a zero block
// level, and with it no decision and no reported z (all compare |z| or a nonzero z's sign).
inline void compare_exchange(double& a, double& b) {
  const double lo = std::min(a, b), hi = std::max(a, b);
  a = lo;
  b = hi;
}

// Sorts the block a[0..k) ascending: an optimal 16-comparator network for the default k = 7,
// insertion sort otherwise. Only the order of equal values (and the sign of zeros, above) can
// differ from numpy's sort, which changes no sum of the middle k − 2 beyond that sign.
void sort_block(double* a, int64_t k) {
  if (k == 7) {
    double v0 = a[0], v1 = a[1], v2 = a[2], v3 = a[3], v4 = a[4], v5 = a[5], v6 = a[6];
    compare_exchange(v0, v6), compare_exchange(v2, v3), compare_exchange(v4, v5);
    compare_exchange(v0, v2), compare_exchange(v1, v4), compare_exchange(v3, v6);
    compare_exchange(v0, v1), compare_exchange(v2, v5), compare_exchange(v3, v4);
    compare_exchange(v1, v2), compare_exchange(v4, v6);
    compare_exchange(v2, v3), compare_exchange(v4, v5);
    compare_exchange(v1, v2), compare_exchange(v3, v4), compare_exchange(v5, v6);
    a[0] = v0, a[1] = v1, a[2] = v2, a[3] = v3, a[4] = v4, a[5] = v5, a[6] = v6;
    return;
  }
  if (k > 32) {
    std::sort(a, a + k);
    return;
  }
  for (int64_t i = 1; i < k; ++i) {
    const double v = a[i];
    int64_t j = i;
    for (; j > 0 && a[j - 1] > v; --j) a[j] = a[j - 1];
    a[j] = v;
  }
}

void default_push(DefaultSeries& s, const DefaultRule& rule, const DefaultShape& sh, int64_t series, int64_t index,
                  int64_t step, double value, double* scratch, double* sq, std::vector<JumpEvent>& out) {
  if (!std::isfinite(value)) return;  // skipped: the rule runs on the finite samples
  const int64_t k = sh.k, r = sh.r, g = sh.g;
  const int64_t f = s.m++;
  s.x[at(f, sh.xmask)] = value;
  s.index[at(f, sh.xmask)] = index;
  s.step[at(f, sh.xmask)] = step;

  // Step 1: L_j (j = m − k) = numpy's trimmed row mean of the last k samples: sort them, sum the
  // middle k − 2 in that order (numpy's pairwise sum), divide.
  if (s.m < k) return;
  const int64_t j = s.m - k;
  double* block = s.block.data();
  for (int64_t i = 0; i < k; ++i) block[i] = s.x[at(j + i, sh.xmask)];
  sort_block(block, k);
  s.level[at(j, sh.lmask)] = numpy_sum(block + 1, k - 2) / static_cast<double>(k - 2);
  if (s.m < 2 * k) return;

  // Step 2: D_t = L_t − L_{t−k}, t = j; into the FIFO; D_{t−g} leaves it for the reference.
  const int64_t t = j;
  const double d = s.level[at(t, sh.lmask)] - s.level[at(t - k, sh.lmask)];
  s.fifo[at(t, sh.fmask)] = d;
  s.fifo_use[at(t, sh.fmask)] = 1;
  if (t - g >= k) reference_enter(s, rule.window, s.fifo[at(t - g, sh.fmask)], s.fifo_use[at(t - g, sh.fmask)]);

  // Step 3: z_t.
  const size_t zt = at(t, sh.zmask);
  double zv = 0.0;
  s.hot[zt] = default_score(s, rule, sh.threshold2, sh.min_scale2, d, scratch, sq, &zv) ? 1 : 0;
  s.z[zt] = zv;

  // Step 4: candidate c = t − r is a jump iff |z_c| > threshold, beats z_{c−r..c−1} strictly and
  // z_{c+1..t} or ties. A cold z (certainly below the threshold) loses to any z above it.
  const int64_t c = t - r;
  if (c < k) return;
  const size_t zc = at(c, sh.zmask);
  if (!s.hot[zc]) return;
  const double peak = std::fabs(s.z[zc]);
  if (!(peak > rule.threshold)) return;
  for (int64_t i = c - r; i < c; ++i) {
    const size_t zi = at(i, sh.zmask);
    if (s.hot[zi] && !(peak > std::fabs(s.z[zi]))) return;
  }
  for (int64_t i = c + 1; i <= t; ++i) {
    const size_t zi = at(i, sh.zmask);
    if (s.hot[zi] && !(peak >= std::fabs(s.z[zi]))) return;
  }

  // Step 5: D_{c−r..c+r} (all still in the FIFO) never enter a reference.
  for (int64_t i = std::max(c - r, k); i <= c + r; ++i) s.fifo_use[at(i, sh.fmask)] = 0;

  // Step 6: of c, c−1, c+1 the sample with the largest jump from its predecessor, in z's direction.
  const double sign = std::copysign(1.0, s.z[zc]);
  auto rise = [&](int64_t i) { return sign * (s.x[at(i, sh.xmask)] - s.x[at(i - 1, sh.xmask)]); };
  int64_t best = c;
  for (int64_t i : {c - 1, c + 1})
    if (rise(i) > rise(best)) best = i;
  out.push_back(JumpEvent{series, kDefaultRule, s.index[at(best, sh.xmask)], s.step[at(best, sh.xmask)], s.z[zc],
                          s.x[at(best - 1, sh.xmask)], s.x[at(best, sh.xmask)]});
}

}  // namespace

struct JumpBank::State {
  State(const NdtRule& ndt_rule, const DefaultRule& default_rule)
      : ndt_threshold2(safe_square(ndt_rule.z_threshold * (1.0 - kMargin))), shape(default_rule) {}
  std::mutex mutex;
  int64_t pushes = 0;
  const double ndt_threshold2;
  const DefaultShape shape;
  std::vector<NdtSeries> ndt;
  std::vector<DefaultSeries> def;
  std::vector<double> scratch, scratch2;  // exact recomputes: max(window) doubles each
};

JumpBank::JumpBank(int64_t series, NdtRule ndt, DefaultRule def)
    : series_(checked_series(series)),
      ndt_(checked(ndt)),
      def_(checked(def)),
      state_(std::make_unique<State>(ndt_, def_)) {
  const DefaultShape& sh = state_->shape;
  state_->ndt.resize(sz(series_));
  for (auto& s : state_->ndt) s.ring.assign(sz(2 * ndt_.window), 0.0);
  state_->def.resize(sz(series_));
  for (auto& s : state_->def) {
    s.x.assign(sh.xmask + 1, 0.0);
    s.index.assign(sh.xmask + 1, 0);
    s.step.assign(sh.xmask + 1, 0);
    s.block.assign(sz(sh.k), 0.0);
    s.level.assign(sh.lmask + 1, 0.0);
    s.fifo.assign(sh.fmask + 1, 0.0);
    s.fifo_use.assign(sh.fmask + 1, 0);
    s.ref.assign(sz(2 * def_.window), 0.0);
    s.ref_use.assign(sz(2 * def_.window), 0);
    s.z.assign(sh.zmask + 1, 0.0);  // z_j = 0 for j < k, exactly
    s.hot.assign(sh.zmask + 1, 1);
  }
  const int64_t scratch = std::max(ndt_.window, def_.window);
  state_->scratch.assign(sz(scratch), 0.0);
  state_->scratch2.assign(sz(scratch), 0.0);
}

JumpBank::~JumpBank() = default;

int64_t JumpBank::samples_seen() const {
  std::lock_guard<std::mutex> lock(state_->mutex);
  return state_->pushes;
}

void JumpBank::push(int64_t step, const double* values, std::vector<JumpEvent>& out) {
  std::lock_guard<std::mutex> lock(state_->mutex);
  push_locked(step, values, out);
}

void JumpBank::push_many(int64_t count, const int64_t* steps, const double* values, std::vector<JumpEvent>& out) {
  NDT_CHECK_ARG(count >= 0, "count must be >= 0, got " << count);
  std::lock_guard<std::mutex> lock(state_->mutex);
  for (int64_t i = 0; i < count; ++i) push_locked(steps[i], values + i * series_, out);
}

void JumpBank::push_locked(int64_t step, const double* values, std::vector<JumpEvent>& out) {
  State& st = *state_;
  const int64_t i = st.pushes;
  double* scratch = st.scratch.data();
  double* sq = st.scratch2.data();
  for (int64_t s = 0; s < series_; ++s) {
    const double x = values[s];
    NdtSeries& ns = st.ndt[sz(s)];
    double z = 0.0;
    if (i >= ndt_.min_samples && ndt_decide(ns, ndt_, st.ndt_threshold2, x, sq, &z)) {
      const double before = ns.ring[sz(ns.head + ns.size - 1)];
      out.push_back(JumpEvent{s, kNdtRule, i, step, z, before, x});
    }
    ndt_append(ns, ndt_.window, x);
    default_push(st.def[sz(s)], def_, st.shape, s, i, step, x, scratch, sq, out);
  }
  st.pushes = i + 1;
}

}  // namespace ndt
