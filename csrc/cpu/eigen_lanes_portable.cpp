// The batched eigensolver's kernels in plain C++, for any CPU (the algorithm: eigen_lanes_impl.h).
// Same compact layout and lane count as the AVX2 kernels; the compiler vectorises what the
// baseline instruction set allows.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "eigen_lanes.h"

namespace ndt {
namespace detail {
namespace {

struct PortableLanes {
  static constexpr int width = static_cast<int>(kLanes);
  struct reg {
    double x[width];
  };
  struct mask {
    bool x[width];
  };

  template <class F>
  static reg map(F f) {
    reg r;
    for (int l = 0; l < width; ++l) r.x[l] = f(l);
    return r;
  }
  static reg zero() { return set1(0.0); }
  static reg set1(double a) { return map([&](int) { return a; }); }
  static reg load(const double* p) { return map([&](int l) { return p[l]; }); }
  static void store(double* p, const reg& a) {
    for (int l = 0; l < width; ++l) p[l] = a.x[l];
  }
  static reg add(const reg& a, const reg& b) { return map([&](int l) { return a.x[l] + b.x[l]; }); }
  static reg sub(const reg& a, const reg& b) { return map([&](int l) { return a.x[l] - b.x[l]; }); }
  static reg mul(const reg& a, const reg& b) { return map([&](int l) { return a.x[l] * b.x[l]; }); }
  static reg div(const reg& a, const reg& b) { return map([&](int l) { return a.x[l] / b.x[l]; }); }
  static reg sqrt(const reg& a) { return map([&](int l) { return std::sqrt(a.x[l]); }); }
  static reg abs(const reg& a) { return map([&](int l) { return std::fabs(a.x[l]); }); }
  static reg max(const reg& a, const reg& b) { return map([&](int l) { return std::max(a.x[l], b.x[l]); }); }
  static reg fmadd(const reg& a, const reg& b, const reg& c) { return map([&](int l) { return a.x[l] * b.x[l] + c.x[l]; }); }
  static reg fnmadd(const reg& a, const reg& b, const reg& c) { return map([&](int l) { return c.x[l] - a.x[l] * b.x[l]; }); }
  static reg fmsub(const reg& a, const reg& b, const reg& c) { return map([&](int l) { return a.x[l] * b.x[l] - c.x[l]; }); }
  template <class F>
  static mask test(F f) {
    mask m;
    for (int l = 0; l < width; ++l) m.x[l] = f(l);
    return m;
  }
  static mask gt(const reg& a, const reg& b) { return test([&](int l) { return a.x[l] > b.x[l]; }); }
  static mask ge(const reg& a, const reg& b) { return test([&](int l) { return a.x[l] >= b.x[l]; }); }
  static mask ne(const reg& a, const reg& b) { return test([&](int l) { return a.x[l] != b.x[l]; }); }
  static mask both(const mask& a, const mask& b) { return test([&](int l) { return a.x[l] && b.x[l]; }); }
  static bool any(const mask& a) { return std::any_of(a.x, a.x + width, [](bool b) { return b; }); }
  static reg select(const mask& m, const reg& a, const reg& b) { return map([&](int l) { return m.x[l] ? a.x[l] : b.x[l]; }); }
  static reg gather(double* const* p, int64_t offset) { return map([&](int l) { return p[l][offset]; }); }
  static void scatter(double* const* p, int64_t offset, const reg& a) {
    for (int l = 0; l < width; ++l) p[l][offset] = a.x[l];
  }
  static int64_t first_negligible(const double* d, const double* e2, int64_t l, int64_t n) {
    return detail::first_negligible(d, e2, l, n);
  }
};

}  // namespace
}  // namespace detail
}  // namespace ndt

#define NDT_LANES_NAMESPACE portable_lanes
#include "eigen_lanes_impl.h"

namespace ndt {
namespace detail {

const LaneKernels& portable_lane_kernels() {
  static const LaneKernels kernels{&portable_lanes::reduce_lanes<PortableLanes>,
                                   &portable_lanes::ql_lanes_auto<PortableLanes>};
  return kernels;
}

}  // namespace detail
}  // namespace ndt
