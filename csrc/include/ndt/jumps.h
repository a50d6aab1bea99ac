// Online jump detection: one sample of every series at a time, two rules side by side.
//
// A JumpBank holds `series` independent time series (one per tracked metric × layer) and runs on
// each of them, sample by sample:
//   * ndt's rule (NdtRule) — |z| of the sample against the mean and population standard deviation
//     of the `window` samples before it, as ndt_fast.jumps.JumpDetector.detect_indices computes it
//     (numpy's NaN/Inf semantics included: a non-finite value in the window, or NaN at the sample,
//     is never a jump; ±inf at the sample with a finite window of std ≥ 1e-10 is one, z = inf);
//   * the default rule (DefaultRule) — ndt_fast.validity.default_rule_indices, steps 1-6 of its
//     docstring: trimmed block levels, their self-normalised change, peak, exclusion, location.
//     Non-finite samples are skipped; a jump is reported (final) 2·block − 3 to 2·block − 1
//     finite samples after its index (11 to 13 for block = 7).
// Both report the detections of the numpy references, on any series length (see Exactness).
//
// Cost: O(1) amortised state update per sample and series (the default rule also sorts one block
// of `block` samples). Means and variances come from rolling sums about a shift, recomputed
// exactly from the window (about its mean) every 2·window samples, so rounding cannot accumulate
// over millions of samples nor grow with the series' level. A sample is decided from the rolling
// sums when a rigorous error bound (the sums' rounding plus numpy's own) puts it clearly on one
// side of the threshold; otherwise — at detections, within the bound of a threshold, with values
// beyond ±1e100 in the window — that one window is recomputed as numpy computes it (two passes,
// numpy's pairwise summation), in O(window). A constant window (a stuck metric) is evaluated once.
//
// Exactness: the ndt rule's decisions and |z| are numpy's, bit for bit. The default rule's
// reference takes σ² from a BLAS dot (`dev @ dev`, summation order machine-specific); the bank
// sums the squares in numpy's pairwise order, so at exact ties (quantized series) it follows
// float(np.sum(dev * dev)) where the reference's last bits may differ.
//
// Thread safety: every member may be called from any thread; one mutex serialises pushes.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace ndt {

/// ndtracker's JumpDetector(window_size, z_threshold, min_samples): for each sample index
/// i ≥ min_samples, w = the min(i, window) samples before it; skip i if std(w) < 1e-10;
/// i is a jump iff |x_i − mean(w)| / std(w) > z_threshold (population std).
struct NdtRule {
  int64_t window = 50;       ///< ≥ 2
  double z_threshold = 3.0;  ///< > 0 (+inf allowed: nothing is ever a jump)
  int64_t min_samples = 20;  ///< ≥ 1
};

/// ndt_fast.validity.default_rule_indices(window, block, threshold, min_reference, min_scale).
struct DefaultRule {
  int64_t window = 200;      ///< W, reference length in level changes; ≥ min_reference
  int64_t block = 7;         ///< k, samples per trimmed block level; ≥ 3
  double threshold = 5.0;    ///< on |z|; > 0
  int64_t min_reference = 100;  ///< fewest reference values to score; 1 ≤ min_reference ≤ window
  double min_scale = 1e-10;  ///< absolute floor of the reference standard deviation; > 0
};

/// Rule tags of JumpEvent::rule.
enum JumpRule : int32_t { kNdtRule = 0, kDefaultRule = 1 };

/// One detection.
struct JumpEvent {
  int64_t series;  ///< which series of the bank, in [0, series)
  int32_t rule;    ///< kNdtRule or kDefaultRule
  int64_t index;   ///< sample index in that series' pushes (non-finite samples counted)
  int64_t step;    ///< the training step pushed with that sample
  /// ndt rule: |z| (as ndt's Jump.z_score). Default rule: z of the level change, signed (its
  /// sign is the step's direction).
  double z;
  /// ndt rule: the pushed values at index − 1 and index (as ndt's Jump). Default rule: the finite
  /// samples x_{j−1}, x_j around the reported one (non-finite pushes between them skipped).
  double before;
  double after;
};

/// Throws std::invalid_argument (with the offending value) for parameters out of range.
void validate(const NdtRule& rule);
void validate(const DefaultRule& rule);

class JumpBank {
 public:
  /// A bank of `series` ≥ 1 series, each with its own state for both rules. Memory per series:
  /// about 2·ndt.window + 2.2·def.window + 12·def.block doubles, allocated here, once.
  /// Invalid series count or rule parameters → std::invalid_argument.
  JumpBank(int64_t series, NdtRule ndt = {}, DefaultRule def = {});
  ~JumpBank();
  JumpBank(const JumpBank&) = delete;
  JumpBank& operator=(const JumpBank&) = delete;

  /// Takes the next sample of every series: `values[s]` (any double, NaN/±inf included) for
  /// s in [0, series()), belonging to training step `step`. Appends the detections this sample
  /// completes to `out` (never clears it), ordered by series, then rule: the ndt rule's at this
  /// sample, the default rule's at an earlier sample (its confirmation delay).
  void push(int64_t step, const double* values, std::vector<JumpEvent>& out);

  /// push() for `count` samples: steps[0..count), values row-major (count × series()).
  void push_many(int64_t count, const int64_t* steps, const double* values, std::vector<JumpEvent>& out);

  int64_t series() const { return series_; }
  /// Samples pushed so far (per series; every push is one sample of each series).
  int64_t samples_seen() const;
  const NdtRule& ndt_rule() const { return ndt_; }
  const DefaultRule& default_rule() const { return def_; }

 private:
  struct State;  // per-series state and scratch (jumps_cpu.cpp)
  void push_locked(int64_t step, const double* values, std::vector<JumpEvent>& out);

  const int64_t series_;
  const NdtRule ndt_;
  const DefaultRule def_;
  std::unique_ptr<State> state_;
};

/// numpy's float64 sum of a contiguous array (np.add.reduce: 0.0 + pairwise summation with 8
/// accumulators in blocks of ≤ 128), bit for bit. Exposed for tests.
double numpy_sum(const double* a, int64_t n);

}  // namespace ndt
