// BLAS/LAPACK routines borrowed from the user's environment at run time.
//
// The wheel links no BLAS of its own: the binding looks up the Fortran-ABI function pointers that
// SciPy already exports (scipy.linalg.cython_blas / cython_lapack capsules, the way scikit-learn
// reaches BLAS) and registers them here. Every pointer may be null; the core then falls back to
// its own kernels, so nothing here is required for correctness.
#pragma once

#include "ndt/parallel.h"

namespace ndt {

// Signatures of the reference Fortran routines as SciPy's Cython wrappers expose them (32-bit int).
using dsyrk_fn = void (*)(char* uplo, char* trans, int* n, int* k, double* alpha, double* a,
                          int* lda, double* beta, double* c, int* ldc);
using ssyrk_fn = void (*)(char* uplo, char* trans, int* n, int* k, float* alpha, float* a,
                          int* lda, float* beta, float* c, int* ldc);
using dsyevd_fn = void (*)(char* jobz, char* uplo, int* n, double* a, int* lda, double* w,
                           double* work, int* lwork, int* iwork, int* liwork, int* info);

/// OpenBLAS's openblas_set_num_threads_local: sets the BLAS thread count and returns the previous
/// one. Despite the name it is process-wide in the pthreads builds SciPy ships (it differs from
/// openblas_set_num_threads only inside OpenMP regions), so BlasThreadScope reference-counts it.
using set_threads_local_fn = int (*)(int num_threads);

struct LinalgRoutines {
  dsyrk_fn dsyrk = nullptr;
  ssyrk_fn ssyrk = nullptr;
  dsyevd_fn dsyevd = nullptr;
  set_threads_local_fn set_threads_local = nullptr;  ///< optional; see BlasThreadScope
};

/// Installs the routines (null members disable the corresponding path). Not thread-safe with
/// respect to concurrent computations: call it once, at import time.
void register_linalg(const LinalgRoutines& routines);

/// The routines currently registered.
const LinalgRoutines& linalg();

/// Problems below this many flops run the registered BLAS single-threaded.
constexpr double kBlasParallelMinFlops = 2e7;

/// Limits BLAS to one thread while the scope lives when the problem is small, and to
/// thread_budget() threads when that is set (ndt/parallel.h). Why: a per-sample Gram or
/// eigensolve is tens of microseconds of work, and in a training loop every core is already busy
/// with the framework's own threads — BLAS threads then wait on each other for milliseconds
/// (measured: 64 × 256 metrics took 16 ms with OpenBLAS's threads under load, 0.3 ms with one)
/// and keep spinning after the call, slowing the framework's next ops too.
/// The setting is process-wide (see set_threads_local_fn): overlapping scopes on several threads
/// share one count — the first saves the user's setting, each lowers it to what it needs, the
/// last restores it. BLAS calls the user makes from other threads meanwhile get that lower count.
class BlasThreadScope {
 public:
  explicit BlasThreadScope(double flops);
  ~BlasThreadScope();
  BlasThreadScope(const BlasThreadScope&) = delete;
  BlasThreadScope& operator=(const BlasThreadScope&) = delete;

 private:
  bool active_ = false;
};

}  // namespace ndt
