// Metrics from spectra and Grams; the batched entry points.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ndt/check.h"
#include "ndt/metrics.h"

namespace ndt {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Metrics filled(double value, uint32_t requested, uint32_t flags) {
  Metrics m{};
  auto pick = [&](uint32_t bit) { return (requested & bit) ? value : kNaN; };
  m.stable_rank = pick(kStableRank);
  m.participation_ratio = pick(kParticipationRatio);
  m.cumulative_90 = pick(kCumulative90);
  m.nuclear_norm_ratio = pick(kNuclearNormRatio);
  m.participation_ratio_eig = pick(kParticipationRatioEig);
  m.effective_rank = pick(kEffectiveRank);
  m.trace = value;
  m.lambda_max = value;
  m.flags = flags;
  return m;
}

std::vector<double>& gram_scratch(size_t size) {
  thread_local std::vector<double> buffer;
  buffer.resize(size);
  return buffer;
}

}  // namespace

void validate(const MetricOptions& options) {
  NDT_CHECK_ARG(options.eps >= 0.0 && std::isfinite(options.eps), "eps must be finite and >= 0, got " << options.eps);
  NDT_CHECK_ARG(options.energy_threshold > 0.0 && options.energy_threshold <= 1.0,
                "energy threshold must be in (0, 1], got " << options.energy_threshold);
  NDT_CHECK_ARG((options.metrics & ~static_cast<uint32_t>(kAllMetrics)) == 0, "unknown metric bits " << options.metrics);
}

Metrics metrics_from_spectrum(const double* lambda, int64_t n, double trace, double frobenius_sq,
                              const MetricOptions& options) {
  NDT_CHECK_ARG(n >= 1, "metrics_from_spectrum: empty spectrum");
  const uint32_t want = options.metrics;
  double lambda_sum = 0.0, lambda_sq_sum = 0.0, sigma_sum = 0.0;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(lambda[i])) finite = false;
    const double l = std::max(lambda[i], 0.0);  // PSD: negatives are round-off
    lambda_sum += l;
    lambda_sq_sum += l * l;
    sigma_sum += std::sqrt(l);
  }
  if (std::isnan(trace)) trace = lambda_sum;
  if (std::isnan(frobenius_sq)) frobenius_sq = lambda_sq_sum;
  if (!finite || !std::isfinite(trace) || !std::isfinite(frobenius_sq)) return filled(kNaN, want, kFlagNonFinite);
  const double lambda_max = std::max(lambda[0], 0.0);
  if (trace <= 0.0 || lambda_max == 0.0) return filled(0.0, want, kFlagZero);

  Metrics m = filled(kNaN, 0, 0);
  m.trace = trace;
  m.lambda_max = lambda_max;
  const double sigma_max = std::sqrt(lambda_max);
  const double eps = options.eps;
  if (want & kStableRank) m.stable_rank = trace / (lambda_max + eps);
  if (want & kParticipationRatio) {
    const double denom = sigma_sum + eps;
    double sq = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double p = std::sqrt(std::max(lambda[i], 0.0)) / denom;
      sq += p * p;
    }
    m.participation_ratio = 1.0 / (sq + eps);
  }
  if (want & kCumulative90) {
    // ndt: first k whose cumulative energy ratio reaches the threshold, at most n.
    double cumulative = 0.0;
    int64_t k = n;
    for (int64_t i = 0; i < n; ++i) {
      cumulative += std::max(lambda[i], 0.0);
      if (cumulative / lambda_sum >= options.energy_threshold) {
        k = i + 1;
        break;
      }
    }
    m.cumulative_90 = static_cast<double>(k);
  }
  if (want & kNuclearNormRatio) m.nuclear_norm_ratio = sigma_sum / (sigma_max + eps);
  if (want & kParticipationRatioEig) m.participation_ratio_eig = trace * trace / frobenius_sq;
  if (want & kEffectiveRank) {
    double entropy = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double p = std::sqrt(std::max(lambda[i], 0.0)) / sigma_sum;
      if (p > 0.0) entropy -= p * std::log(p);
    }
    m.effective_rank = std::exp(entropy);
  }
  return m;
}

