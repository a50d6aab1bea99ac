// SpectraPlan (ndt/cuda/device.h): the batched Gram → eigenvalues → metrics plan of the device,
// its workspace layout and the choice between the own Jacobi kernel (eigen_cuda.cu) and cuSOLVER;
// the device counterpart of metrics_of_accumulators (metrics_cpu.cpp). Host code.
//
// Rule kept everywhere below: nothing waits for the device and nothing reads device memory on the
// host; allocation is the caller's (torch's stream-ordered caching allocator) or happens once in
// a constructor.
//
// NEVER RUN: compiled only (no GPU in the writing session).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <mutex>

#include "check_cuda.h"
#include "kernels_cuda.h"
#include "math_libraries_cuda.h"
#include "ndt/check.h"
#include "ndt/cuda/device.h"

namespace ndt::cuda {
namespace {

constexpr int kJacobiMaxSweeps = 30;
constexpr size_t kAlign = 256;  // cudaMalloc's alignment; every workspace region starts on it

size_t align_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }


}  // namespace

SpectraPlan::SpectraPlan(Context& ctx, std::vector<int64_t> dims, const MetricOptions& options,
                         DeviceSolver solver)
    : dims_(std::move(dims)), options_(options), solver_(solver) {
  validate(options_);
  NDT_CHECK_ARG(!options_.center, "the CUDA path does not centre (center=True); use the CPU path for that");
  NDT_CHECK_ARG(!dims_.empty(), "SpectraPlan: no Grams");
  for (int64_t n : dims_) NDT_CHECK_ARG(n >= 1 && n <= 46340, "SpectraPlan: Gram dimension " << n << " out of [1, 46340]");

  // Which solver takes each Gram; equal small dims under the cusolver solver share one
  // syevjBatched call, so they are laid out back to back.
  std::map<int64_t, size_t> group_of_dim;
  jobs_.resize(dims_.size());
  for (size_t k = 0; k < dims_.size(); ++k) {
    const int64_t n = dims_[k];
    jobs_[k].n = n;
    const bool jacobi = solver_ == DeviceSolver::own_jacobi || (solver_ == DeviceSolver::automatic && n <= kJacobiMaxDim);
    if (jacobi) {
      NDT_CHECK_ARG(n <= kJacobiMaxDim, "own_jacobi solver: dimension " << n << " > " << kJacobiMaxDim);
      continue;
    }
    NDT_CHECK_ARG(ctx.has_cusolver(), "Gram dimension " << n << " needs cuSOLVER, which is not available ("
                                                         << availability().reason << ")");
    if (solver_ == DeviceSolver::cusolver && n <= kSyevjBatchedMaxDim) {
      auto it = group_of_dim.find(n);
      if (it == group_of_dim.end()) {
        it = group_of_dim.emplace(n, groups_.size()).first;
        groups_.push_back(Group{n, {}});
      }
      groups_[it->second].jobs.push_back(k);
      jobs_[k].group = static_cast<int>(it->second);
    }
  }

  size_t offset = 0;
  auto take = [&](size_t bytes) {
    const size_t at = offset;
    offset += align_up(bytes);
    return at;
  };
  for (const Group& g : groups_) {
    const size_t batch = g.jobs.size(), nn = static_cast<size_t>(g.n * g.n);
    const size_t a = take(batch * nn * sizeof(double)), w = take(batch * g.n * sizeof(double)),
                 info = take(batch * sizeof(int));
    for (size_t b = 0; b < batch; ++b) {
      Job& job = jobs_[g.jobs[b]];
      job.a_offset = a + b * nn * sizeof(double);
      job.w_offset = w + b * g.n * sizeof(double);
      job.info_offset = info + b * sizeof(int);
    }
  }
  int lwork = 0;
  for (size_t k = 0; k < jobs_.size(); ++k) {
    Job& job = jobs_[k];
    if (job.group < 0) {
      job.a_offset = take(static_cast<size_t>(job.n * job.n) * sizeof(double));
      job.w_offset = take(static_cast<size_t>(job.n) * sizeof(double));
      job.info_offset = take(sizeof(int));
      const bool jacobi = solver_ == DeviceSolver::own_jacobi || (solver_ == DeviceSolver::automatic && job.n <= kJacobiMaxDim);
      if (!jacobi) lwork = std::max(lwork, detail::syevd_work_size(ctx.handles(), static_cast<int>(job.n)));
    }
    job.prelude_offset = take(detail::kPreludeWidth * sizeof(double));
  }
  for (const Group& g : groups_)
    lwork = std::max(lwork, detail::syevj_batched_work_size(ctx.handles(), static_cast<int>(g.n),
                                                            static_cast<int>(g.jobs.size())));
  // One cuSOLVER workspace for every call: they run one after another on the same stream.
  syevd_lwork_ = lwork;
  syevd_work_offset_ = take(static_cast<size_t>(std::max(lwork, 1)) * sizeof(double));
  workspace_bytes_ = offset;
}

