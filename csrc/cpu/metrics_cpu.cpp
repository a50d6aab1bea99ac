// Metrics from spectra and Grams; the batched entry points.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
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

namespace {

// Everything before the eigensolve, for one symmetric Gram `gram` (row-major n × n, full; a trace
// at or below `zero_trace` counts as the zero matrix). Returns true when `out` is already
// final (non-finite, zero, or only trace-type metrics asked for); otherwise leaves the trace and
// the eigenvalue participation ratio for metrics_from_spectrum.
bool gram_prelude(double* gram, int64_t n, const MetricOptions& options, double zero_trace, Metrics* out,
                  double* trace_out, double* participation_ratio_eig_out) {
  const uint32_t want = options.metrics;
  double trace = 0.0, max_abs = 0.0;
  bool finite = true;
  for (int64_t i = 0; i < n * n; ++i) {
    if (!std::isfinite(gram[i])) finite = false;
    max_abs = std::max(max_abs, std::fabs(gram[i]));
  }
  if (!finite) {
    *out = filled(kNaN, want, kFlagNonFinite);
    return true;
  }
  for (int64_t i = 0; i < n; ++i) trace += gram[i * n + i];
  if (trace <= zero_trace || max_abs == 0.0) {
    *out = filled(0.0, want, kFlagZero);
    return true;
  }
  // tr(G)² / ‖G‖F² with both taken relative to max|Gᵢⱼ|: finite for every finite Gram.
  double scaled_frobenius_sq = 0.0;
  const double inv_max = 1.0 / max_abs;
  for (int64_t i = 0; i < n * n; ++i) scaled_frobenius_sq += (gram[i] * inv_max) * (gram[i] * inv_max);
  const double participation_ratio_eig = (trace * inv_max) * (trace * inv_max) / scaled_frobenius_sq;
  *trace_out = trace;
  *participation_ratio_eig_out = participation_ratio_eig;

  if ((want & kSpectrumMetrics) == 0) {
    // Trace-only shortcut: PR_eig needs no eigenvalues, stable rank only λmax.
    double lambda_max = kNaN;
    if (!(want & kStableRank) || largest_eigenvalue_psd(gram, n, &lambda_max)) {
      Metrics m = filled(kNaN, 0, 0);
      m.trace = trace;
      m.lambda_max = lambda_max;
      if (want & kStableRank) m.stable_rank = trace / (lambda_max + options.eps);
      if (want & kParticipationRatioEig) m.participation_ratio_eig = participation_ratio_eig;
      *out = m;
      return true;
    }
    // Power iteration too slow for this spectrum: the full solver decides.
  }
  return false;
}

void check_accumulator(const GramAccumulator* acc, const MetricOptions& options) {
  NDT_CHECK_ARG(acc != nullptr, "metrics: null accumulator");
  NDT_CHECK_ARG(acc->rows_seen() > 0, "metrics: the Gram accumulator is empty (no rows were added)");
  NDT_CHECK_ARG(options.center == acc->centered(),
                "metrics: center=" << (options.center ? "true" : "false") << " but the accumulator is "
                                   << (acc->centered() ? "centred" : "not centred"));
}

}  // namespace

Metrics metrics_of_accumulator(const GramAccumulator& acc, const MetricOptions& options) {
  Metrics out{};
  metrics_of_accumulators({&acc}, options, &out);
  return out;
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
  validate(options);
  double flops = 0.0;
  for (const MatrixView& x : xs) {
    const double small = static_cast<double>(std::min(x.rows, x.cols)), large = static_cast<double>(std::max(x.rows, x.cols));
    flops += small * small * (large + small);
  }
  const auto count = static_cast<int64_t>(xs.size());
  if (parallel_worthwhile(count, flops)) {
    parallel_for(count, flops, [&](int64_t i) { out[i] = metrics_of_matrix(xs[static_cast<size_t>(i)], options); });
    return;
  }
  std::vector<std::unique_ptr<GramAccumulator>> accs;
  std::vector<const GramAccumulator*> pointers;
  for (const MatrixView& x : xs) {
    validate(x, "metrics");
    const GramSide side = smaller_side(x);
    accs.push_back(std::make_unique<GramAccumulator>(side == GramSide::feature ? x.cols : x.rows, side,
                                                     Accumulate::float64, options.center));
    accs.back()->add(x);
    pointers.push_back(accs.back().get());
  }
  metrics_of_accumulators(pointers, options, out);
}

void metrics_of_accumulators(const std::vector<const GramAccumulator*>& accs, const MetricOptions& options,
                             Metrics* out) {
  validate(options);
  double flops = 0.0;
  for (const GramAccumulator* acc : accs) {
    check_accumulator(acc, options);
    const double n = static_cast<double>(acc->dim());
    flops += n * n * n;
  }
  const auto count = static_cast<int64_t>(accs.size());
  if (parallel_worthwhile(count, flops)) {
    parallel_for(count, flops, [&](int64_t i) { out[i] = metrics_of_accumulator(*accs[static_cast<size_t>(i)], options); });
    return;
  }
  // One thread: every Gram's prelude first, then one batched eigensolve: the small Grams side by
  // side in SIMD lanes (see symmetric_eigenvalues_batched).
  constexpr double kCentredRoundOff = 1e-24;  // (1e-12 relative in the values)²: see metrics.h
  std::vector<std::vector<double>> grams(accs.size()), spectra;
  std::vector<double> traces(accs.size()), participation_ratios(accs.size());
  std::vector<size_t> pending;  // inputs that need their spectrum
  std::vector<const double*> a;
  std::vector<double*> w;
  std::vector<int64_t> dims;
  for (size_t k = 0; k < accs.size(); ++k) {
    const GramAccumulator& acc = *accs[k];
    const int64_t n = acc.dim();
    grams[k].resize(static_cast<size_t>(n * n));
    acc.symmetric_gram(grams[k].data());
    const double zero_trace = acc.centered() ? kCentredRoundOff * acc.uncentered_trace() : 0.0;
    if (!gram_prelude(grams[k].data(), n, options, zero_trace, &out[k], &traces[k], &participation_ratios[k]))
      pending.push_back(k);
  }
  spectra.resize(pending.size());
  for (size_t j = 0; j < pending.size(); ++j) {
    const int64_t n = accs[pending[j]]->dim();
    spectra[j].resize(static_cast<size_t>(n));
    a.push_back(grams[pending[j]].data());
    w.push_back(spectra[j].data());
    dims.push_back(n);
  }
  const std::unique_ptr<bool[]> ok(new bool[pending.size() + 1]);
  symmetric_eigenvalues_batched(a.data(), dims.data(), w.data(), static_cast<int64_t>(pending.size()), ok.get(),
                                options.solver);
  for (size_t j = 0; j < pending.size(); ++j) {
    const size_t k = pending[j];
    out[k] = ok[j] ? metrics_from_spectrum(w[j], dims[j], traces[k], participation_ratios[k], options)
                   : filled(kNaN, options.metrics, kFlagNotConverged);
  }
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
