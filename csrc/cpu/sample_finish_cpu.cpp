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
  NDT_CHECK_ARG(options.spectra_batch >= 1, "spectra_batch must be >= 1, got " << options.spectra_batch);
  validate(options.activations);
  validate(options.weights);
  if (options.detect_jumps) {
    validate(options.ndt_rule);
    validate(options.default_rule);
    banks_.reserve(static_cast<size_t>(options.layers));
    for (int64_t i = 0; i < options.layers; ++i)
      banks_.push_back(std::make_unique<JumpBank>(series(), options.ndt_rule, options.default_rule));
  }
  // Without a full spectrum to solve (trace-type metrics only) or with LAPACK forced there is
  // nothing for the lanes to share: samples are emitted at once.
  const bool spectra = (options.activations.metrics & kSpectrumMetrics) != 0;
  batch_ = spectra && options.activations.solver != EigenSolver::lapack ? options.spectra_batch : 1;
  pending_.resize(static_cast<size_t>(batch_));
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
  for (const int64_t layer : layers) check_layer(layer);
  for (const int64_t layer : failed) check_layer(layer);
  const size_t k = accs.size(), total = k + failed.size();
  Pending& sample = pending_[static_cast<size_t>(pending_count_)];

  // Which Grams wait for the batched solve: those the lanes take whatever else shares the call
  // (so their bits do not depend on the batch). The rest are solved now, all in one call.
  sample.deferred.clear();
  now_.clear();
  for (size_t i = 0; i < k; ++i) {
    if (batch_ > 1 && accs[i]->dim() <= own_solver_max_dim()) {
      // metrics_of_accumulators' checks, made now: an error belongs to this sample, not the flush.
      NDT_CHECK_ARG(accs[i]->rows_seen() > 0, "metrics: the Gram accumulator is empty (no rows were added)");
      NDT_CHECK_ARG(accs[i]->centered() == options_.activations.center,
                    "metrics: the accumulator's centring differs from the options'");
      sample.deferred.push_back(i);
    } else {
      now_.push_back(i);
    }
  }
  grams_.clear();
  for (const size_t i : now_) grams_.push_back(accs[i]);
  computed_.resize(now_.size());
  if (!grams_.empty()) metrics_of_accumulators(grams_, options_.activations, computed_.data());  // throws: nothing kept

  sample.scalars = scalars;
  sample.metrics.assign(total * record::kMetricWidth, kNaN);
  for (size_t j = 0; j < now_.size(); ++j) record::write_metrics(computed_[j], &sample.metrics[now_[j] * record::kMetricWidth]);
  sample.layers.assign(layers.begin(), layers.end());
  sample.rows_seen.resize(total);
  for (size_t i = 0; i < k; ++i) sample.rows_seen[i] = accs[i]->rows_seen();
  for (size_t j = 0; j < failed.size(); ++j) {  // a caught error: NaN metrics, flagged, no rows
    sample.metrics[(k + j) * record::kMetricWidth + record::kMetricWidth - 1] =
        static_cast<double>(record::kFlagTrackerError);
    sample.layers.push_back(failed[j]);
    sample.rows_seen[k + j] = 0;
  }
  if (options_.track_weights) weight_rows(k, total, weights, sample, out);
  for (const size_t i : sample.deferred) {  // the Gram's copy waits; the accumulator is free again
    if (kept_count_ == grams_kept_.size()) grams_kept_.push_back(std::make_unique<GramAccumulator>(*accs[i]));
    else *grams_kept_[kept_count_] = *accs[i];  // (copy-assignment reuses the buffers)
    ++kept_count_;
  }
  // Recorded: the Grams may start the next sample (window > 1 accumulates from the next add on).
  for (GramAccumulator* acc : accs) acc->reset();
  ++pending_count_;
  if (pending_count_ >= batch_) flush(ring, out);
}

