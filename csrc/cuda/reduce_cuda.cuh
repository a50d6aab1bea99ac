// Block-wide reductions for the batched kernels (private to csrc/cuda). Every thread of the
// block must call them (they contain __syncthreads); every thread gets the result.
#pragma once

namespace ndt::cuda::detail {

constexpr int kBlockThreads = 256;  // block size of every batched kernel
constexpr int kWarps = kBlockThreads / 32;

struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct MaxOp {
  __device__ double operator()(double a, double b) const { return a > b ? a : b; }
};
struct MinIntOp {
  __device__ int operator()(int a, int b) const { return a < b ? a : b; }
};

template <typename T, typename Op>
__device__ T block_reduce(T value, Op op, T* scratch /* kWarps elements of shared memory */) {
  const int lane = static_cast<int>(threadIdx.x) & 31, warp = static_cast<int>(threadIdx.x) >> 5;
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  T total = scratch[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) total = op(total, scratch[w]);
  return total;
}

}  // namespace ndt::cuda::detail