Metrics metrics_from_gram(double* gram, int64_t n, const MetricOptions& options) {
  validate(options);
  NDT_CHECK_ARG(n >= 1, "metrics_from_gram: n must be >= 1");
  double trace = 0.0, frobenius_sq = 0.0;
  for (int64_t i = 0; i < n; ++i) trace += gram[i * n + i];
  for (int64_t i = 0; i < n * n; ++i) frobenius_sq += gram[i] * gram[i];
  const uint32_t want = options.metrics;
  if (!std::isfinite(trace) || !std::isfinite(frobenius_sq)) return filled(kNaN, want, kFlagNonFinite);
  if (trace <= 0.0) return filled(0.0, want, kFlagZero);

  if ((want & kSpectrumMetrics) == 0) {
    // Trace-only shortcut: PR_eig needs no eigenvalues, stable rank only λmax.
    double lambda_max = kNaN;
    if (!(want & kStableRank) || largest_eigenvalue_psd(gram, n, &lambda_max)) {
      Metrics m = filled(kNaN, 0, 0);
      m.trace = trace;
      m.lambda_max = lambda_max;
      if (want & kStableRank) m.stable_rank = trace / (lambda_max + options.eps);
      if (want & kParticipationRatioEig) m.participation_ratio_eig = trace * trace / frobenius_sq;
      return m;
    }
    // Power iteration too slow for this spectrum: fall through to the full solver.
  }
  std::vector<double> lambda(static_cast<size_t>(n));
  if (!symmetric_eigenvalues(gram, n, lambda.data(), options.solver)) return filled(kNaN, want, kFlagNotConverged);
  return metrics_from_spectrum(lambda.data(), n, trace, frobenius_sq, options);
}

Metrics metrics_of_accumulator(const GramAccumulator& acc, const MetricOptions& options) {
  validate(options);
  NDT_CHECK_ARG(acc.rows_seen() > 0, "metrics: the Gram accumulator is empty (no rows were added)");
  const int64_t n = acc.dim();
  std::vector<double>& gram = gram_scratch(static_cast<size_t>(n * n));
  acc.symmetric_gram(gram.data(), options.center);
  return metrics_from_gram(gram.data(), n, options);
}

Metrics metrics_of_matrix(const MatrixView& x, const MetricOptions& options) {
  validate(x, "metrics");
  validate(options);
  const GramSide side = smaller_side(x);
  GramAccumulator acc(side == GramSide::feature ? x.cols : x.rows, side);
  acc.add(x);
  return metrics_of_accumulator(acc, options);
}

void metrics_of_matrices(const std::vector<MatrixView>& xs, const MetricOptions& options, Metrics* out) {
  for (size_t i = 0; i < xs.size(); ++i) out[i] = metrics_of_matrix(xs[i], options);
}

void metrics_of_accumulators(const std::vector<const GramAccumulator*>& accs, const MetricOptions& options,
                             Metrics* out) {
  for (size_t i = 0; i < accs.size(); ++i) {
    NDT_CHECK_ARG(accs[i] != nullptr, "metrics: null accumulator");
    out[i] = metrics_of_accumulator(*accs[i], options);
  }
}

std::vector<double> gram_eigenvalues(const MatrixView& x, bool center, EigenSolver solver) {
  validate(x, "gram_eigenvalues");
  const GramSide side = smaller_side(x);
  const int64_t n = side == GramSide::feature ? x.cols : x.rows;
  GramAccumulator acc(n, side);
  acc.add(x);
  std::vector<double>& gram = gram_scratch(static_cast<size_t>(n * n));
  acc.symmetric_gram(gram.data(), center);
  std::vector<double> lambda(static_cast<size_t>(n));
  symmetric_eigenvalues(gram.data(), n, lambda.data(), solver);
  return lambda;
}

}  // namespace ndt
