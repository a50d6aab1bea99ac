// Dimensionality metrics of an activation matrix X, all functions of the Gram's eigenvalues λ
// (λᵢ = σᵢ², σ the singular values of X). The ndt-compatible forms reproduce ndtracker's
// compute_all_metrics, eps included:
//   stable_rank             = tr(G) / (λmax + eps)                         (= ‖X‖F² / (σmax² + eps))
//   participation_ratio     = 1 / (Σ (σᵢ / (Σσ + eps))² + eps)              (ndt: singular values)
//   cumulative_90           = smallest k with Σ_{i≤k} λᵢ (descending) ≥ threshold · Σλ
//   nuclear_norm_ratio      = Σσ / (σmax + eps)
// and two standard ones:
//   participation_ratio_eig = (Σλ)² / Σλ² = tr(G)² / ‖G‖F²                  (no eigensolver needed)
//   effective_rank          = exp(−Σ pᵢ log pᵢ), pᵢ = σᵢ / Σσ   (Roy & Vetterli 2007 / RankMe: of σ)
#pragma once

#include <cstdint>
#include <vector>

#include "ndt/eigen.h"
#include "ndt/gram.h"
#include "ndt/matrix_view.h"

namespace ndt {

enum MetricBits : uint32_t {
  kStableRank = 1u << 0,
  kParticipationRatio = 1u << 1,
  kCumulative90 = 1u << 2,
  kNuclearNormRatio = 1u << 3,
  kParticipationRatioEig = 1u << 4,
  kEffectiveRank = 1u << 5,
  kAllMetrics = (1u << 6) - 1,
  /// Metrics that need the whole spectrum; the others use tr(G), ‖G‖F and Lanczos (λmax).
  kSpectrumMetrics = kParticipationRatio | kCumulative90 | kNuclearNormRatio | kEffectiveRank,
};

enum MetricFlags : uint32_t {
  kFlagNonFinite = 1u << 0,     ///< input had NaN/Inf (or its squares overflowed): metrics are NaN
  kFlagZero = 1u << 1,          ///< the matrix is exactly zero: every metric is 0
  kFlagNotConverged = 1u << 2,  ///< the eigensolver did not converge: metrics are NaN
};

struct MetricOptions {
  double eps = 1e-10;              ///< ndt's stabiliser, in the places ndt puts it
  double energy_threshold = 0.9;   ///< for cumulative_90, in (0, 1]
  bool center = false;             ///< subtract column means first (ndt does not)
  uint32_t metrics = kAllMetrics;  ///< which metrics to compute (others are NaN)
  EigenSolver solver = EigenSolver::automatic;
};

/// One record; metrics not requested (or undefined, see flags) are NaN.
struct Metrics {
  double stable_rank;
  double participation_ratio;
  double cumulative_90;
  double nuclear_norm_ratio;
  double participation_ratio_eig;
  double effective_rank;
  double trace;  ///< Σλ = ‖X‖F² (after centering if asked)
  double lambda_max;
  uint32_t flags;
};

/// Throws std::invalid_argument on eps < 0 or a threshold outside (0, 1].
void validate(const MetricOptions& options);

/// Metrics from eigenvalues `lambda` (length n, descending; small negative round-off is clamped to
/// 0), the Gram's trace and its eigenvalue participation ratio tr(G)²/‖G‖F² (pass NaN for either
/// to derive it from λ). Sums of squares are taken relative to λmax, so no finite spectrum
/// overflows or underflows.
Metrics metrics_from_spectrum(const double* lambda, int64_t n, double trace, double participation_ratio_eig,
                              const MetricOptions& options);

/// Metrics of an accumulated Gram; options.center must equal acc.centered() (std::invalid_argument
/// otherwise). A centred Gram whose trace is below 1e-24 of the uncentred one — rows equal to
/// their mean up to the rounding of that mean — is the zero matrix (kFlagZero), not noise.
Metrics metrics_of_accumulator(const GramAccumulator& acc, const MetricOptions& options);

/// Metrics of one activation matrix, computed from its smaller Gram (float64 accumulation).
Metrics metrics_of_matrix(const MatrixView& x, const MetricOptions& options);

/// Batched entry point: metrics of many matrices (or accumulators) in one call. out has one
/// record per input. Intended to be called with the Python GIL released.
void metrics_of_matrices(const std::vector<MatrixView>& xs, const MetricOptions& options, Metrics* out);
void metrics_of_accumulators(const std::vector<const GramAccumulator*>& accs,
                             const MetricOptions& options, Metrics* out);

/// Eigenvalues (descending, length min(rows, cols)) of the smaller Gram of `x`, float64.
std::vector<double> gram_eigenvalues(const MatrixView& x, bool center = false,
                                     EigenSolver solver = EigenSolver::automatic);

}  // namespace ndt
