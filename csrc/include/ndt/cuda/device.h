// CUDA path of the native core: Gram updates, batched spectra, metrics and a pinned record ring,
// all on the caller's CUDA stream and none of them synchronising the host with the device.
//
// STATUS: compiled (nvcc 13.0, sm_90 + compute_90 PTX) but NEVER RUN — the session that wrote it
// had no GPU. See docs/CUDA.md for what a GPU session must check first.
//
// This header is free of CUDA headers on purpose: the binding file includes it and is compiled by
// the plain C++ compiler. Device memory crosses as raw pointers, streams as integers
// (`Stream`, a cudaStream_t's value, e.g. torch.cuda.current_stream().cuda_stream; 0 is the legacy
// default stream). Every device buffer is owned by the caller (in practice a torch tensor) and must
// stay valid until the work queued on `stream` has finished; being stream-ordered, torch's caching
// allocator guarantees that when the tensor was used on the same stream.
//
// Storage convention of a Gram on the device: an n × n float32 buffer in column-major order
// (cuBLAS's), of which only the lower triangle (i ≥ j, element (i, j) at gram[i + j·n]) is
// defined; as the matrix is symmetric this is also the upper triangle of the row-major matrix.
//
// Errors: bad arguments → std::invalid_argument (ValueError in Python), a failing CUDA/cuBLAS/
// cuSOLVER call → std::runtime_error with the call, its status and file:line. No function here
// reads a solver status on the host: non-convergence reaches the records as kFlagNotConverged.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ndt/gram.h"
#include "ndt/matrix_view.h"
#include "ndt/metrics.h"

namespace ndt::cuda {

using Stream = std::uintptr_t;

/// Record layout on the device: kRecordWidth float64 per matrix, the columns of the CPU records
/// (stable_rank, participation_ratio, cumulative_90, nuclear_norm_ratio, participation_ratio_eig,
/// effective_rank, trace, lambda_max, flags); flags as a float64 holding the MetricFlags bits.
constexpr int kRecordWidth = 9;

/// Largest dimension of the core's own batched Jacobi eigensolver (one thread block per matrix,
/// the matrix in float64 shared memory: 64² · 8 B = 32 KiB).
constexpr int64_t kJacobiMaxDim = 64;

/// Largest dimension cusolverDnDsyevjBatched accepts.
constexpr int64_t kSyevjBatchedMaxDim = 32;

/// Which eigensolver the spectra of a batch use.
enum class DeviceSolver : int {
  automatic = 0,      ///< own Jacobi up to kJacobiMaxDim, cusolverDnDsyevd above
  own_jacobi = 1,     ///< own batched Jacobi kernel; dims above kJacobiMaxDim → std::invalid_argument
  cusolver = 2,       ///< cusolverDnDsyevjBatched for equal dims ≤ 32, cusolverDnDsyevd otherwise
};

/// What the CUDA side can do in this process. Never throws.
struct Availability {
  bool compiled = true;        ///< always true in this translation unit (see NDT_WITH_CUDA)
  int device_count = 0;        ///< cudaGetDeviceCount (0 when no driver / no device)
  bool cublas = false;         ///< cuBLAS was found and loaded (see load_math_libraries)
  bool cusolver = false;       ///< cuSOLVER was found and loaded
  bool math_headers = false;   ///< this build saw cublas_v2.h / cusolverDn.h (otherwise never loaded)
  std::string reason;          ///< why something is unavailable (empty when everything is)
};
Availability availability();

/// Makes cuBLAS and cuSOLVER usable. They are opened at run time (dlopen), never linked: the
/// extension then imports on machines without them, and uses the copies that torch (CUDA build)
/// has already loaded. Tried in order: the library already loaded in the process (by soname),
/// the dynamic loader's search path, then `<dir>/<soname>` for each of `search_dirs` (the Python
/// wrapper passes the `nvidia/cu13/lib` folder of the environment). Idempotent; returns
/// availability() afterwards. Thread-safe.
Availability load_math_libraries(const std::vector<std::string>& search_dirs);

/// Per-device handles (cuBLAS, cuSOLVER, syevj parameters). Create one per device outside the
/// training loop: creating handles allocates device memory. Calls on one Context must not run
/// concurrently from several threads (cuBLAS handles are not thread-safe with respect to
/// cublasSetStream).
class Context {
 public:
  /// `device` is a CUDA device ordinal. Throws std::runtime_error when CUDA is unusable.
  explicit Context(int device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int device() const { return device_; }
  bool has_cublas() const;
  bool has_cusolver() const;

  struct Handles;  // math_libraries_cuda.cpp
  Handles& handles() { return *handles_; }

 private:
  int device_;
  std::unique_ptr<Handles> handles_;
};

/// G ← beta·G + XᵀX (side feature, G is x.cols × x.cols) or XXᵀ (side sample, x.rows × x.rows),
/// with X the device matrix `x` (float32, float16 or bfloat16; float64 is read by the own kernel
/// only and rounded to float32 there) and G a float32 device buffer in the storage convention above, on `stream`. beta is 0 (fresh
/// Gram) or 1 (accumulate). Products accumulate in float32; 16-bit inputs use tensor cores.
///
/// Paths: cuBLAS when loaded and x has one unit stride (row- or column-major with any leading
/// dimension): cublasSsyrk for float32 (only the lower triangle is computed, TF32 off),
/// cublasGemmEx for 16-bit inputs (full matrix; no 16-bit-input syrk exists); otherwise (or with
/// `use_cublas = false`) the core's own tiled kernel, any strides, lower triangle only. Both are
/// asynchronous. Dimensions must fit a 32-bit int.
void gram_update(Context& ctx, const MatrixView& x, GramSide side, float* gram, float beta, Stream stream,
                 bool use_cublas = true);

/// Batched "spectra + metrics" of many Grams (one per tracked layer), sized once per set of
/// dimensions. Holds no device memory: the caller allocates `workspace_bytes()` bytes of device
/// memory (alignment ≥ 256 B, e.g. a torch uint8 tensor) and passes it to run().
class SpectraPlan {
 public:
  /// dims[k] ≥ 1 is the dimension of Gram k. Throws std::invalid_argument for a dim the chosen
  /// solver cannot take (or cuSOLVER not loaded where needed), or for center = true (the device
  /// path does not centre; see docs/CUDA.md), or invalid options.
  SpectraPlan(Context& ctx, std::vector<int64_t> dims, const MetricOptions& options,
              DeviceSolver solver = DeviceSolver::automatic);

