// FinishWorker: a sample's Grams and finish on the native background thread (ndt/worker_thread.h)
// for the tracker's background_finish (ndt_fast/tracker/background.py).
//
// submit() converts the arguments on the calling (training) thread and hands the worker a job
// that touches no Python object; result() takes its outcome back and converts it there. Neither
// waits for the GIL, which a Python worker would need to start and to end each job.
//
// Lifetimes: the job reads the finisher, the ring, the accumulators and the memory behind the
// views. submit()'s `keep` (plus the finisher, ring and accumulators) is referenced until
// the result is taken, or the worker is destroyed — whose destructor waits for the job first.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "finish_call.h"
#include "ndt/worker_thread.h"

namespace py = pybind11;

namespace ndt_binding {
namespace {

class FinishWorker {
 public:
  FinishWorker() : thread_("ndt_fast-finish") {}
  ~FinishWorker() {
    // Called with the GIL held (the Python object's deallocation): the job never takes it.
    thread_.stop();
  }

  void start() { thread_.start(); }

  void submit(py::object finisher, py::object ring, int64_t step, double loss, double grad_norm,
              std::vector<int64_t> layers, py::object accumulators, const std::vector<std::optional<ViewTuple>>& weights,
              std::vector<int64_t> failed, int threads, const std::vector<std::optional<ViewTuple>>& refills,
              py::object keep) {
    if (thread_.in_flight()) throw std::logic_error("FinishWorker.submit: a sample is in flight (take its result first)");
    auto* target = finisher.cast<ndt::SampleFinisher*>();
    auto* records = ring.is_none() ? nullptr : ring.cast<ndt::RecordRing*>();
    auto call = std::make_shared<const FinishCall>(step, loss, grad_norm, std::move(layers),
                                                   accumulators.cast<std::vector<ndt::GramAccumulator*>>(), weights,
                                                   std::move(failed), threads, refills);
    width_ = target->width();
    out_.clear();
    ndt::SampleOutcome* out = &out_;
    keep_ = py::make_tuple(finisher, ring, accumulators, keep);  // (before the job can run)
    try {
      thread_.submit([call, target, records, out] { call->run(*target, records, *out); });
    } catch (...) {  // (a forked child that cannot make its own thread): nothing in flight
      keep_ = py::none();
      throw;
    }
  }

  /// None (nothing in flight, or still running and not `wait`), else (outcome, error): the
  /// finish's return value (see SampleFinisher.finish) or None, and the exception it raised or None.
  py::object result(bool wait) {
    if (!thread_.in_flight() || (!wait && !thread_.done())) return py::none();
    std::exception_ptr error;
    {
      py::gil_scoped_release release;
      error = thread_.take();
    }
    keep_ = py::none();
    if (error) return py::make_tuple(py::none(), to_python(error));
    return py::make_tuple(outcome_to_python(out_, width_), py::none());
  }

  bool in_flight() const { return thread_.in_flight(); }

  /// Waits for the job in flight (its result is dropped: take it before) and ends the thread.
  void close() {
    {
      py::gil_scoped_release release;
      thread_.stop();
    }
    keep_ = py::none();
  }

 private:
  /// The exception a job threw, as the Python exception the bindings raise for it.
  static py::object to_python(const std::exception_ptr& error) {
    py::module_ builtins = py::module_::import("builtins");
    try {
      std::rethrow_exception(error);
    } catch (const std::invalid_argument& e) {
      return builtins.attr("ValueError")(e.what());
    } catch (const std::exception& e) {
      return builtins.attr("RuntimeError")(e.what());
    } catch (...) {
      return builtins.attr("RuntimeError")("unknown native error");
    }
  }

  // (declared before thread_: destroyed after it, once the job has ended)
  py::object keep_ = py::none();
  ndt::SampleOutcome out_;
  int64_t width_ = 0;
  ndt::WorkerThread thread_;
};

}  // namespace

void register_worker(py::module_& m) {
  py::class_<FinishWorker>(m, "FinishWorker",
                           "One native background thread finishing one sample at a time (background_finish).")
      .def(py::init<>())
      .def("start", &FinishWorker::start,
           "Makes the thread (once). RuntimeError when the system cannot: finish samples on the caller's thread.")
      .def("submit", &FinishWorker::submit, py::arg("finisher"), py::arg("ring").none(true), py::arg("step"),
           py::arg("loss"), py::arg("grad_norm"), py::arg("layers"), py::arg("accumulators"), py::arg("weights"),
           py::arg("failed"), py::arg("threads"), py::arg("refills"), py::arg("keep"),
           "SampleFinisher.finish(ring, ...) with these arguments, on the thread; returns at once. `keep`: "
           "the owners of the views' memory, referenced until the result is taken. ValueError for bad "
           "arguments (nothing submitted); RuntimeError when not started or a sample is in flight.")
      .def("result", &FinishWorker::result, py::arg("wait"),
           "None (nothing in flight, or running and not `wait`), else (outcome, error): what finish() "
           "returns, or the exception it raised (ValueError / RuntimeError), the other None.")
      .def_property_readonly("in_flight", &FinishWorker::in_flight, "Submitted and its result not taken.")
      .def("close", &FinishWorker::close, "Waits for the sample in flight (result dropped) and ends the thread.");
}

}  // namespace ndt_binding
