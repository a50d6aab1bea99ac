// BLAS/LAPACK routines borrowed from the user's environment at run time.
//
// The wheel links no BLAS of its own: the binding looks up the Fortran-ABI function pointers that
// SciPy already exports (scipy.linalg.cython_blas / cython_lapack capsules, the way scikit-learn
// reaches BLAS) and registers them here. Every pointer may be null; the core then falls back to
// its own kernels, so nothing here is required for correctness.
#pragma once

namespace ndt {

// Signatures of the reference Fortran routines as SciPy's Cython wrappers expose them (32-bit int).
using dsyrk_fn = void (*)(char* uplo, char* trans, int* n, int* k, double* alpha, double* a,
                          int* lda, double* beta, double* c, int* ldc);
using ssyrk_fn = void (*)(char* uplo, char* trans, int* n, int* k, float* alpha, float* a,
                          int* lda, float* beta, float* c, int* ldc);
using dsyevd_fn = void (*)(char* jobz, char* uplo, int* n, double* a, int* lda, double* w,
                           double* work, int* lwork, int* iwork, int* liwork, int* info);

struct LinalgRoutines {
  dsyrk_fn dsyrk = nullptr;
  ssyrk_fn ssyrk = nullptr;
  dsyevd_fn dsyevd = nullptr;
};

/// Installs the routines (null members disable the corresponding path). Not thread-safe with
/// respect to concurrent computations: call it once, at import time.
void register_linalg(const LinalgRoutines& routines);

/// The routines currently registered.
const LinalgRoutines& linalg();

}  // namespace ndt
