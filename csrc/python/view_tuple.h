// The (pointer, dtype code, rows, cols, row stride, col stride) tuple by which Python hands a
// matrix to the binding (ndt_fast/_buffer.py builds it), shared by bindings.cpp and
// bindings_cuda.cpp. Binding-only: the core never sees Python types.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>

#include "ndt/matrix_view.h"

namespace ndt_binding {

using ViewTuple = std::tuple<uintptr_t, int, int64_t, int64_t, int64_t, int64_t>;

/// The MatrixView a ViewTuple describes (host or device pointer alike); a dtype code outside
/// 0..3 → std::invalid_argument (ValueError in Python).
inline ndt::MatrixView to_view(const ViewTuple& t) {
  ndt::MatrixView v;
  v.data = reinterpret_cast<const void*>(std::get<0>(t));
  const int code = std::get<1>(t);
  if (code < 0 || code > 3) throw std::invalid_argument("unsupported dtype code " + std::to_string(code));
  v.dtype = static_cast<ndt::DType>(code);
  v.rows = std::get<2>(t);
  v.cols = std::get<3>(t);
  v.row_stride = std::get<4>(t);
  v.col_stride = std::get<5>(t);
  return v;
}

}  // namespace ndt_binding
