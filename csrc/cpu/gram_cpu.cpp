// Gram updates on the CPU: BLAS syrk where SciPy's BLAS is registered, the core's own kernel
// otherwise (and as the BLAS path's test reference).
#include <algorithm>
#include <climits>
#include <type_traits>
#include <vector>

#include "ndt/check.h"
#include "ndt/gram.h"
#include "ndt/linalg_registry.h"

namespace ndt {
namespace {

// Rows (feature side) or columns (sample side) converted per block: big enough that syrk runs at
// full speed, small enough that the converted block stays in L2.
constexpr int64_t kBlock = 256;

template <typename T>
std::vector<T>& scratch() {
  thread_local std::vector<T> buffer;
  return buffer;
}

int64_t gram_dim(const MatrixView& x, GramSide side) {
  return side == GramSide::feature ? x.cols : x.rows;
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  // Four partial sums: lets the compiler vectorise without -ffast-math.
  T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += a[i] * b[i];
    s1 += a[i + 1] * b[i + 1];
    s2 += a[i + 2] * b[i + 2];
    s3 += a[i + 3] * b[i + 3];
  }
  for (; i < n; ++i) s0 += a[i] * b[i];
  return (s0 + s1) + (s2 + s3);
}

// out (m × m, row-major, lower triangle) += M Mᵀ for contiguous row-major M (m × len).
template <typename T>
void own_syrk_rows(const T* m_rows, int64_t m, int64_t len, T* out) {
  for (int64_t i = 0; i < m; ++i) {
    const T* ri = m_rows + i * len;
    T* out_row = out + i * m;
    for (int64_t j = 0; j <= i; ++j) out_row[j] += dot(ri, m_rows + j * len, len);
  }
}

// BLAS syrk on column-major A: C (n × n, column-major upper == our row-major lower) += op(A) op(A)ᵀ
// with op(A) = A (trans 'N', A is n × k) or Aᵀ (trans 'T', A is k × n).
template <typename T>
void blas_syrk(char trans, int64_t n, int64_t k, const T* a, int64_t lda, T* c) {
  NDT_ASSERT(n <= INT_MAX && k <= INT_MAX && lda <= INT_MAX, "matrix too large for 32-bit BLAS");
  char uplo = 'U';
  int in = static_cast<int>(n), ik = static_cast<int>(k), ilda = static_cast<int>(std::max<int64_t>(lda, 1));
  T one = 1;
  if constexpr (std::is_same_v<T, double>) {
    linalg().dsyrk(&uplo, &trans, &in, &ik, &one, const_cast<double*>(a), &ilda, &one, c, &in);
  } else {
    linalg().ssyrk(&uplo, &trans, &in, &ik, &one, const_cast<float*>(a), &ilda, &one, c, &in);
  }
}

template <typename T>
bool have_blas() {
  if constexpr (std::is_same_v<T, double>) return linalg().dsyrk != nullptr;
  else return linalg().ssyrk != nullptr;
}

template <typename T>
constexpr DType dtype_of() {
  return std::is_same_v<T, double> ? DType::float64 : DType::float32;
}

// Zero-copy BLAS path when x already has the accumulation dtype and a unit stride on one axis.
template <typename T>
bool try_direct_blas(const MatrixView& x, GramSide side, T* gram, const ColumnShift& columns) {
  if (x.dtype != dtype_of<T>() || !have_blas<T>() || columns.shift || columns.sums) return false;
  const T* a = static_cast<const T*>(x.data);
  const bool feature = side == GramSide::feature;
  if (x.col_stride == 1 && (x.row_stride >= x.cols || x.rows == 1)) {
    // Row-major X is column-major Xᶜ (cols × rows, lda = row_stride).
    const int64_t lda = x.rows == 1 ? x.cols : x.row_stride;
    if (feature) blas_syrk<T>('N', x.cols, x.rows, a, lda, gram);
    else blas_syrk<T>('T', x.rows, x.cols, a, lda, gram);
  } else if (x.row_stride == 1 && (x.col_stride >= x.rows || x.cols == 1)) {
    // Column-major X (rows × cols, lda = col_stride).
    const int64_t lda = x.cols == 1 ? x.rows : x.col_stride;
    if (feature) blas_syrk<T>('T', x.cols, x.rows, a, lda, gram);
    else blas_syrk<T>('N', x.rows, x.cols, a, lda, gram);
  } else {
    return false;
  }
  return true;
}

template <typename T>
void gram_update_blocked(const MatrixView& x, GramSide side, T* gram, const ColumnShift& columns, bool use_blas) {
  std::vector<T>& block = scratch<T>();
  if (side == GramSide::feature) {
    const int64_t d = x.cols;
    std::vector<T> transposed;
    for (int64_t r0 = 0; r0 < x.rows; r0 += kBlock) {
      const int64_t nr = std::min(kBlock, x.rows - r0);
      block.resize(static_cast<size_t>(nr * d));
      load_rows<T>(x, r0, nr, block.data(), columns);
      if (use_blas) {
        blas_syrk<T>('N', d, nr, block.data(), d, gram);  // block is column-major d × nr
      } else {
        transposed.resize(block.size());
        for (int64_t i = 0; i < nr; ++i)
          for (int64_t j = 0; j < d; ++j) transposed[static_cast<size_t>(j * nr + i)] = block[static_cast<size_t>(i * d + j)];
        own_syrk_rows<T>(transposed.data(), d, nr, gram);
      }
    }
  } else {
    const int64_t n = x.rows;
    for (int64_t c0 = 0; c0 < x.cols; c0 += kBlock) {
      const int64_t nc = std::min(kBlock, x.cols - c0);
      block.resize(static_cast<size_t>(n * nc));
      load_cols<T>(x, c0, nc, block.data(), columns);
      if (use_blas) blas_syrk<T>('T', n, nc, block.data(), nc, gram);  // column-major nc × n
      else own_syrk_rows<T>(block.data(), n, nc, gram);
    }
  }
}

void check_side(const MatrixView& x, GramSide side) {
  validate(x, "gram_update");
  NDT_CHECK_ARG(side == GramSide::feature || side == GramSide::sample, "gram_update: unknown side");
}

}  // namespace

