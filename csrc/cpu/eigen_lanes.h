// The batched symmetric eigensolver's kernels, one set per instruction set (internal to the core).
//
// Layout ("compact", as in batched BLAS/LAPACK): kLanes matrices side by side, element (i, j) of
// matrices 0…kLanes−1 adjacent in memory, so that one SIMD instruction does the same step of the
// algorithm for every matrix. Only the lower triangle is stored, packed by rows: element (i, j),
// j ≤ i, of lane l is at ((i(i+1)/2 + j)·kLanes + l).
#pragma once

#include <cstdint>

#include "tridiagonal_ql.h"

namespace ndt {
namespace detail {

/// Matrices per compact group (4 doubles: one AVX2 register). The portable kernels use the same
/// layout, so packing and unpacking do not depend on the kernel.
constexpr int64_t kLanes = 4;

struct LaneKernels {
  /// Householder reduction of kLanes packed n × n matrices (destroyed) to tridiagonal form:
  /// d (diagonal) and e (sub-diagonal, e[n−1] = 0) interleaved like the matrix, n·kLanes each.
  /// `work` holds 4·n·kLanes doubles. A lane whose matrix is smaller than n, zero-padded, gets
  /// exactly the tridiagonal of the unpadded matrix in its leading rows (the padding is never
  /// coupled to it: its Householder vectors are zero there).
  void (*reduce)(double* packed, int64_t n, double* d, double* e, double* work);
  /// Runs the `count` QL chases (prepared by ql_begin; none larger than max_n) to completion,
  /// one chase per SIMD lane: the lanes' division chains are independent, so one instruction
  /// advances several of them and their latencies overlap.
  void (*ql)(QlChase* const* chases, int64_t count, int64_t max_n);
};

/// Plain C++ (any CPU).
const LaneKernels& portable_lane_kernels();
/// AVX2 + FMA; nullptr when not compiled in (non-x86 or another compiler) or the CPU lacks them.
const LaneKernels* avx2_lane_kernels();

}  // namespace detail
}  // namespace ndt
