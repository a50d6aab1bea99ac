// The record schema: the one definition of the fixed-width float64 records a tracker writes.
//
// Every other place derives from this header: the binding exports these names and offsets
// (ndt_fast._core.RECORD_COLUMNS, SAMPLE_COLUMNS, …), the Python storage layer and tracker take
// their offsets from those exports, and the CUDA kernels write metric records of this width.
//
//   metric record (one matrix):     METRIC_COLUMNS, kMetricWidth doubles (ndt::Metrics as a row)
//   sample record (one layer, one training step, in the ring and the run file):
//       [kind = kKindSample, layer, SAMPLE_COLUMNS…, WEIGHT_COLUMNS… (only when weights are tracked)]
//   jump record (one detection):
//       [kind = kKindJump, layer, JUMP_COLUMNS…, NaN padding up to the sample record's width]
//
// float64 holds every integer field exactly (steps, layers, flags < 2^53).
#pragma once

#include <cstdint>

#include "ndt/metrics.h"

namespace ndt::record {

/// Columns of a metric record: the fields of ndt::Metrics in order (flags as a double).
inline constexpr const char* kMetricColumns[] = {
    "stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio", "participation_ratio_eig",
    "effective_rank", "trace", "lambda_max", "flags"};
inline constexpr int kMetricWidth = 9;
/// The six metrics, the first columns of a metric record; a jump bank watches these per layer
/// (then the six weight metrics when weights are tracked).
inline constexpr int kMetricCount = 6;

/// Header fields before a sample's or a jump's columns.
inline constexpr const char* kHeaderColumns[] = {"kind", "layer"};
inline constexpr int kHeaderWidth = 2;
inline constexpr double kKindSample = 0.0;
inline constexpr double kKindJump = 1.0;

/// A layer's table: ndt's columns first (step, its four metrics, loss, grad_norm), then the extras.
inline constexpr const char* kSampleColumns[] = {
    "step", "stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio", "loss", "grad_norm",
    "participation_ratio_eig", "effective_rank", "trace", "lambda_max", "flags", "rows"};
inline constexpr int kSampleColumnCount = 13;
/// The weight matrix's six metrics (track_weights), after the sample columns.
inline constexpr const char* kWeightColumns[] = {
    "weight_stable_rank", "weight_participation_ratio", "weight_cumulative_90", "weight_nuclear_norm_ratio",
    "weight_participation_ratio_eig", "weight_effective_rank"};
inline constexpr int kWeightColumnCount = 6;
inline constexpr const char* kJumpColumns[] = {"step", "metric", "rule", "z_score", "value_before", "value_after"};
inline constexpr int kJumpColumnCount = 6;

// Offsets inside a sample record (header included).
inline constexpr int kStep = kHeaderWidth + 0;
inline constexpr int kNdtMetrics = kHeaderWidth + 1;  ///< stable_rank … nuclear_norm_ratio (4)
inline constexpr int kLoss = kHeaderWidth + 5;
inline constexpr int kGradNorm = kHeaderWidth + 6;
inline constexpr int kExtras = kHeaderWidth + 7;  ///< participation_ratio_eig … flags (5)
inline constexpr int kRows = kHeaderWidth + 12;
inline constexpr int kWeights = kHeaderWidth + kSampleColumnCount;

/// Flag of a row whose sample met a caught error in the tracker (a hook or the computation):
/// its metrics are NaN. Above the core's kFlag* bits.
inline constexpr uint32_t kFlagTrackerError = 1u << 16;

/// Doubles per record of a run: sample columns (+ weight columns), or the jump columns if wider.
constexpr int64_t width(bool with_weights) {
  const int64_t sample = kSampleColumnCount + (with_weights ? kWeightColumnCount : 0);
  return kHeaderWidth + (sample > kJumpColumnCount ? sample : kJumpColumnCount);
}

/// Metrics as a metric record row (kMetricWidth doubles).
inline void write_metrics(const Metrics& m, double* row) {
  row[0] = m.stable_rank;
  row[1] = m.participation_ratio;
  row[2] = m.cumulative_90;
  row[3] = m.nuclear_norm_ratio;
  row[4] = m.participation_ratio_eig;
  row[5] = m.effective_rank;
  row[6] = m.trace;
  row[7] = m.lambda_max;
  row[8] = static_cast<double>(m.flags);
}

}  // namespace ndt::record