  size_t workspace_bytes() const { return workspace_bytes_; }
  int64_t count() const { return static_cast<int64_t>(dims_.size()); }
  const std::vector<int64_t>& dims() const { return dims_; }

  /// For each k: reads Gram grams[k] (storage convention above, not modified), computes its
  /// eigenvalues in float64 and the metrics, and writes record k (kRecordWidth float64) to
  /// records + k·kRecordWidth (device). Everything is queued on `stream`; nothing is read back.
  /// A Gram with NaN/Inf → NaN metrics with kFlagNonFinite; the zero Gram → zeros with kFlagZero;
  /// a solver that did not converge (its device `info` ≠ 0) or a non-finite eigenvalue → NaN
  /// metrics with kFlagNotConverged (resp. kFlagNonFinite). Metrics not asked for are NaN.
  void run(Context& ctx, const float* const* grams, void* workspace, double* records, Stream stream) const;

  /// Eigenvalues only (ascending, float64), for tests: lambdas[k] (dims[k] doubles, device).
  /// Same work as run() minus the metrics kernel; solver infos are written to infos[k] (device int).
  void eigenvalues(Context& ctx, const float* const* grams, void* workspace, double* const* lambdas,
                   int* const* infos, Stream stream) const;

 private:
  struct Job {
    int64_t n;
    size_t a_offset;       // float64 n × n, full symmetric copy (destroyed by the solver)
    size_t w_offset;       // float64 n eigenvalues, ascending
    size_t info_offset;    // int solver status
    size_t prelude_offset; // Prelude (trace, PR_eig, flags) of metrics_cuda
    int group = -1;        // syevjBatched group (cusolver solver, equal dims ≤ 32), else -1
  };
  struct Group {           // matrices solved by one cusolverDnDsyevjBatched call
    int64_t n;
    std::vector<size_t> jobs;  // contiguous in the workspace: a, w and info laid out back to back
  };
  void solve(Context& ctx, const float* const* grams, char* base, Stream stream) const;

  std::vector<int64_t> dims_;
  MetricOptions options_;
  DeviceSolver solver_;
  std::vector<Job> jobs_;
  std::vector<Group> groups_;
  size_t syevd_work_offset_ = 0;  // shared cuSOLVER workspace (float64 elements)
  int syevd_lwork_ = 0;
  std::vector<size_t> group_work_offset_;
  std::vector<int> group_lwork_;
  size_t workspace_bytes_ = 0;
};

/// Pinned host ring of fixed-size record batches, filled asynchronously from the device.
///
/// The training thread calls push() (a cudaMemcpyAsync device → pinned host slot plus a
/// cudaEventRecord, both on its stream; it never waits). A writer thread calls pop(), which
/// hands over, oldest first, only the slots whose copy has completed (cudaEventQuery; it never
/// waits either). A full ring rejects the push (returns false) instead of blocking: the caller
/// counts the drop, like RecordRing. Thread-safe; one mutex, held only for bookkeeping, the
/// event query and a host memcpy of completed slots.
class PinnedRecordRing {
 public:
  /// slots ≥ 1 batches of at most slot_records records of `width` float64 each. Allocates
  /// slots · slot_records · width · 8 bytes of pinned memory (cudaHostAlloc) and one event per
  /// slot. Throws std::runtime_error when CUDA cannot allocate them.
  PinnedRecordRing(int64_t slots, int64_t slot_records, int64_t width);
  /// Waits for copies still in flight (destruction is not on the training path), then frees.
  ~PinnedRecordRing();
  PinnedRecordRing(const PinnedRecordRing&) = delete;
  PinnedRecordRing& operator=(const PinnedRecordRing&) = delete;

  /// Queues a copy of `count` (1 ≤ count ≤ slot_records) records from device memory `records`
  /// (count × width float64) into the next free slot, tagged with `tag` (e.g. the step), on
  /// `stream`. Returns false, queuing nothing, when every slot is taken.
  bool push(const double* records, int64_t count, int64_t tag, Stream stream);

  /// Moves completed slots, oldest first, into out (≤ max_records rows × width float64) and
  /// their tags, one per record, into tags; stops at the first slot still in flight or one that
  /// does not fit entirely. Returns the number of records written.
  int64_t pop(double* out, int64_t* tags, int64_t max_records);

  /// Slots pushed but not yet popped (in flight or completed).
  int64_t pending() const;
  int64_t slots() const { return slots_; }
  int64_t slot_records() const { return slot_records_; }
  int64_t width() const { return width_; }
  /// Pushes rejected because the ring was full.
  int64_t dropped() const;

 private:
  struct Impl;
  int64_t slots_, slot_records_, width_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ndt::cuda
