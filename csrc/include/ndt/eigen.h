// Eigenvalues of small and large real symmetric matrices.
#pragma once

#include <cstdint>

namespace ndt {

enum class EigenSolver : int {
  automatic = 0,    ///< own solver up to own_solver_max_dim(), LAPACK dsyevd above (if registered)
  tridiagonal_ql = 1,  ///< the core's own Householder tridiagonalisation + implicit QL
  lapack = 2,       ///< LAPACK dsyevd (jobz = 'N'); throws std::invalid_argument if not registered
};

/// Largest dimension for which `automatic` picks the core's own solver (set from benchmarks).
int64_t own_solver_max_dim();

/// Eigenvalues of the symmetric n × n matrix `a` (row-major, float64, both triangles filled;
/// destroyed on return), written to `w` (length n) in descending order.
/// Returns false (and fills `w` with NaN) if the input is not finite or the iteration did not
/// converge; it never loops forever.
bool symmetric_eigenvalues(double* a, int64_t n, double* w, EigenSolver solver = EigenSolver::automatic);

/// The same for `count` independent matrices a[k] (n[k] × n[k]) → w[k]; ok[k] as the return value
/// above. Matrices that the own solver takes have their QL phases iterated together: each is a
/// chain of dependent divisions, and two chains rotated in lockstep fill each other's latency.
void symmetric_eigenvalues_many(double* const* a, const int64_t* n, double* const* w, int64_t count, bool* ok,
                                EigenSolver solver = EigenSolver::automatic);

/// Instruction set of the batched solver (symmetric_eigenvalues_batched). Both compute the same
/// algorithm; their results differ only by rounding (FMA), well inside the solvers' accuracy.
enum class LaneKernel : int {
  automatic = 0,  ///< avx2 where the CPU has AVX2 + FMA (checked at run time), else portable
  portable = 1,   ///< plain C++, any CPU
  avx2 = 2,       ///< AVX2 + FMA intrinsics (x86-64 builds with GCC or Clang)
};

/// Whether `kernel` can run here (automatic and portable always can).
bool lane_kernel_available(LaneKernel kernel);

/// Process-wide choice of the batched solver's kernel, for tests and benchmarks; the default is
/// automatic, or NDT_LANE_KERNEL=auto|portable|avx2 from the environment at first use.
/// Throws std::invalid_argument if `kernel` cannot run here.
void set_lane_kernel(LaneKernel kernel);

/// The kernel the batched solver runs now: portable or avx2, never automatic.
LaneKernel lane_kernel();

/// Largest dimension for which the batched solver's `automatic` picks its own kernels when at
/// least two matrices larger than own_solver_max_dim() share the call (otherwise the limit is
/// own_solver_max_dim()); LAPACK dsyevd above, if registered.
int64_t batched_solver_max_dim();

/// Eigenvalues of `count` symmetric matrices a[k] (n[k] × n[k], row-major, float64; only the
/// lower triangle is read, nothing is modified), written to w[k] (length n[k]) in descending
/// order; ok[k] as symmetric_eigenvalues' return value (false — a NaN/Inf anywhere in a[k], upper
/// triangle included, or no convergence: w[k] all NaN; one bad matrix affects no other). The own solver's matrices are sorted by size, packed four at a time into
/// the compact layout (element (i, j) of the group's matrices adjacent; smaller ones zero-padded)
/// and tridiagonalised together, then their QL iterations run one per SIMD lane
/// (csrc/cpu/eigen_lanes_impl.h). Same accuracy as the single-matrix solver (~n·eps·max|λ|).
void symmetric_eigenvalues_batched(const double* const* a, const int64_t* n, double* const* w, int64_t count,
                                   bool* ok, EigenSolver solver = EigenSolver::automatic);

/// Largest eigenvalue of the symmetric positive semidefinite n × n matrix `a` (row-major, full,
/// not modified) by Lanczos iteration with full reorthogonalisation (at most min(n, max_iter)
/// matrix-vector products). Returns true once the Ritz residual ‖Ay − θy‖ is below rel_tol · θ
/// (θ is then within (rel_tol·θ)²/gap of λmax); false if that did not happen, or for a non-finite
/// matrix (callers then use the full solver). All-zero `a` → 0, true.
bool largest_eigenvalue_psd(const double* a, int64_t n, double* lambda_max, double rel_tol = 1e-8,
                            int64_t max_iter = 96);

}  // namespace ndt
