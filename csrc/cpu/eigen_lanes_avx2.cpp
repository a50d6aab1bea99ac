// The batched eigensolver's kernels with AVX2 + FMA intrinsics (the algorithm: eigen_lanes_impl.h),
// chosen at run time when the CPU has them (eigen_batched_cpu.cpp); the rest of the library keeps
// the baseline instruction set.
//
// Only the code between the target pragmas is compiled for AVX2: the standard headers come first,
// so their inline functions (which the linker may merge with other files' copies) stay baseline.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "eigen_lanes.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define NDT_AVX2_LANES 1
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

namespace ndt {
namespace detail {
namespace {

struct Avx2Lanes {
  static constexpr int width = 4;
  static_assert(width == kLanes, "the compact layout is one AVX2 register wide");
  using reg = __m256d;
  using mask = __m256d;  // all-ones / all-zeros per lane

  static reg zero() { return _mm256_setzero_pd(); }
  static reg set1(double a) { return _mm256_set1_pd(a); }
  static reg load(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, reg a) { _mm256_storeu_pd(p, a); }
  static reg add(reg a, reg b) { return _mm256_add_pd(a, b); }
  static reg sub(reg a, reg b) { return _mm256_sub_pd(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_pd(a, b); }
  static reg div(reg a, reg b) { return _mm256_div_pd(a, b); }
  static reg sqrt(reg a) { return _mm256_sqrt_pd(a); }
  static reg abs(reg a) { return _mm256_andnot_pd(_mm256_set1_pd(-0.0), a); }
  // Like std::max(a, b) for non-NaN input (the column scale; inputs are checked finite).
  static reg max(reg a, reg b) { return _mm256_max_pd(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_pd(a, b, c); }
  static reg fnmadd(reg a, reg b, reg c) { return _mm256_fnmadd_pd(a, b, c); }
  static reg fmsub(reg a, reg b, reg c) { return _mm256_fmsub_pd(a, b, c); }
  static mask gt(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
  static mask ge(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_GE_OQ); }
  static mask ne(reg a, reg b) { return _mm256_cmp_pd(a, b, _CMP_NEQ_UQ); }  // NaN ≠ 0, as in C++
  static mask both(mask a, mask b) { return _mm256_and_pd(a, b); }
  static bool any(mask a) { return _mm256_movemask_pd(a) != 0; }
  static reg select(mask m, reg a, reg b) { return _mm256_blendv_pd(b, a, m); }
  static reg gather(double* const* p, int64_t offset) {
    return _mm256_set_pd(p[3][offset], p[2][offset], p[1][offset], p[0][offset]);
  }
  static void scatter(double* const* p, int64_t offset, reg a) {
    const __m128d low = _mm256_castpd256_pd128(a), high = _mm256_extractf128_pd(a, 1);
    _mm_storel_pd(p[0] + offset, low);
    _mm_storeh_pd(p[1] + offset, low);
    _mm_storel_pd(p[2] + offset, high);
    _mm_storeh_pd(p[3] + offset, high);
  }
  // detail::first_negligible, four rows per test before the exact row is found.
  static int64_t first_negligible(const double* d, const double* e2, int64_t l, int64_t n) {
    const __m256d eps2 = _mm256_set1_pd(kQlEps2), one = _mm256_set1_pd(1.0);
    int64_t m = l;
    for (; m + 4 < n; m += 4) {  // (short blocks go straight to the exact test)
      const __m256d size = _mm256_add_pd(abs(_mm256_loadu_pd(d + m)), abs(_mm256_loadu_pd(d + m + 1)));
      const __m256d bound = _mm256_mul_pd(eps2, _mm256_max_pd(_mm256_mul_pd(size, size), one));
      if (_mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(e2 + m), bound, _CMP_LE_OQ)) != 0) break;
    }
    return detail::first_negligible(d, e2, m, n);
  }
};

}  // namespace
}  // namespace detail
}  // namespace ndt

#define NDT_LANES_NAMESPACE avx2_lanes
#include "eigen_lanes_impl.h"

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif  // x86-64 with GCC or Clang

namespace ndt {
namespace detail {

const LaneKernels* avx2_lane_kernels() {
#ifdef NDT_AVX2_LANES
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const LaneKernels kernels{&avx2_lanes::reduce_lanes<Avx2Lanes>, &avx2_lanes::ql_lanes_auto<Avx2Lanes>};
  return supported ? &kernels : nullptr;
#else
  return nullptr;
#endif
}

}  // namespace detail
}  // namespace ndt
