// Error checks of CUDA runtime calls (private to csrc/cuda). A failing call throws
// std::runtime_error naming the call, the error and file:line (RuntimeError in Python). Argument
// checks stay NDT_CHECK_ARG (ndt/check.h); this is only for what the runtime reports.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace ndt::cuda::detail {

[[noreturn]] inline void throw_cuda(const char* file, int line, const char* expr, const std::string& what) {
  std::ostringstream os;
  os << "CUDA error: " << expr << " failed: " << what << " [" << file << ":" << line << "]";
  throw std::runtime_error(os.str());
}

inline cudaStream_t to_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

/// Makes `device` current for the scope and restores the previous one (no synchronisation).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    if (previous_ != device) {
      const cudaError_t e = cudaSetDevice(device);
      if (e != cudaSuccess) throw_cuda(__FILE__, __LINE__, "cudaSetDevice", cudaGetErrorString(e));
    }
  }
  ~DeviceGuard() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace ndt::cuda::detail

#define NDT_CHECK_CUDA(expr)                                                                  \
  do {                                                                                        \
    const cudaError_t ndt_cuda_err_ = (expr);                                                 \
    if (ndt_cuda_err_ != cudaSuccess)                                                         \
      ::ndt::cuda::detail::throw_cuda(__FILE__, __LINE__, #expr, cudaGetErrorString(ndt_cuda_err_)); \
  } while (0)

// After a kernel launch: reports launch-configuration errors (not errors of the running kernel,
// which would need a synchronisation; those surface at the caller's next synchronising call).
#define NDT_CHECK_LAUNCH() NDT_CHECK_CUDA(cudaGetLastError())
