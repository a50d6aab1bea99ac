// The per-sample finish of a tracker: everything hot that happens once a sampled step's Grams
// are complete, in one call.
//
//   Grams of the layers ──▶ spectra + metrics (metrics_of_accumulators: all layers at once)
//   weight matrices    ──▶ metrics (metrics_of_matrices)            [track_weights only]
//                       ──▶ sample records (record_schema.h) ──▶ RecordRing
//                       ──▶ each layer's JumpBank, fed the metric values directly
//                       ──▶ jump records for what the banks confirm ──▶ RecordRing
//
// Samples whose metrics were computed elsewhere (a device, or a caught error's NaN row) enter at
// the second arrow through SampleFinisher::record, so every sample becomes records one way.
//
// Batched spectra (spectra_batch = k > 1): one sample has only a few small Grams (the TDS MLP:
// two 64 × 64 and one 10 × 10), too few to fill the batched solver's SIMD lanes. So the finisher
// keeps a copy of each small Gram (dim ≤ own_solver_max_dim(): the lanes take those whatever
// shares the call) with the sample's scalars, rows and flags, and once k samples wait it solves
// all their spectra in one call, then emits their records and feeds the jump banks sample by
// sample in step order. Larger Grams (LAPACK's), the weight metrics and every check run at once,
// so the spectra are bit-identical to k = 1 and an error still surfaces at the sample that has
// it. Records thus appear up to k − 1 samples late; flush() emits what waits, and record()
// flushes first, so nothing overtakes a waiting sample.
// Not thread-safe: one thread (the training thread) calls a finisher.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ndt/gram.h"
#include "ndt/jumps.h"
#include "ndt/matrix_view.h"
#include "ndt/metrics.h"
#include "ndt/record_ring.h"

namespace ndt {

struct SampleFinishOptions {
  int64_t layers = 1;            ///< layer indices are in [0, layers); ≥ 1
  MetricOptions activations;     ///< metrics of the layers' Grams
  MetricOptions weights;         ///< metrics of their weight matrices (track_weights)
  bool track_weights = false;    ///< records carry the weight columns (record::width(true))
  bool detect_jumps = true;      ///< one JumpBank per layer over its metric series
  NdtRule ndt_rule;
  DefaultRule default_rule;
  /// Samples whose spectra are solved together (≥ 1; 1 = each at its finish()). Ignored (1)
  /// when no requested metric needs a spectrum or the solver is LAPACK: nothing to batch.
  int64_t spectra_batch = 1;
};

/// What one sample has besides its metrics.
struct SampleScalars {
  int64_t step = 0;
  double loss = 0.0;       ///< NaN when unreadable
  double grad_norm = 0.0;  ///< NaN when not given
};

/// Where a finished sample's records went.
struct SampleOutcome {
  std::vector<double> overflow;  ///< records (row-major, width() each) the ring could not take, oldest first
  std::vector<JumpEvent> jumps;     ///< detections this sample confirmed, in bank order
  std::vector<int64_t> jump_layers; ///< the layer of each detection
  std::string weight_error;      ///< non-empty: the weight metrics failed (their columns are NaN)
  /// Non-empty: a batched solve of waiting samples failed; the layers below (one entry per
  /// record, a layer repeated per sample) got NaN rows flagged record::kFlagTrackerError.
  std::string spectra_error;
  std::vector<int64_t> spectra_error_layers;
  void clear() {
    overflow.clear();
    jumps.clear();
    jump_layers.clear();
    weight_error.clear();
    spectra_error.clear();
    spectra_error_layers.clear();
  }
};

class SampleFinisher {
 public:
  /// Validates the options (std::invalid_argument) and allocates the jump banks.
  explicit SampleFinisher(const SampleFinishOptions& options);

  /// Doubles per record (record::width(track_weights)).
  int64_t width() const { return width_; }
  int64_t series() const;  ///< metric series per layer's bank: 6, or 12 with weights

