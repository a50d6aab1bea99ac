#include "ndt/linalg_registry.h"

#include <mutex>

namespace ndt {
namespace {
LinalgRoutines g_routines;

// The process-wide BLAS thread count while BlasThreadScopes are open (see BlasThreadScope).
std::mutex g_blas_threads_mutex;
int g_open_scopes = 0;
int g_saved_threads = 0;    // the count before the first open scope
int g_current_threads = 0;  // the count the open scopes set
}  // namespace

void register_linalg(const LinalgRoutines& routines) { g_routines = routines; }

const LinalgRoutines& linalg() { return g_routines; }

BlasThreadScope::BlasThreadScope(double flops) {
  const set_threads_local_fn set = linalg().set_threads_local;
  const int threads = flops < kBlasParallelMinFlops ? 1 : thread_budget();
  if (set == nullptr || threads <= 0) return;
  const std::lock_guard<std::mutex> lock(g_blas_threads_mutex);
  if (g_open_scopes == 0) {
    g_saved_threads = set(threads);
    g_current_threads = threads;
  } else if (threads < g_current_threads) {
    set(threads);
    g_current_threads = threads;
  }
  ++g_open_scopes;
  active_ = true;
}

BlasThreadScope::~BlasThreadScope() {
  if (!active_) return;
  const std::lock_guard<std::mutex> lock(g_blas_threads_mutex);
  if (--g_open_scopes == 0) linalg().set_threads_local(g_saved_threads);
}

}  // namespace ndt
