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

/// Adds XᵀX (feature side, dim = x.cols) or XXᵀ (sample side, dim = x.rows) of the shifted rows
/// (x − columns.shift, if given) to the lower triangle of `gram`, a row-major dim × dim buffer of T
/// (float or double); the strict upper triangle is not touched. Exploits symmetry: only the lower
/// triangle is computed. Uses the registered BLAS syrk when present (zero-copy when x already has
/// dtype T, a unit stride and no shift), the core's own kernel otherwise. `columns.sums` (length
/// x.cols), if given, receives the column sums of the shifted rows.
template <typename T>
void gram_update(const MatrixView& x, GramSide side, T* gram, const ColumnShift& columns = {});

/// Same computation with the core's own kernel only (the BLAS path's test reference).
template <typename T>
void gram_update_reference(const MatrixView& x, GramSide side, T* gram, const ColumnShift& columns = {});

/// Owns an accumulating Gram matrix of one layer.
///
/// Feature side: any number of add() calls with x.cols == dim, any row counts.
/// Sample side: exactly one add() (rows == dim) between resets; a second throws, because Grams
/// of different sample sets do not add up to the Gram of their union on that side.
///
/// Centred (`center = true`): the Gram of the column-centred rows. Centring after the fact
/// (G − s sᵀ/N) cancels catastrophically when a layer's columns vary little around a large mean
/// — a collapsed layer would show round-off as structure — so the rows are shifted *before* the
/// product: by their own column means (one batch: exact centring), and on the feature side by the
/// first batch's means for every later batch, with the small remaining correction G − s sᵀ/N
/// taken on the sums s of the shifted rows (the shifted-data variance algorithm).
class GramAccumulator {
 public:
  GramAccumulator(int64_t dim, GramSide side, Accumulate accumulate = Accumulate::float64, bool center = false);

  void add(const MatrixView& x);
  void reset();

  int64_t dim() const { return dim_; }
  GramSide side() const { return side_; }
  Accumulate accumulate() const { return accumulate_; }
  bool centered() const { return center_; }
  int64_t rows_seen() const { return rows_seen_; }
  int64_t batches() const { return batches_; }

  /// Writes the full symmetric Gram (float64, row-major dim × dim) into `out` — of the centred
  /// rows if the accumulator is centred.
  void symmetric_gram(double* out) const;

  /// Σ‖xᵢ‖² of the rows as given (before centring): the scale against which a centred Gram's
  /// trace is judged to be round-off (see metrics_of_accumulator).
  double uncentered_trace() const;

  /// Number of values in the lower triangle: dim·(dim+1)/2.
  int64_t triangle_size() const { return dim_ * (dim_ + 1) / 2; }

  /// Writes the lower triangle of the raw (not centred) Gram, row by row (i ≥ j), as float64 into
  /// `out` (triangle_size() values): the part a cross-process sum of Grams needs.
  void lower_triangle(double* out) const;

  /// Replaces the Gram by the lower triangle `values` (as lower_triangle writes it) and rows_seen
  /// by `rows_seen` — e.g. the sum of several processes' feature-side Grams, which is the Gram of
  /// the union of their rows. Refused (std::invalid_argument) for a centred accumulator (each
  /// process shifts by its own column means) and for a negative row count.
  void load_lower_triangle(const double* values, int64_t rows_seen);

 private:
  double diagonal_sum() const;

  int64_t dim_;
  GramSide side_;
  Accumulate accumulate_;
  bool center_;
  int64_t rows_seen_ = 0;
  int64_t batches_ = 0;
  std::vector<double> gram64_;
  std::vector<float> gram32_;
  std::vector<double> shift_;        // centred only: per column of x
  std::vector<double> shifted_sums_; // centred only: Σ (x − shift) per column of x
};

}  // namespace ndt