GramSide smaller_side(const MatrixView& x) {
  return x.rows < x.cols ? GramSide::sample : GramSide::feature;
}

template <typename T>
void gram_update(const MatrixView& x, GramSide side, T* gram, const ColumnShift& columns) {
  check_side(x, side);
  const double dim = static_cast<double>(gram_dim(x, side));
  const BlasThreadScope threads(dim * dim * static_cast<double>(side == GramSide::feature ? x.rows : x.cols));
  if (try_direct_blas<T>(x, side, gram, columns)) return;
  gram_update_blocked<T>(x, side, gram, columns, have_blas<T>());
}

template <typename T>
void gram_update_reference(const MatrixView& x, GramSide side, T* gram, const ColumnShift& columns) {
  check_side(x, side);
  gram_update_blocked<T>(x, side, gram, columns, false);
}

template void gram_update<float>(const MatrixView&, GramSide, float*, const ColumnShift&);
template void gram_update<double>(const MatrixView&, GramSide, double*, const ColumnShift&);
template void gram_update_reference<float>(const MatrixView&, GramSide, float*, const ColumnShift&);
template void gram_update_reference<double>(const MatrixView&, GramSide, double*, const ColumnShift&);

// ---- GramAccumulator -------------------------------------------------------------------------

GramAccumulator::GramAccumulator(int64_t dim, GramSide side, Accumulate accumulate, bool center)
    : dim_(dim), side_(side), accumulate_(accumulate), center_(center) {
  NDT_CHECK_ARG(dim >= 1, "GramAccumulator: dim must be >= 1, got " << dim);
  NDT_CHECK_ARG(dim <= 65536, "GramAccumulator: dim " << dim << " exceeds 65536 (the Gram would need "
                                                      << dim * dim * 8 / (1 << 20) << " MiB)");
  NDT_CHECK_ARG(side == GramSide::feature || side == GramSide::sample, "GramAccumulator: unknown side");
  NDT_CHECK_ARG(accumulate == Accumulate::float64 || accumulate == Accumulate::float32,
                "GramAccumulator: unknown accumulation dtype");
  const auto size = static_cast<size_t>(dim * dim);
  if (accumulate == Accumulate::float64) gram64_.assign(size, 0.0);
  else gram32_.assign(size, 0.0f);
}

