#include "ndt/sample_finish.h"

#include <algorithm>
#include <exception>
#include <limits>

#include "ndt/check.h"
#include "ndt/record_schema.h"

namespace ndt {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

SampleFinisher::SampleFinisher(const SampleFinishOptions& options)
    : options_(options), width_(record::width(options.track_weights)) {
  NDT_CHECK_ARG(options.layers >= 1, "a tracker needs at least one layer, got " << options.layers);
  validate(options.activations);
  validate(options.weights);
  if (options.detect_jumps) {
    validate(options.ndt_rule);
    validate(options.default_rule);
    banks_.reserve(static_cast<size_t>(options.layers));
    for (int64_t i = 0; i < options.layers; ++i)
      banks_.push_back(std::make_unique<JumpBank>(series(), options.ndt_rule, options.default_rule));
  }
}

int64_t SampleFinisher::series() const {
  return record::kMetricCount * (options_.track_weights ? 2 : 1);
}

void SampleFinisher::check_layer(int64_t layer) const {
  NDT_CHECK_ARG(layer >= 0 && layer < options_.layers,
                "layer index " << layer << " outside [0, " << options_.layers << ")");
}

void SampleFinisher::finish(const SampleScalars& scalars, const std::vector<int64_t>& layers,
                            const std::vector<GramAccumulator*>& accs, const std::vector<const MatrixView*>& weights,
                            const std::vector<int64_t>& failed, RecordRing* ring, SampleOutcome& out) {
  NDT_CHECK_ARG(layers.size() == accs.size() && weights.size() == accs.size(),
                "layers, accumulators and weights must have one entry per layer");
  for (const GramAccumulator* acc : accs) NDT_CHECK_ARG(acc != nullptr, "an accumulator is missing");
  const size_t k = accs.size(), total = k + failed.size();
  computed_.resize(k);
  grams_.assign(accs.begin(), accs.end());
  metrics_of_accumulators(grams_, options_.activations, computed_.data());  // throws: nothing recorded yet

  metrics_.resize(total * record::kMetricWidth);
  for (size_t i = 0; i < k; ++i) record::write_metrics(computed_[i], &metrics_[i * record::kMetricWidth]);
  layers_.assign(layers.begin(), layers.end());
  rows_seen_.resize(total);
  for (size_t i = 0; i < k; ++i) rows_seen_[i] = accs[i]->rows_seen();
  for (size_t j = 0; j < failed.size(); ++j) {  // a caught error: NaN metrics, flagged, no rows
    double* row = &metrics_[(k + j) * record::kMetricWidth];
    std::fill(row, row + record::kMetricWidth, kNaN);
    row[record::kMetricWidth - 1] = static_cast<double>(record::kFlagTrackerError);
    layers_.push_back(failed[j]);
    rows_seen_[k + j] = 0;
  }

  const double* weight_metrics = nullptr;
  if (options_.track_weights) {
    weight_metrics_.assign(total * record::kMetricWidth, kNaN);
    weight_views_.clear();
    weight_at_.clear();
    for (size_t i = 0; i < k; ++i) {
      if (weights[i] != nullptr) {
        weight_views_.push_back(*weights[i]);
        weight_at_.push_back(static_cast<int64_t>(i));
      }
    }
    if (!weight_views_.empty()) {
      try {  // the activation rows stand whatever happens here; their weight columns stay NaN
        computed_.resize(weight_views_.size());
        metrics_of_matrices(weight_views_, options_.weights, computed_.data());
        for (size_t j = 0; j < weight_at_.size(); ++j)
          record::write_metrics(computed_[j], &weight_metrics_[static_cast<size_t>(weight_at_[j]) * record::kMetricWidth]);
      } catch (const std::exception& error) {
        std::fill(weight_metrics_.begin(), weight_metrics_.end(), kNaN);
        out.weight_error = error.what();
      }
    }
    weight_metrics = weight_metrics_.data();
  }
  // Recorded: the Grams may start the next sample (window > 1 accumulates from the next add on).
  for (GramAccumulator* acc : accs) acc->reset();
  emit(scalars, static_cast<int64_t>(total), layers_.data(), metrics_.data(), weight_metrics, rows_seen_.data(),
       ring, out);
}

void SampleFinisher::record(const SampleScalars& scalars, int64_t k, const int64_t* layers, const double* metrics,
                            const double* weight_metrics, const int64_t* rows_seen, RecordRing* ring,
                            SampleOutcome& out) {
  NDT_CHECK_ARG(k >= 0, "negative record count");
  emit(scalars, k, layers, metrics, options_.track_weights ? weight_metrics : nullptr, rows_seen, ring, out);
}

void SampleFinisher::emit(const SampleScalars& scalars, int64_t k, const int64_t* layers, const double* metrics,
                          const double* weight_metrics, const int64_t* rows_seen, RecordRing* ring,
                          SampleOutcome& out) {
  for (int64_t i = 0; i < k; ++i) check_layer(layers[i]);
  const auto width = static_cast<size_t>(width_);
  rows_.assign(static_cast<size_t>(k) * width, kNaN);
  for (int64_t i = 0; i < k; ++i) {
    double* row = &rows_[static_cast<size_t>(i) * width];
    const double* m = metrics + i * record::kMetricWidth;
    row[0] = record::kKindSample;
    row[1] = static_cast<double>(layers[i]);
    row[record::kStep] = static_cast<double>(scalars.step);
    std::copy(m, m + 4, row + record::kNdtMetrics);  // stable_rank … nuclear_norm_ratio
    row[record::kLoss] = scalars.loss;
    row[record::kGradNorm] = scalars.grad_norm;
    std::copy(m + 4, m + 9, row + record::kExtras);  // participation_ratio_eig … flags
    row[record::kRows] = static_cast<double>(rows_seen[i]);
    if (options_.track_weights) {
      if (weight_metrics != nullptr) {
        const double* w = weight_metrics + i * record::kMetricWidth;
        std::copy(w, w + record::kWeightColumnCount, row + record::kWeights);
      }
    }
  }
  int64_t count = k;
  if (!banks_.empty()) {
    const int64_t series = this->series();
    series_values_.resize(static_cast<size_t>(series));
    for (int64_t i = 0; i < k; ++i) {
      const double* m = metrics + i * record::kMetricWidth;
      std::copy(m, m + record::kMetricCount, series_values_.begin());
      if (options_.track_weights) {
        if (weight_metrics != nullptr) {
          const double* w = weight_metrics + i * record::kMetricWidth;
          std::copy(w, w + record::kMetricCount, series_values_.begin() + record::kMetricCount);
        } else {
          std::fill(series_values_.begin() + record::kMetricCount, series_values_.end(), kNaN);
        }
      }
      events_.clear();
      banks_[static_cast<size_t>(layers[i])]->push(scalars.step, series_values_.data(), events_);
      for (const JumpEvent& e : events_) {
        out.jumps.push_back(e);
        out.jump_layers.push_back(layers[i]);
        rows_.resize(rows_.size() + width, kNaN);
        double* row = &rows_[static_cast<size_t>(count) * width];
        row[0] = record::kKindJump;
        row[1] = static_cast<double>(layers[i]);
        row[2] = static_cast<double>(e.step);
        row[3] = static_cast<double>(e.series);
        row[4] = static_cast<double>(e.rule);
        row[5] = e.z;
        row[6] = e.before;
        row[7] = e.after;
        ++count;
      }
    }
  }
  if (count == 0) return;
  if (ring == nullptr || !ring->push(rows_.data(), count)) out.overflow.insert(out.overflow.end(), rows_.begin(), rows_.end());
}

void SampleFinisher::replay(int64_t layer, int64_t count, const int64_t* steps, const double* values) {
  check_layer(layer);
  if (banks_.empty() || count == 0) return;
  events_.clear();
  banks_[static_cast<size_t>(layer)]->push_many(count, steps, values, events_);
  events_.clear();
}

}  // namespace ndt
