// One sample's finish as the bindings receive it: converted from Python once (with the GIL),
// then run without it — on the calling thread (SampleFinisher.finish) or on the background
// worker (FinishWorker.submit, bindings_worker.cpp). Binding-only: the core never sees Python.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "ndt/gram.h"
#include "ndt/parallel.h"
#include "ndt/record_ring.h"
#include "ndt/sample_finish.h"
#include "view_tuple.h"

namespace ndt_binding {

struct FinishCall {
  ndt::SampleScalars scalars;
  std::vector<int64_t> layers;
  std::vector<ndt::GramAccumulator*> accs;
  std::vector<std::optional<ndt::MatrixView>> weights;  // per accumulator: a weight matrix or none
  std::vector<int64_t> failed;
  int threads = 0;
  std::vector<std::optional<ndt::MatrixView>> refills;  // empty, or per accumulator: rows whose Gram replaces it

  /// Checks and converts the arguments (std::invalid_argument → ValueError: a weight view that is
  /// not a matrix, refills of the wrong length). The views' owners must outlive run().
  FinishCall(int64_t step, double loss, double grad_norm, std::vector<int64_t> layer_indices,
             std::vector<ndt::GramAccumulator*> accumulators, const std::vector<std::optional<ViewTuple>>& weight_views,
             std::vector<int64_t> failed_layers, int thread_budget, const std::vector<std::optional<ViewTuple>>& rows)
      : scalars{step, loss, grad_norm},
        layers(std::move(layer_indices)),
        accs(std::move(accumulators)),
        failed(std::move(failed_layers)),
        threads(thread_budget) {
    for (const auto& w : weight_views) {
      weights.emplace_back();
      if (w) {
        weights.back() = to_view(*w);
        ndt::validate(*weights.back(), "weight");
      }
    }
    if (!rows.empty() && rows.size() != accs.size())
      throw std::invalid_argument("refills: one entry (a view or None) per accumulator, or none");
    for (const auto& r : rows) {
      refills.emplace_back();
      if (r) refills.back() = to_view(*r);
    }
  }

  /// The refills' Grams, then the finish (SampleFinisher::finish's contract); no Python here.
  void run(ndt::SampleFinisher& finisher, ndt::RecordRing* ring, ndt::SampleOutcome& out) const {
    const ndt::ThreadBudgetScope budget(threads);
    for (size_t i = 0; i < refills.size(); ++i) {
      if (refills[i] && accs[i] != nullptr) {
        accs[i]->reset();
        accs[i]->add(*refills[i]);
      }
    }
    std::vector<const ndt::MatrixView*> pointers(weights.size(), nullptr);
    for (size_t i = 0; i < weights.size(); ++i) {
      if (weights[i]) pointers[i] = &*weights[i];
    }
    finisher.finish(scalars, layers, accs, pointers, failed, ring, out);
  }
};

/// A finished sample's leftovers for Python (bindings.cpp): None, or (overflow, detections,
/// weight error, spectra error).
pybind11::object outcome_to_python(const ndt::SampleOutcome& out, int64_t width);

/// Registers FinishWorker (bindings_worker.cpp).
void register_worker(pybind11::module_& m);

}  // namespace ndt_binding