  /// One sample computed here. `accs[i]` is the Gram of layer `layers[i]` (reset afterwards, so
  /// the next add starts a new sample); `weights[i]` its weight matrix or nullptr (NaN weight
  /// columns). `failed` layers get a NaN row flagged record::kFlagTrackerError (0 rows).
  /// The records go into `ring` (nullptr, or a ring that cannot take them all: into
  /// out.overflow, and every later record of the call too, so the order holds). Throws (before
  /// recording or keeping anything, Grams left as they were) whatever the activation metrics
  /// throw — an empty accumulator, a centring mismatch; a failure of the weight metrics leaves
  /// their columns NaN and says why in out.weight_error. With spectra_batch = k > 1 the sample
  /// waits (pending() grows) until it is the k-th, then all waiting samples are emitted in order.
  void finish(const SampleScalars& scalars, const std::vector<int64_t>& layers,
              const std::vector<GramAccumulator*>& accs, const std::vector<const MatrixView*>& weights,
              const std::vector<int64_t>& failed, RecordRing* ring, SampleOutcome& out);

  /// Emits every waiting sample (their spectra solved in one call) in step order into `ring` as
  /// finish() does; nothing waiting: nothing happens. Never throws for a failed solve: those
  /// samples' deferred layers get flagged NaN rows (out.spectra_error says why).
  void flush(RecordRing* ring, SampleOutcome& out);

  /// Samples finished but not yet emitted (< spectra_batch).
  int64_t pending() const { return pending_count_; }
  /// The spectra_batch in effect (1 where batching has nothing to batch, see the options).
  int64_t spectra_batch() const { return batch_; }

  /// One sample whose metric records (k × record::kMetricWidth) were computed elsewhere;
  /// `weight_metrics` likewise or nullptr (NaN weight columns); `rows_seen` per layer. Waiting
  /// samples are flushed first (they are older).
  void record(const SampleScalars& scalars, int64_t k, const int64_t* layers, const double* metrics,
              const double* weight_metrics, const int64_t* rows_seen, RecordRing* ring, SampleOutcome& out);

  /// Resume: feeds a layer's earlier samples (count × series() values, row-major) to its bank;
  /// their detections are dropped (the run file holds them already).
  void replay(int64_t layer, int64_t count, const int64_t* steps, const double* values);

 private:
  /// A finished sample waiting for its spectra: everything its records need.
  struct Pending {
    SampleScalars scalars;
    std::vector<int64_t> layers, rows_seen;  // ready layers, then failed ones
    std::vector<double> metrics, weight_metrics;  // total × kMetricWidth; deferred rows filled at the flush
    std::vector<size_t> deferred;  // positions whose Gram copy waits in grams_kept_ (in order)
  };

  void emit(const SampleScalars& scalars, int64_t k, const int64_t* layers, const double* metrics,
            const double* weight_metrics, const int64_t* rows_seen, RecordRing* ring, SampleOutcome& out);
  void weight_rows(size_t k, size_t total, const std::vector<const MatrixView*>& weights, Pending& sample,
                   SampleOutcome& out);
  void check_layer(int64_t layer) const;

  SampleFinishOptions options_;
  int64_t width_;
  int64_t batch_ = 1;
  std::vector<std::unique_ptr<JumpBank>> banks_;
  // Waiting samples: pending_[0, pending_count_) in step order; their deferred Grams' copies in
  // grams_kept_[0, kept_count_) in the same order. Both reused: no allocation per sample once warm.
  std::vector<Pending> pending_;
  int64_t pending_count_ = 0;
  std::vector<std::unique_ptr<GramAccumulator>> grams_kept_;
  size_t kept_count_ = 0;
  // Scratch, reused across samples: no allocation per sample once warm.
  std::vector<double> rows_, series_values_;
  std::vector<Metrics> computed_;
  std::vector<size_t> now_;
  std::vector<const GramAccumulator*> grams_;
  std::vector<MatrixView> weight_views_;
  std::vector<int64_t> weight_at_;
  std::vector<JumpEvent> events_;
};

}  // namespace ndt
