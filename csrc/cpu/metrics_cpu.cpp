// Metrics from spectra and Grams; the batched entry points.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ndt/check.h"
#include "ndt/metrics.h"
#include "ndt/parallel.h"

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

Metrics metrics_from_spectrum(const double* lambda, int64_t n, double trace, double participation_ratio_eig,
                              const MetricOptions& options) {
  NDT_CHECK_ARG(n >= 1, "metrics_from_spectrum: empty spectrum");
  const uint32_t want = options.metrics;
  bool finite = true;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(lambda[i])) finite = false;
  if (!finite || std::isinf(trace)) return filled(kNaN, want, kFlagNonFinite);
  const double lambda_max = std::max(lambda[0], 0.0);
  if (lambda_max == 0.0 || trace <= 0.0) return filled(0.0, want, kFlagZero);
  double lambda_sum = 0.0, scaled_sq_sum = 0.0, sigma_sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double l = std::max(lambda[i], 0.0);  // PSD: negatives are round-off
    lambda_sum += l;
    scaled_sq_sum += (l / lambda_max) * (l / lambda_max);
    sigma_sum += std::sqrt(l);
  }
  if (std::isnan(trace)) trace = lambda_sum;
  if (std::isnan(participation_ratio_eig))
    participation_ratio_eig = (lambda_sum / lambda_max) * (lambda_sum / lambda_max) / scaled_sq_sum;

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
  if (want & kParticipationRatioEig) m.participation_ratio_eig = participation_ratio_eig;
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

Metrics metrics_from_gram(double* gram, int64_t n, const MetricOptions& options, double zero_trace) {
  validate(options);
  NDT_CHECK_ARG(n >= 1, "metrics_from_gram: n must be >= 1");
  const uint32_t want = options.metrics;
  double trace = 0.0, max_abs = 0.0;
  bool finite = true;
  for (int64_t i = 0; i < n * n; ++i) {
    if (!std::isfinite(gram[i])) finite = false;
    max_abs = std::max(max_abs, std::fabs(gram[i]));
  }
  if (!finite) return filled(kNaN, want, kFlagNonFinite);
  for (int64_t i = 0; i < n; ++i) trace += gram[i * n + i];
  if (trace <= zero_trace || max_abs == 0.0) return filled(0.0, want, kFlagZero);
  // tr(G)² / ‖G‖F² with both taken relative to max|Gᵢⱼ|: finite for every finite Gram.
  double scaled_frobenius_sq = 0.0;
  const double inv_max = 1.0 / max_abs;
  for (int64_t i = 0; i < n * n; ++i) scaled_frobenius_sq += (gram[i] * inv_max) * (gram[i] * inv_max);
  const double participation_ratio_eig = (trace * inv_max) * (trace * inv_max) / scaled_frobenius_sq;

  if ((want & kSpectrumMetrics) == 0) {
    // Trace-only shortcut: PR_eig needs no eigenvalues, stable rank only λmax.
    double lambda_max = kNaN;
    if (!(want & kStableRank) || largest_eigenvalue_psd(gram, n, &lambda_max)) {
      Metrics m = filled(kNaN, 0, 0);
      m.trace = trace;
      m.lambda_max = lambda_max;
      if (want & kStableRank) m.stable_rank = trace / (lambda_max + options.eps);
      if (want & kParticipationRatioEig) m.participation_ratio_eig = participation_ratio_eig;
      return m;
    }
    // Power iteration too slow for this spectrum: fall through to the full solver.
  }
  std::vector<double> lambda(static_cast<size_t>(n));
  if (!symmetric_eigenvalues(gram, n, lambda.data(), options.solver)) return filled(kNaN, want, kFlagNotConverged);
  return metrics_from_spectrum(lambda.data(), n, trace, participation_ratio_eig, options);
}

Metrics metrics_of_accumulator(const GramAccumulator& acc, const MetricOptions& options) {
  validate(options);
  NDT_CHECK_ARG(acc.rows_seen() > 0, "metrics: the Gram accumulator is empty (no rows were added)");
  NDT_CHECK_ARG(options.center == acc.centered(),
                "metrics: center=" << (options.center ? "true" : "false") << " but the accumulator is "
                                   << (acc.centered() ? "centred" : "not centred"));
  const int64_t n = acc.dim();
  std::vector<double>& gram = gram_scratch(static_cast<size_t>(n * n));
  acc.symmetric_gram(gram.data());
  constexpr double kCentredRoundOff = 1e-24;  // (1e-12 relative in the values)²
  const double zero_trace = acc.centered() ? kCentredRoundOff * acc.uncentered_trace() : 0.0;
  return metrics_from_gram(gram.data(), n, options, zero_trace);
}

Metrics metrics_of_matrix(const MatrixView& x, const MetricOptions& options) {
  validate(x, "metrics");
  validate(options);
  const GramSide side = smaller_side(x);
  GramAccumulator acc(side == GramSide::feature ? x.cols : x.rows, side, Accumulate::float64, options.center);
  acc.add(x);
  return metrics_of_accumulator(acc, options);
}

void metrics_of_matrices(const std::vector<MatrixView>& xs, const MetricOptions& options, Metrics* out) {
  double flops = 0.0;
  for (const MatrixView& x : xs) {
    const double small = static_cast<double>(std::min(x.rows, x.cols)), large = static_cast<double>(std::max(x.rows, x.cols));
    flops += small * small * (large + small);
  }
  parallel_for(static_cast<int64_t>(xs.size()), flops,
               [&](int64_t i) { out[i] = metrics_of_matrix(xs[static_cast<size_t>(i)], options); });
}

void metrics_of_accumulators(const std::vector<const GramAccumulator*>& accs, const MetricOptions& options,
                             Metrics* out) {
  double flops = 0.0;
  for (const GramAccumulator* acc : accs) {
    NDT_CHECK_ARG(acc != nullptr, "metrics: null accumulator");
    const double n = static_cast<double>(acc->dim());
    flops += n * n * n;
  }
  parallel_for(static_cast<int64_t>(accs.size()), flops,
               [&](int64_t i) { out[i] = metrics_of_accumulator(*accs[static_cast<size_t>(i)], options); });
}

std::vector<double> gram_eigenvalues(const MatrixView& x, bool center, EigenSolver solver) {
  validate(x, "gram_eigenvalues");
  const GramSide side = smaller_side(x);
  const int64_t n = side == GramSide::feature ? x.cols : x.rows;
  GramAccumulator acc(n, side, Accumulate::float64, center);
  acc.add(x);
  std::vector<double>& gram = gram_scratch(static_cast<size_t>(n * n));
  acc.symmetric_gram(gram.data());
  std::vector<double> lambda(static_cast<size_t>(n));
  symmetric_eigenvalues(gram.data(), n, lambda.data(), solver);
  return lambda;
}

}  // namespace ndt