void SpectraPlan::solve(Context& ctx, const float* const* grams, char* base, Stream stream) const {
  const cudaStream_t s = detail::to_stream(stream);
  auto pointers = [&](size_t k) {
    const Job& job = jobs_[k];
    detail::JobPointers p{};
    p.gram = grams[k];
    p.a = reinterpret_cast<double*>(base + job.a_offset);
    p.w = reinterpret_cast<double*>(base + job.w_offset);
    p.info = reinterpret_cast<int*>(base + job.info_offset);
    p.prelude = reinterpret_cast<double*>(base + job.prelude_offset);
    p.record = nullptr;
    p.n = static_cast<int>(job.n);
    return p;
  };
  // Batched launches over a subset of jobs, kMaxJobsPerLaunch at a time.
  auto for_batches = [&](auto&& select, auto&& launch) {
    detail::BatchArgs args;
    for (size_t k = 0; k < jobs_.size(); ++k) {
      if (!select(k)) continue;
      args.job[args.count++] = pointers(k);
      if (args.count == detail::kMaxJobsPerLaunch) {
        launch(args);
        args.count = 0;
      }
    }
    if (args.count > 0) launch(args);
  };
  for (size_t k = 0; k < jobs_.size(); ++k) NDT_CHECK_ARG(grams[k] != nullptr, "SpectraPlan: null Gram " << k);

  for_batches([](size_t) { return true; }, [&](const detail::BatchArgs& a) { detail::launch_prepare(a, s); });
  auto is_jacobi = [&](size_t k) {
    return solver_ == DeviceSolver::own_jacobi || (solver_ == DeviceSolver::automatic && jobs_[k].n <= kJacobiMaxDim);
  };
  for_batches(is_jacobi, [&](const detail::BatchArgs& a) { detail::launch_jacobi(a, kJacobiMaxSweeps, s); });
  double* work = reinterpret_cast<double*>(base + syevd_work_offset_);
  for (const Group& g : groups_) {
    const Job& first = jobs_[g.jobs.front()];
    detail::syevj_batched(ctx.handles(), static_cast<int>(g.n), static_cast<int>(g.jobs.size()),
                          reinterpret_cast<double*>(base + first.a_offset), reinterpret_cast<double*>(base + first.w_offset),
                          work, syevd_lwork_, reinterpret_cast<int*>(base + first.info_offset), s);
  }
  for (size_t k = 0; k < jobs_.size(); ++k) {
    const Job& job = jobs_[k];
    if (is_jacobi(k) || job.group >= 0) continue;
    detail::syevd(ctx.handles(), static_cast<int>(job.n), reinterpret_cast<double*>(base + job.a_offset),
                  reinterpret_cast<double*>(base + job.w_offset), work, syevd_lwork_,
                  reinterpret_cast<int*>(base + job.info_offset), s);
  }
}

void SpectraPlan::run(Context& ctx, const float* const* grams, void* workspace, double* records, Stream stream) const {
  NDT_CHECK_ARG(workspace != nullptr && records != nullptr, "SpectraPlan.run: null workspace or records");
  NDT_CHECK_ARG(reinterpret_cast<std::uintptr_t>(workspace) % kAlign == 0,
                "SpectraPlan.run: workspace must be " << kAlign << "-byte aligned");
  detail::DeviceGuard guard(ctx.device());
  char* base = static_cast<char*>(workspace);
  solve(ctx, grams, base, stream);
  detail::BatchArgs args;
  const detail::MetricArgs metric{options_.eps, options_.energy_threshold, options_.metrics};
  for (size_t k = 0; k < jobs_.size(); ++k) {
    const Job& job = jobs_[k];
    detail::JobPointers& p = args.job[args.count++];
    p = detail::JobPointers{};
    p.gram = grams[k];
    p.w = reinterpret_cast<double*>(base + job.w_offset);
    p.info = reinterpret_cast<int*>(base + job.info_offset);
    p.prelude = reinterpret_cast<double*>(base + job.prelude_offset);
    p.record = records + k * kRecordWidth;
    p.n = static_cast<int>(job.n);
    if (args.count == detail::kMaxJobsPerLaunch || k + 1 == jobs_.size()) {
      detail::launch_metrics(args, metric, detail::to_stream(stream));
      args.count = 0;
    }
  }
}

void SpectraPlan::eigenvalues(Context& ctx, const float* const* grams, void* workspace, double* const* lambdas,
                              int* const* infos, Stream stream) const {
  NDT_CHECK_ARG(workspace != nullptr, "SpectraPlan.eigenvalues: null workspace");
  detail::DeviceGuard guard(ctx.device());
  char* base = static_cast<char*>(workspace);
  solve(ctx, grams, base, stream);
  const cudaStream_t s = detail::to_stream(stream);
  for (size_t k = 0; k < jobs_.size(); ++k) {
    const Job& job = jobs_[k];
    NDT_CHECK_CUDA(cudaMemcpyAsync(lambdas[k], base + job.w_offset, static_cast<size_t>(job.n) * sizeof(double),
                                   cudaMemcpyDeviceToDevice, s));
    NDT_CHECK_CUDA(cudaMemcpyAsync(infos[k], base + job.info_offset, sizeof(int), cudaMemcpyDeviceToDevice, s));
  }
}

// ---- pinned record ring ------------------------------------------------------------------------

}  // namespace ndt::cuda
