// Gram matrices of activations: the only O(n·d·min(n, d)) work in the library.
//
// For X (n × d) the nonzero eigenvalues of XᵀX (d × d, "feature side") and XXᵀ (n × n, "sample
// side") coincide, so every metric can be computed from whichever is smaller. The feature side
// also accumulates exactly over batches: the Gram of [X₁; …; X_k] is Σ XᵢᵀXᵢ.
#pragma once

#include <cstdint>
#include <vector>

#include "ndt/matrix_view.h"

namespace ndt {

enum class GramSide : int {
  feature = 0,  ///< G = XᵀX, dim = cols; accumulates over batches
  sample = 1,   ///< G = XXᵀ, dim = rows; one batch only
};

enum class Accumulate : int { float64 = 0, float32 = 1 };

/// The side with the smaller Gram (sample side when rows < cols).
GramSide smaller_side(const MatrixView& x);

/// Adds XᵀX (feature side, dim = x.cols) or XXᵀ (sample side, dim = x.rows) to the lower triangle
/// of `gram`, a row-major dim × dim buffer of T (float or double); the strict upper triangle is
/// not touched. Exploits symmetry: only the lower triangle is computed. Uses the registered BLAS
/// syrk when present, the core's own kernel otherwise. If `column_sums` is not null (feature side
/// only) each column's sum is added to it (length x.cols), for centering.
template <typename T>
void gram_update(const MatrixView& x, GramSide side, T* gram, double* column_sums);

/// Same computation with the core's own kernel only (the BLAS path's test reference).
template <typename T>
void gram_update_reference(const MatrixView& x, GramSide side, T* gram, double* column_sums);

/// Owns an accumulating Gram matrix of one layer.
///
/// Feature side: any number of add() calls with x.cols == dim, any row counts.
/// Sample side: exactly one add() (rows == dim) between resets; a second throws, because Grams
/// of different sample sets do not add up to the Gram of their union on that side.
class GramAccumulator {
 public:
  GramAccumulator(int64_t dim, GramSide side, Accumulate accumulate = Accumulate::float64);

  void add(const MatrixView& x);
  void reset();

  int64_t dim() const { return dim_; }
  GramSide side() const { return side_; }
  Accumulate accumulate() const { return accumulate_; }
  int64_t rows_seen() const { return rows_seen_; }
  int64_t batches() const { return batches_; }

  /// Writes the full symmetric Gram (float64, row-major dim × dim) into `out`; when `center`,
  /// the Gram of the column-centred rows instead (feature side: G − s sᵀ / N with s the column
  /// sums over all N rows seen; sample side: H G H with H = I − 11ᵀ / n).
  void symmetric_gram(double* out, bool center) const;

 private:
  int64_t dim_;
  GramSide side_;
  Accumulate accumulate_;
  int64_t rows_seen_ = 0;
  int64_t batches_ = 0;
  std::vector<double> gram64_;
  std::vector<float> gram32_;
  std::vector<double> column_sums_;
};

}  // namespace ndt
