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
  void clear() {
    overflow.clear();
    jumps.clear();
    jump_layers.clear();
    weight_error.clear();
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
  /// out.overflow). Throws (before recording anything, Grams left as they were) whatever the
  /// activation metrics throw; a failure of the weight metrics leaves their columns NaN and says
  /// why in out.weight_error.
  void finish(const SampleScalars& scalars, const std::vector<int64_t>& layers,
              const std::vector<GramAccumulator*>& accs, const std::vector<const MatrixView*>& weights,
              const std::vector<int64_t>& failed, RecordRing* ring, SampleOutcome& out);

  /// One sample whose metric records (k × record::kMetricWidth) were computed elsewhere;
  /// `weight_metrics` likewise or nullptr (NaN weight columns); `rows_seen` per layer.
  void record(const SampleScalars& scalars, int64_t k, const int64_t* layers, const double* metrics,
              const double* weight_metrics, const int64_t* rows_seen, RecordRing* ring, SampleOutcome& out);

  /// Resume: feeds a layer's earlier samples (count × series() values, row-major) to its bank;
  /// their detections are dropped (the run file holds them already).
  void replay(int64_t layer, int64_t count, const int64_t* steps, const double* values);

 private:
  void emit(const SampleScalars& scalars, int64_t k, const int64_t* layers, const double* metrics,
            const double* weight_metrics, const int64_t* rows_seen, RecordRing* ring, SampleOutcome& out);
  void check_layer(int64_t layer) const;

  SampleFinishOptions options_;
  int64_t width_;
  std::vector<std::unique_ptr<JumpBank>> banks_;
  // Scratch, reused across samples: no allocation per sample once warm.
  std::vector<double> rows_, metrics_, weight_metrics_, series_values_;
  std::vector<Metrics> computed_;
  std::vector<int64_t> layers_, rows_seen_;
  std::vector<const GramAccumulator*> grams_;
  std::vector<MatrixView> weight_views_;
  std::vector<int64_t> weight_at_;
  std::vector<JumpEvent> events_;
};

}  // namespace ndt
