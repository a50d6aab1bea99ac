#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "ndt/parallel.h"

namespace ndt {
namespace {

// Below ~10 ms of work, threads cost more than they save inside a training loop: the framework's
// own threads (OpenMP spin-waiting after each op) hold the other cores, so a helper thread starts
// late and log() waits for it. Measured on the TDS MLP (2 cores, torch 2 threads): log() took
// 1.78 ms with two threads for 3 layers (64², 64², 10² Grams) against 0.59 ms with one.
constexpr double kMinParallelFlops = 5e7;

int default_threads() {
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

std::atomic<int> g_max_threads{default_threads()};
thread_local int t_thread_budget = 0;

int64_t threads_for(int64_t count) {
  const int budget = t_thread_budget;
  return std::min<int64_t>(budget > 0 ? std::min(budget, max_threads()) : max_threads(), count);
}

}  // namespace

int thread_budget() { return t_thread_budget; }

ThreadBudgetScope::ThreadBudgetScope(int threads) : previous_(t_thread_budget) {
  t_thread_budget = std::max(threads, 0);
}

ThreadBudgetScope::~ThreadBudgetScope() { t_thread_budget = previous_; }

void set_max_threads(int n) { g_max_threads.store(std::max(n, 1)); }

int max_threads() { return g_max_threads.load(); }

bool parallel_worthwhile(int64_t count, double total_flops) {
  return threads_for(count) >= 2 && total_flops >= kMinParallelFlops;
}

void parallel_for(int64_t count, double total_flops, const std::function<void(int64_t)>& task) {
  const int64_t threads = threads_for(count);
  if (!parallel_worthwhile(count, total_flops)) {
    for (int64_t i = 0; i < count; ++i) task(i);
    return;
  }
  // Tasks are claimed one at a time from a shared counter: layers differ a lot in cost. A set
  // budget is shared out: each of the `threads` workers (the caller included) gets its part.
  const int budget = t_thread_budget;
  const int worker_budget = budget > 0 ? std::max(1, budget / static_cast<int>(threads)) : 0;
  std::atomic<int64_t> next{0};
  std::exception_ptr first_error;
  std::mutex error_mutex;
  auto worker = [&] {
    const ThreadBudgetScope share(worker_budget);
    for (int64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
      try {
        task(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!first_error) first_error = std::current_exception();
      }
    }
  };
  std::vector<std::thread> helpers;
  helpers.reserve(static_cast<size_t>(threads - 1));
  for (int64_t t = 1; t < threads; ++t) helpers.emplace_back(worker);
  worker();
  for (auto& h : helpers) h.join();
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace ndt
