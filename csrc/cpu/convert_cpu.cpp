// Strided, any-dtype → contiguous float/double copies (the only place that knows element formats).
#include <algorithm>
#include <cstring>
#include <vector>
#include <type_traits>

#include "ndt/check.h"
#include "ndt/matrix_view.h"

namespace ndt {
namespace {

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0) {
    // Zero or subnormal: value = mantissa · 2⁻²⁴, exactly representable in float.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
    return sign ? -magnitude : magnitude;
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // Inf / NaN (payload kept)
  } else {
    bits = sign | ((exponent + (127 - 15)) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

float bfloat16_to_float(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

template <typename Src>
Src read_raw(const unsigned char* p) {
  Src v;
  std::memcpy(&v, p, sizeof v);  // no alignment assumption on user buffers
  return v;
}

// Reads element at byte address p as double. Converting through float is exact for 16-bit types.
template <DType D>
double read_element(const unsigned char* p) {
  if constexpr (D == DType::float32) return read_raw<float>(p);
  if constexpr (D == DType::float64) return read_raw<double>(p);
  if constexpr (D == DType::float16) return half_to_float(read_raw<uint16_t>(p));
  if constexpr (D == DType::bfloat16) return bfloat16_to_float(read_raw<uint16_t>(p));
}

template <DType D, typename T>
void copy_block(const MatrixView& x, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols,
                T* out, const ColumnShift& columns) {
  const int64_t elem = dtype_size(D);
  const auto* base = static_cast<const unsigned char*>(x.data);
  const double* shift = columns.shift ? columns.shift + col0 : nullptr;
  for (int64_t i = 0; i < nrows; ++i) {
    const unsigned char* row = base + (row0 + i) * x.row_stride * elem + col0 * x.col_stride * elem;
    T* dst = out + i * ncols;
    if constexpr ((D == DType::float32 && std::is_same_v<T, float>) ||
                  (D == DType::float64 && std::is_same_v<T, double>)) {
      if (x.col_stride == 1 && shift == nullptr) {
        std::memcpy(dst, row, static_cast<size_t>(ncols) * sizeof(T));
        continue;
      }
    }
    const int64_t step = x.col_stride * elem;
    if (shift) {
      for (int64_t j = 0; j < ncols; ++j) dst[j] = static_cast<T>(read_element<D>(row + j * step) - shift[j]);
    } else {
      for (int64_t j = 0; j < ncols; ++j) dst[j] = static_cast<T>(read_element<D>(row + j * step));
    }
  }
  if (columns.sums) {
    double* sums = columns.sums + col0;
    for (int64_t i = 0; i < nrows; ++i) {
      const T* src = out + i * ncols;
      for (int64_t j = 0; j < ncols; ++j) sums[j] += static_cast<double>(src[j]);
    }
  }
}

template <typename T>
void copy_block_any(const MatrixView& x, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols,
                    T* out, const ColumnShift& columns) {
  switch (x.dtype) {
    case DType::float32: return copy_block<DType::float32>(x, row0, nrows, col0, ncols, out, columns);
    case DType::float64: return copy_block<DType::float64>(x, row0, nrows, col0, ncols, out, columns);
    case DType::float16: return copy_block<DType::float16>(x, row0, nrows, col0, ncols, out, columns);
    case DType::bfloat16: return copy_block<DType::bfloat16>(x, row0, nrows, col0, ncols, out, columns);
  }
  NDT_ASSERT(false, "unknown dtype " << static_cast<int>(x.dtype));
}

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::float32: return "float32";
    case DType::float64: return "float64";
    case DType::float16: return "float16";
    case DType::bfloat16: return "bfloat16";
  }
  return "unknown";
}

void validate(const MatrixView& x, const char* what) {
  NDT_CHECK_ARG(x.dtype == DType::float32 || x.dtype == DType::float64 ||
                    x.dtype == DType::float16 || x.dtype == DType::bfloat16,
                what << ": unsupported dtype code " << static_cast<int>(x.dtype));
  NDT_CHECK_ARG(x.rows >= 1 && x.cols >= 1,
                what << ": expected a non-empty matrix, got shape (" << x.rows << ", " << x.cols << ")");
  NDT_CHECK_ARG(x.data != nullptr, what << ": null data pointer");
}

template <typename T>
void load_rows(const MatrixView& x, int64_t row0, int64_t nrows, T* out, const ColumnShift& columns) {
  NDT_ASSERT(row0 >= 0 && nrows >= 0 && row0 + nrows <= x.rows, "row range out of bounds");
  copy_block_any<T>(x, row0, nrows, 0, x.cols, out, columns);
}

template <typename T>
void load_cols(const MatrixView& x, int64_t col0, int64_t ncols, T* out, const ColumnShift& columns) {
  NDT_ASSERT(col0 >= 0 && ncols >= 0 && col0 + ncols <= x.cols, "column range out of bounds");
  copy_block_any<T>(x, 0, x.rows, col0, ncols, out, columns);
}

void column_means(const MatrixView& x, double* out) {
  validate(x, "column_means");
  std::fill(out, out + x.cols, 0.0);
  constexpr int64_t kRows = 64;
  std::vector<double> block(static_cast<size_t>(std::min(kRows, x.rows) * x.cols));
  ColumnShift columns;
  columns.sums = out;
  for (int64_t r0 = 0; r0 < x.rows; r0 += kRows) load_rows<double>(x, r0, std::min(kRows, x.rows - r0), block.data(), columns);
  const double inv = 1.0 / static_cast<double>(x.rows);
  for (int64_t j = 0; j < x.cols; ++j) out[j] *= inv;
}

template void load_rows<float>(const MatrixView&, int64_t, int64_t, float*, const ColumnShift&);
template void load_rows<double>(const MatrixView&, int64_t, int64_t, double*, const ColumnShift&);
template void load_cols<float>(const MatrixView&, int64_t, int64_t, float*, const ColumnShift&);
template void load_cols<double>(const MatrixView&, int64_t, int64_t, double*, const ColumnShift&);

}  // namespace ndt
