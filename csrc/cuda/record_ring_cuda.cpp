// PinnedRecordRing (ndt/cuda/device.h): device records copied into pinned host slots, each slot
// completed by an event, drained without waiting — the device counterpart of record_ring_cpu.cpp.
// Host code.
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

struct PinnedRecordRing::Impl {
  double* host = nullptr;  // slots × slot_records × width, pinned
  std::vector<cudaEvent_t> events;
  std::vector<int64_t> counts, tags;
  int64_t head = 0, size = 0, dropped = 0;
  mutable std::mutex mutex;
};

PinnedRecordRing::PinnedRecordRing(int64_t slots, int64_t slot_records, int64_t width)
    : slots_(slots), slot_records_(slot_records), width_(width), impl_(std::make_unique<Impl>()) {
  NDT_CHECK_ARG(slots >= 1 && slot_records >= 1 && width >= 1,
                "PinnedRecordRing: slots, slot_records and width must be >= 1");
  NDT_CHECK_ARG(slots * slot_records * width <= (int64_t{1} << 31), "PinnedRecordRing: too large");
  const size_t bytes = static_cast<size_t>(slots * slot_records * width) * sizeof(double);
  NDT_CHECK_CUDA(cudaHostAlloc(reinterpret_cast<void**>(&impl_->host), bytes, cudaHostAllocDefault));
  impl_->events.resize(static_cast<size_t>(slots), nullptr);
  impl_->counts.assign(static_cast<size_t>(slots), 0);
  impl_->tags.assign(static_cast<size_t>(slots), 0);
  for (cudaEvent_t& e : impl_->events) {
    const cudaError_t err = cudaEventCreateWithFlags(&e, cudaEventDisableTiming);
    if (err != cudaSuccess) {
      for (cudaEvent_t made : impl_->events)
        if (made) (void)cudaEventDestroy(made);
      (void)cudaFreeHost(impl_->host);
      detail::throw_cuda(__FILE__, __LINE__, "cudaEventCreateWithFlags", cudaGetErrorString(err));
    }
  }
}

PinnedRecordRing::~PinnedRecordRing() {
  for (int64_t i = 0; i < impl_->size; ++i)  // copies still in flight write into `host`
    (void)cudaEventSynchronize(impl_->events[static_cast<size_t>((impl_->head + i) % slots_)]);
  for (cudaEvent_t e : impl_->events) (void)cudaEventDestroy(e);
  (void)cudaFreeHost(impl_->host);
}

bool PinnedRecordRing::push(const double* records, int64_t count, int64_t tag, Stream stream) {
  NDT_CHECK_ARG(records != nullptr, "PinnedRecordRing.push: null records");
  NDT_CHECK_ARG(count >= 1 && count <= slot_records_,
                "PinnedRecordRing.push: count " << count << " not in [1, " << slot_records_ << "]");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  if (impl_->size == slots_) {
    ++impl_->dropped;
    return false;
  }
  const int64_t slot = (impl_->head + impl_->size) % slots_;
  double* dst = impl_->host + slot * slot_records_ * width_;
  const cudaStream_t s = detail::to_stream(stream);
  // Device → pinned host: truly asynchronous (pageable memory would make it synchronous).
  NDT_CHECK_CUDA(cudaMemcpyAsync(dst, records, static_cast<size_t>(count * width_) * sizeof(double),
                                 cudaMemcpyDeviceToHost, s));
  NDT_CHECK_CUDA(cudaEventRecord(impl_->events[static_cast<size_t>(slot)], s));
  impl_->counts[static_cast<size_t>(slot)] = count;
  impl_->tags[static_cast<size_t>(slot)] = tag;
  ++impl_->size;
  return true;
}

int64_t PinnedRecordRing::pop(double* out, int64_t* tags, int64_t max_records) {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  int64_t written = 0;
  while (impl_->size > 0) {
    const auto slot = static_cast<size_t>(impl_->head);
    const cudaError_t state = cudaEventQuery(impl_->events[slot]);
    if (state == cudaErrorNotReady) {
      (void)cudaGetLastError();  // cudaErrorNotReady is not an error; do not leave it behind
      break;
    }
    if (state != cudaSuccess) detail::throw_cuda(__FILE__, __LINE__, "cudaEventQuery", cudaGetErrorString(state));
    const int64_t count = impl_->counts[slot];
    if (written + count > max_records) break;
    std::memcpy(out + written * width_, impl_->host + impl_->head * slot_records_ * width_,
                static_cast<size_t>(count * width_) * sizeof(double));
    std::fill(tags + written, tags + written + count, impl_->tags[slot]);
    written += count;
    impl_->head = (impl_->head + 1) % slots_;
    --impl_->size;
  }
  return written;
}

int64_t PinnedRecordRing::pending() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->size;
}

int64_t PinnedRecordRing::dropped() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->dropped;
}

}  // namespace ndt::cuda
