// A non-owning description of a strided 2-D matrix: how every buffer crosses into the core.
//
// The core never sees a framework type. The binding (or a C++ caller) fills a MatrixView from a
// numpy array, a torch tensor or raw memory; the view must stay valid for the duration of the call.
#pragma once

#include <cstdint>

namespace ndt {

enum class DType : int { float32 = 0, float64 = 1, float16 = 2, bfloat16 = 3 };

/// Bytes per element of `dtype`.
inline int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::float32: return 4;
    case DType::float64: return 8;
    case DType::float16:
    case DType::bfloat16: return 2;
  }
  return 0;
}

const char* dtype_name(DType dtype);

/// Element (i, j) lives at `data + (i * row_stride + j * col_stride) * dtype_size(dtype)` bytes.
/// Strides are in elements and may be any value (zero or negative included) as long as every
/// addressed element is readable; rows >= 1 and cols >= 1 are required by the functions that take
/// one (they raise std::invalid_argument otherwise).
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::float32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t row_stride = 0;
  int64_t col_stride = 1;
};

/// Throws std::invalid_argument unless `x` describes a non-empty matrix with a non-null pointer.
void validate(const MatrixView& x, const char* what);

/// Per-column side channels of a copy (both optional, both indexed by the column of `x`):
/// `shift` is subtracted from every element of its column (in double, before rounding to T);
/// `sums` receives += the column sums of the copied (shifted) values.
struct ColumnShift {
  const double* shift = nullptr;
  double* sums = nullptr;
};

/// Copies rows [row0, row0 + nrows) of `x`, converted to T (float or double), into `out`, a
/// contiguous row-major nrows × x.cols buffer.
template <typename T>
void load_rows(const MatrixView& x, int64_t row0, int64_t nrows, T* out, const ColumnShift& columns = {});

/// Copies columns [col0, col0 + ncols) of all rows of `x`, converted to T, into `out`, a
/// contiguous row-major x.rows × ncols buffer.
template <typename T>
void load_cols(const MatrixView& x, int64_t col0, int64_t ncols, T* out, const ColumnShift& columns = {});

/// Column means of `x` (length x.cols), computed in double.
void column_means(const MatrixView& x, double* out);

}  // namespace ndt