void GramAccumulator::add(const MatrixView& x) {
  validate(x, "GramAccumulator.add");
  const int64_t x_dim = side_ == GramSide::feature ? x.cols : x.rows;
  NDT_CHECK_ARG(x_dim == dim_, "GramAccumulator.add: expected " << (side_ == GramSide::feature ? "cols" : "rows")
                                                                << " == " << dim_ << ", got shape (" << x.rows << ", "
                                                                << x.cols << ")");
  NDT_CHECK_ARG(side_ == GramSide::feature || batches_ == 0,
                "GramAccumulator.add: a sample-side Gram holds one batch; call reset() first");
  ColumnShift columns;
  if (center_) {
    if (batches_ == 0) {  // the first batch's means: exact for one batch, a good shift for the rest
      shift_.resize(static_cast<size_t>(x.cols));
      column_means(x, shift_.data());
      shifted_sums_.assign(static_cast<size_t>(x.cols), 0.0);
    }
    columns.shift = shift_.data();
    columns.sums = shifted_sums_.data();
  }
  if (accumulate_ == Accumulate::float64) gram_update<double>(x, side_, gram64_.data(), columns);
  else gram_update<float>(x, side_, gram32_.data(), columns);
  rows_seen_ += x.rows;
  batches_ += 1;
}

void GramAccumulator::reset() {
  std::fill(gram64_.begin(), gram64_.end(), 0.0);
  std::fill(gram32_.begin(), gram32_.end(), 0.0f);
  shift_.clear();
  shifted_sums_.clear();
  rows_seen_ = 0;
  batches_ = 0;
}

double GramAccumulator::diagonal_sum() const {
  double trace = 0.0;
  for (int64_t i = 0; i < dim_; ++i) {
    const size_t k = static_cast<size_t>(i * dim_ + i);
    trace += accumulate_ == Accumulate::float64 ? gram64_[k] : static_cast<double>(gram32_[k]);
  }
  return trace;
}

double GramAccumulator::uncentered_trace() const {
  double trace = diagonal_sum();
  // Σ‖x‖² = Σ‖x − c‖² + 2 cᵀ Σ(x − c) + N ‖c‖²
  const double rows = static_cast<double>(rows_seen_);
  for (size_t j = 0; j < shift_.size(); ++j) trace += shift_[j] * (2.0 * shifted_sums_[j] + rows * shift_[j]);
  return trace;
}

void GramAccumulator::lower_triangle(double* out) const {
  for (int64_t i = 0; i < dim_; ++i) {
    const size_t row = static_cast<size_t>(i * dim_);
    if (accumulate_ == Accumulate::float64) {
      std::copy(gram64_.begin() + static_cast<std::ptrdiff_t>(row),
                gram64_.begin() + static_cast<std::ptrdiff_t>(row + static_cast<size_t>(i) + 1), out);
    } else {
      for (int64_t j = 0; j <= i; ++j) out[j] = static_cast<double>(gram32_[row + static_cast<size_t>(j)]);
    }
    out += i + 1;
  }
}

void GramAccumulator::load_lower_triangle(const double* values, int64_t rows_seen) {
  NDT_CHECK_ARG(!center_, "GramAccumulator.load_lower_triangle: a centred Gram cannot be replaced (its rows are "
                          "shifted by this accumulator's own column means)");
  NDT_CHECK_ARG(rows_seen >= 0, "GramAccumulator.load_lower_triangle: rows_seen must be >= 0, got " << rows_seen);
  for (int64_t i = 0; i < dim_; ++i) {
    const size_t row = static_cast<size_t>(i * dim_);
    for (int64_t j = 0; j <= i; ++j) {
      if (accumulate_ == Accumulate::float64) gram64_[row + static_cast<size_t>(j)] = values[j];
      else gram32_[row + static_cast<size_t>(j)] = static_cast<float>(values[j]);
    }
    values += i + 1;
  }
  rows_seen_ = rows_seen;
  batches_ = rows_seen > 0 ? std::max<int64_t>(batches_, 1) : 0;
}

void GramAccumulator::symmetric_gram(double* out) const {
  const int64_t n = dim_;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j <= i; ++j) {
      const size_t k = static_cast<size_t>(i * n + j);
      const double v = accumulate_ == Accumulate::float64 ? gram64_[k] : static_cast<double>(gram32_[k]);
      out[i * n + j] = v;
      out[j * n + i] = v;
    }
  }
  if (center_ && side_ == GramSide::feature && rows_seen_ > 0) {
    // The rows were shifted by the first batch's means; remove what is left of the mean.
    const double inv_rows = 1.0 / static_cast<double>(rows_seen_);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        out[i * n + j] -= shifted_sums_[static_cast<size_t>(i)] * shifted_sums_[static_cast<size_t>(j)] * inv_rows;
  }
  // Sample side: one batch shifted by its own means is already centred (up to round-off).
}

}  // namespace ndt
