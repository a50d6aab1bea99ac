// cuBLAS and cuSOLVER, opened at run time, and the per-device Context that holds their handles.
//
// Why dlopen rather than linking: a wheel built with CUDA must still import on a machine without
// a GPU, without torch, or before torch is imported; a DT_NEEDED entry on libcublas.so.13 would
// make `import ndt_fast` fail there. With dlopen the extension depends on nothing new at load
// time, and in a training process it simply reuses the copies that torch (CUDA build) has already
// loaded: dlopen of a soname that is already loaded returns that library. Compiled by the host
// C++ compiler; the headers come from the CUDA toolkit or from the build environment's
// nvidia/cu13/include (see CMakeLists.txt), only their declarations are used.
//
// NEVER RUN: compiled only (no GPU in the writing session).
#include "math_libraries_cuda.h"

#include <dlfcn.h>

#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "check_cuda.h"
#include "ndt/check.h"

#if defined(NDT_CUDA_MATH_HEADERS)
#include <cublas_v2.h>
#include <cusolverDn.h>
#endif

namespace ndt::cuda {

#if defined(NDT_CUDA_MATH_HEADERS)

struct Context::Handles {
  cublasHandle_t cublas = nullptr;
  cusolverDnHandle_t cusolver = nullptr;
  syevjInfo_t syevj = nullptr;
};

namespace detail {
namespace {

// Function-pointer tables, typed by the headers' own declarations (decltype), filled by dlsym.
#define NDT_CUBLAS_FUNCTIONS(X) \
  X(cublasCreate_v2)            \
  X(cublasDestroy_v2)           \
  X(cublasSetStream_v2)         \
  X(cublasSetMathMode)          \
  X(cublasSsyrk_v2)
#define NDT_CUSOLVER_FUNCTIONS(X)        \
  X(cusolverDnCreate)                    \
  X(cusolverDnDestroy)                   \
  X(cusolverDnSetStream)                 \
  X(cusolverDnDsyevd_bufferSize)         \
  X(cusolverDnDsyevd)                    \
  X(cusolverDnCreateSyevjInfo)           \
  X(cusolverDnDestroySyevjInfo)          \
  X(cusolverDnXsyevjSetSortEig)          \
  X(cusolverDnDsyevjBatched_bufferSize)  \
  X(cusolverDnDsyevjBatched)
#define NDT_DECLARE_POINTER(name) decltype(&::name) name = nullptr;

// cublasGemmEx is overloaded in C++ (a static inline shim takes a cudaDataType compute type), so
// decltype needs the exported overload named.
using cublas_gemm_ex_fn = cublasStatus_t (*)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                                             const void*, const void*, cudaDataType, int, const void*, cudaDataType,
                                             int, const void*, void*, cudaDataType, int, cublasComputeType_t,
                                             cublasGemmAlgo_t);

struct Cublas {
  NDT_CUBLAS_FUNCTIONS(NDT_DECLARE_POINTER)
  cublas_gemm_ex_fn cublasGemmEx = nullptr;
  bool loaded = false;
};
struct Cusolver {
  NDT_CUSOLVER_FUNCTIONS(NDT_DECLARE_POINTER)
  bool loaded = false;
};

struct Libraries {
  std::mutex mutex;
  Cublas cublas;
  Cusolver cusolver;
  std::string reason;  // what failed, for availability()
};

Libraries& libraries() {
  static Libraries* instance = new Libraries();  // never destroyed: other statics may use it at exit
  return *instance;
}

// The soname's major version is the one of the headers compiled against: libcublas.so.13 and
// libcusolver.so.12 for CUDA 13.
std::string cublas_soname() { return "libcublas.so." + std::to_string(CUBLAS_VER_MAJOR); }
std::string cusolver_soname() { return "libcusolver.so." + std::to_string(CUSOLVER_VER_MAJOR); }

void* open_library(const std::string& soname, const std::vector<std::string>& dirs, std::string* error) {
  // 1. already loaded in this process (by torch), 2. the loader's search path, 3. the given dirs.
  void* handle = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  if (handle == nullptr) handle = dlopen(soname.c_str(), RTLD_NOW | RTLD_LOCAL);
  for (size_t i = 0; handle == nullptr && i < dirs.size(); ++i)
    handle = dlopen((dirs[i] + "/" + soname).c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* message = dlerror();
    *error += soname + " not found (" + (message ? message : "no dlerror") + "); ";
  }
  return handle;  // deliberately never dlclose'd: the pointers live as long as the process
}

template <typename Fn>
bool resolve(void* handle, const char* name, Fn* out, std::string* error) {
  *out = reinterpret_cast<Fn>(dlsym(handle, name));
  if (*out == nullptr) *error += std::string("symbol ") + name + " missing; ";
  return *out != nullptr;
}

void load_locked(Libraries& lib, const std::vector<std::string>& dirs) {
  std::string error;
  if (!lib.cublas.loaded) {
    if (void* h = open_library(cublas_soname(), dirs, &error)) {
      bool ok = true;
#define NDT_RESOLVE_CUBLAS(name) ok = resolve(h, #name, &lib.cublas.name, &error) && ok;
      NDT_CUBLAS_FUNCTIONS(NDT_RESOLVE_CUBLAS)
#undef NDT_RESOLVE_CUBLAS
      ok = resolve(h, "cublasGemmEx", &lib.cublas.cublasGemmEx, &error) && ok;
      lib.cublas.loaded = ok;
    }
  }
  if (!lib.cusolver.loaded) {
    if (void* h = open_library(cusolver_soname(), dirs, &error)) {
      bool ok = true;
#define NDT_RESOLVE_CUSOLVER(name) ok = resolve(h, #name, &lib.cusolver.name, &error) && ok;
      NDT_CUSOLVER_FUNCTIONS(NDT_RESOLVE_CUSOLVER)
#undef NDT_RESOLVE_CUSOLVER
      lib.cusolver.loaded = ok;
    }
  }
  lib.reason = error;
}

const Cublas& cublas() {
  const Libraries& lib = libraries();
  NDT_CHECK_ARG(lib.cublas.loaded, "cuBLAS is not loaded (" << lib.reason << "); call load_math_libraries first");
  return lib.cublas;
}

const Cusolver& cusolver() {
  const Libraries& lib = libraries();
  NDT_CHECK_ARG(lib.cusolver.loaded,
                "cuSOLVER is not loaded (" << lib.reason << "); call load_math_libraries first");
  return lib.cusolver;
}

#define NDT_CHECK_MATH(expr)                                                                     \
  do {                                                                                           \
    const int ndt_math_status_ = static_cast<int>(expr);                                         \
    if (ndt_math_status_ != 0)                                                                   \
      ::ndt::cuda::detail::throw_cuda(__FILE__, __LINE__, #expr,                                 \
                                      "status " + std::to_string(ndt_math_status_));             \
  } while (0)

}  // namespace

bool cublas_loaded() { return libraries().cublas.loaded; }
bool cusolver_loaded() { return libraries().cusolver.loaded; }
bool math_headers_compiled() { return true; }

void cublas_gram(Context::Handles& h, const GramOperand& m, float* gram, float beta, cudaStream_t stream) {
  const Cublas& f = cublas();
  NDT_ASSERT(h.cublas != nullptr, "cuBLAS handle missing");
  NDT_CHECK_MATH(f.cublasSetStream_v2(h.cublas, stream));
  const float one = 1.0f;
  const int n = m.transpose ? m.cols : m.rows;
  const int k = m.transpose ? m.rows : m.cols;
  if (m.dtype == DType::float32) {
    // syrk: only the lower triangle, half the flops of a GEMM.
    NDT_CHECK_MATH(f.cublasSsyrk_v2(h.cublas, CUBLAS_FILL_MODE_LOWER, m.transpose ? CUBLAS_OP_T : CUBLAS_OP_N, n, k,
                                    &one, static_cast<const float*>(m.data), m.ld, &beta, gram, n));
    return;
  }
  // 16-bit inputs: cuBLAS has no 16-bit-input syrk, so a GEMM on the tensor cores computes both
  // triangles (products of 16-bit values are exact in float32; accumulation in float32).
  const cudaDataType type = m.dtype == DType::float16 ? CUDA_R_16F : CUDA_R_16BF;
  const cublasOperation_t op_a = m.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = m.transpose ? CUBLAS_OP_N : CUBLAS_OP_T;
  NDT_CHECK_MATH(f.cublasGemmEx(h.cublas, op_a, op_b, n, n, k, &one, m.data, type, m.ld, m.data, type, m.ld, &beta,
                                gram, CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

int syevd_work_size(Context::Handles& h, int n) {
  const Cusolver& f = cusolver();
  int lwork = 0;
  // Null matrix pointers: only the sizes matter to the query (UNVERIFIED on a GPU).
  NDT_CHECK_MATH(f.cusolverDnDsyevd_bufferSize(h.cusolver, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n,
                                               nullptr, n, nullptr, &lwork));
  return lwork;
}

void syevd(Context::Handles& h, int n, double* a, double* w, double* work, int lwork, int* info,
           cudaStream_t stream) {
  const Cusolver& f = cusolver();
  NDT_CHECK_MATH(f.cusolverDnSetStream(h.cusolver, stream));
  NDT_CHECK_MATH(f.cusolverDnDsyevd(h.cusolver, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w, work,
                                    lwork, info));
}

int syevj_batched_work_size(Context::Handles& h, int n, int batch) {
  const Cusolver& f = cusolver();
  int lwork = 0;
  NDT_CHECK_MATH(f.cusolverDnDsyevjBatched_bufferSize(h.cusolver, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER,
                                                      n, nullptr, n, nullptr, &lwork, h.syevj, batch));
  return lwork;
}

void syevj_batched(Context::Handles& h, int n, int batch, double* a, double* w, double* work, int lwork, int* info,
                   cudaStream_t stream) {
  const Cusolver& f = cusolver();
  NDT_CHECK_MATH(f.cusolverDnSetStream(h.cusolver, stream));
  NDT_CHECK_MATH(f.cusolverDnDsyevjBatched(h.cusolver, CUSOLVER_EIG_MODE_NOVECTOR, CUBLAS_FILL_MODE_LOWER, n, a, n, w,
                                           work, lwork, info, h.syevj, batch));
}

}  // namespace detail

Availability load_math_libraries(const std::vector<std::string>& search_dirs) {
  {
    detail::Libraries& lib = detail::libraries();
    std::lock_guard<std::mutex> lock(lib.mutex);
    detail::load_locked(lib, search_dirs);
  }
  return availability();
}

namespace {

// Destroys whichever handles exist (a constructor that failed half-way, or the destructor);
// never throws: a broken context leaks them instead.
void release_handles(Context::Handles& handles, int device) noexcept {
  try {
    detail::DeviceGuard guard(device);
    const detail::Libraries& lib = detail::libraries();
    if (handles.syevj) lib.cusolver.cusolverDnDestroySyevjInfo(handles.syevj);
    if (handles.cusolver) lib.cusolver.cusolverDnDestroy(handles.cusolver);
    if (handles.cublas) lib.cublas.cublasDestroy_v2(handles.cublas);
  } catch (...) {
  }
  handles = Context::Handles{};
}

}  // namespace

Context::Context(int device) : device_(device), handles_(std::make_unique<Handles>()) {
  int count = 0;
  NDT_CHECK_CUDA(cudaGetDeviceCount(&count));
  NDT_CHECK_ARG(device >= 0 && device < count, "CUDA device " << device << " does not exist (" << count << " found)");
  detail::DeviceGuard guard(device);
  // Handles allocate device memory: created here, once, never on the training path.
  const detail::Libraries& lib = detail::libraries();
  try {
    if (lib.cublas.loaded) {
      NDT_CHECK_MATH(lib.cublas.cublasCreate_v2(&handles_->cublas));
      // Default math: tensor cores for 16-bit inputs; float32 stays IEEE float32 (no TF32, which
      // would need CUBLAS_TF32_TENSOR_OP_MATH or NVIDIA_TF32_OVERRIDE=1 in the environment).
      NDT_CHECK_MATH(lib.cublas.cublasSetMathMode(handles_->cublas, CUBLAS_DEFAULT_MATH));
    }
    if (lib.cusolver.loaded) {
      NDT_CHECK_MATH(lib.cusolver.cusolverDnCreate(&handles_->cusolver));
      NDT_CHECK_MATH(lib.cusolver.cusolverDnCreateSyevjInfo(&handles_->syevj));
      NDT_CHECK_MATH(lib.cusolver.cusolverDnXsyevjSetSortEig(handles_->syevj, 1));  // ascending
    }
  } catch (...) {  // the destructor does not run for a constructor that throws
    release_handles(*handles_, device_);
    throw;
  }
}

Context::~Context() { release_handles(*handles_, device_); }

bool Context::has_cublas() const { return handles_->cublas != nullptr; }
bool Context::has_cusolver() const { return handles_->cusolver != nullptr; }

#else  // !NDT_CUDA_MATH_HEADERS: the own kernels only

struct Context::Handles {};

namespace detail {

bool cublas_loaded() { return false; }
bool cusolver_loaded() { return false; }
bool math_headers_compiled() { return false; }

void cublas_gram(Context::Handles&, const GramOperand&, float*, float, cudaStream_t) {
  NDT_ASSERT(false, "cuBLAS path called in a build without cuBLAS headers");
}
int syevd_work_size(Context::Handles&, int) {
  NDT_CHECK_ARG(false, "this build of ndt_fast has no cuSOLVER (headers not found at build time)");
  return 0;
}
void syevd(Context::Handles&, int, double*, double*, double*, int, int*, cudaStream_t) {
  NDT_ASSERT(false, "cuSOLVER path called in a build without cuSOLVER headers");
}
int syevj_batched_work_size(Context::Handles&, int, int) {
  NDT_CHECK_ARG(false, "this build of ndt_fast has no cuSOLVER (headers not found at build time)");
  return 0;
}
void syevj_batched(Context::Handles&, int, int, double*, double*, double*, int, int*, cudaStream_t) {
  NDT_ASSERT(false, "cuSOLVER path called in a build without cuSOLVER headers");
}

}  // namespace detail

Availability load_math_libraries(const std::vector<std::string>&) { return availability(); }

Context::Context(int device) : device_(device), handles_(std::make_unique<Handles>()) {
  int count = 0;
  NDT_CHECK_CUDA(cudaGetDeviceCount(&count));
  NDT_CHECK_ARG(device >= 0 && device < count, "CUDA device " << device << " does not exist (" << count << " found)");
}
Context::~Context() = default;
bool Context::has_cublas() const { return false; }
bool Context::has_cusolver() const { return false; }

#endif  // NDT_CUDA_MATH_HEADERS

Availability availability() {
  Availability a;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    a.reason = std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorString(e) + ")";
    (void)cudaGetLastError();  // not sticky: clear it so that later calls do not report it
    count = 0;
  } else if (count == 0) {
    a.reason = "no CUDA device";
  }
  a.device_count = count;
  a.math_headers = detail::math_headers_compiled();
  a.cublas = detail::cublas_loaded();
  a.cusolver = detail::cusolver_loaded();
  if (a.reason.empty() && !a.math_headers)
    a.reason = "built without cuBLAS/cuSOLVER headers: own kernels only (dims <= 64)";
#if defined(NDT_CUDA_MATH_HEADERS)
  if (a.reason.empty() && !(a.cublas && a.cusolver)) {
    const detail::Libraries& lib = detail::libraries();
    a.reason = "cuBLAS/cuSOLVER not loaded: " + (lib.reason.empty() ? std::string("load_math_libraries not called") : lib.reason);
  }
#endif
  return a;
}

}  // namespace ndt::cuda
