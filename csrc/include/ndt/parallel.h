// Parallelism across independent problems (the layers of one log() call).
#pragma once

#include <cstdint>
#include <functional>

namespace ndt {

/// Runs task(i) for i in [0, count) on up to max_threads() threads, the caller's included.
/// Runs serially when count < 2 or `total_flops` is below 5e7 (see parallel_cpu.cpp for why).
/// The first exception thrown by a task is rethrown in the caller after every thread has finished.
void parallel_for(int64_t count, double total_flops, const std::function<void(int64_t)>& task);

/// Whether parallel_for would use more than one thread for this work.
bool parallel_worthwhile(int64_t count, double total_flops);

/// Upper bound on threads for parallel_for (default: the hardware concurrency). n < 1 → 1.
void set_max_threads(int n);
int max_threads();

/// Threads that native work started by the calling thread may use: 0 = automatic (parallel_for
/// up to max_threads(), BLAS/LAPACK threaded above kBlasParallelMinFlops), k ≥ 1 = at most k for
/// both. Inside a training loop the framework's threads hold every core and spin between ops;
/// any helper thread of ours (or OpenBLAS's, which then spin too) fights them for the cores.
int thread_budget();

/// Sets the calling thread's thread_budget() for the scope's lifetime.
class ThreadBudgetScope {
 public:
  explicit ThreadBudgetScope(int threads);
  ~ThreadBudgetScope();
  ThreadBudgetScope(const ThreadBudgetScope&) = delete;
  ThreadBudgetScope& operator=(const ThreadBudgetScope&) = delete;

 private:
  int previous_;
};

}  // namespace ndt