void SampleFinisher::weight_rows(size_t k, size_t total, const std::vector<const MatrixView*>& weights,
                                 Pending& sample, SampleOutcome& out) {
  // Now, not at the flush: the views point into live parameters that the optimizer changes.
  sample.weight_metrics.assign(total * record::kMetricWidth, kNaN);
  weight_views_.clear();
  weight_at_.clear();
  for (size_t i = 0; i < k; ++i) {
    if (weights[i] != nullptr) {
      weight_views_.push_back(*weights[i]);
      weight_at_.push_back(static_cast<int64_t>(i));
    }
  }
  if (weight_views_.empty()) return;
  try {  // the activation rows stand whatever happens here; their weight columns stay NaN
    computed_.resize(weight_views_.size());
    metrics_of_matrices(weight_views_, options_.weights, computed_.data());
    for (size_t j = 0; j < weight_at_.size(); ++j)
      record::write_metrics(computed_[j],
                            &sample.weight_metrics[static_cast<size_t>(weight_at_[j]) * record::kMetricWidth]);
  } catch (const std::exception& error) {
    std::fill(sample.weight_metrics.begin(), sample.weight_metrics.end(), kNaN);
    out.weight_error = error.what();
  }
}

void SampleFinisher::flush(RecordRing* ring, SampleOutcome& out) {
  if (pending_count_ == 0) return;
  const auto count = static_cast<size_t>(pending_count_);
  grams_.clear();
  for (size_t j = 0; j < kept_count_; ++j) grams_.push_back(grams_kept_[j].get());
  computed_.resize(grams_.size());
  std::string error;
  try {  // one call: the waiting samples' Grams side by side in the solver's lanes
    if (!grams_.empty()) metrics_of_accumulators(grams_, options_.activations, computed_.data());
  } catch (const std::exception& caught) {  // (checked at finish(): an allocation failure, say)
    error = caught.what();
  }
  size_t next = 0;
  for (size_t s = 0; s < count; ++s) {
    Pending& sample = pending_[s];
    for (const size_t i : sample.deferred) {
      double* row = &sample.metrics[i * record::kMetricWidth];
      if (error.empty()) {
        record::write_metrics(computed_[next], row);
      } else {  // flagged, never lost
        row[record::kMetricWidth - 1] = static_cast<double>(record::kFlagTrackerError);
        out.spectra_error_layers.push_back(sample.layers[i]);
      }
      ++next;
    }
    emit(sample.scalars, static_cast<int64_t>(sample.layers.size()), sample.layers.data(), sample.metrics.data(),
         options_.track_weights ? sample.weight_metrics.data() : nullptr, sample.rows_seen.data(), ring, out);
  }
  if (!error.empty()) out.spectra_error = error;
  pending_count_ = 0;
  kept_count_ = 0;
}

void SampleFinisher::record(const SampleScalars& scalars, int64_t k, const int64_t* layers, const double* metrics,
                            const double* weight_metrics, const int64_t* rows_seen, RecordRing* ring,
                            SampleOutcome& out) {
  NDT_CHECK_ARG(k >= 0, "negative record count");
  for (int64_t i = 0; i < k; ++i) check_layer(layers[i]);
  flush(ring, out);  // the waiting samples are older
  emit(scalars, k, layers, metrics, options_.track_weights ? weight_metrics : nullptr, rows_seen, ring, out);
}

void SampleFinisher::emit(const SampleScalars& scalars, int64_t k, const int64_t* layers, const double* metrics,
                          const double* weight_metrics, const int64_t* rows_seen, RecordRing* ring,
                          SampleOutcome& out) {
  // (layers were checked by finish() / record(): nothing here throws, so a flush cannot stop halfway)
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
  // Once a record of this call went to the overflow, every later one follows it there: pushing
  // it into the ring would put it before the older overflow.
  if (ring == nullptr || !out.overflow.empty() || !ring->push(rows_.data(), count))
    out.overflow.insert(out.overflow.end(), rows_.begin(), rows_.end());
}

void SampleFinisher::replay(int64_t layer, int64_t count, const int64_t* steps, const double* values) {
  check_layer(layer);
  if (banks_.empty() || count == 0) return;
  events_.clear();
  banks_[static_cast<size_t>(layer)]->push_many(count, steps, values, events_);
  events_.clear();
}

}  // namespace ndt
