// The one binding file: Python objects → plain core descriptions, GIL released around all work.
//
// Buffers arrive as "view tuples" built by ndt_fast/_buffer.py:
//   (data_pointer: int, dtype_code: int, rows: int, cols: int, row_stride: int, col_stride: int)
// with strides in elements. The Python caller keeps the owning array/tensor alive for the call.
// C++ exceptions: std::invalid_argument → ValueError (pybind11's default), others → RuntimeError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <dlfcn.h>

#include <algorithm>
#include <numeric>
#include <optional>

#include <string>
#include <vector>

#include "ndt/check.h"
#include "ndt/eigen.h"
#include "ndt/gram.h"
#include "ndt/jumps.h"
#include "ndt/linalg_registry.h"
#include "ndt/metrics.h"
#include "ndt/parallel.h"
#include "ndt/record_ring.h"
#include "ndt/record_schema.h"
#include "ndt/sample_finish.h"
#include "finish_call.h"
#include "view_tuple.h"

namespace py = pybind11;

#ifdef NDT_WITH_CUDA
void register_cuda(py::module_& m);  // bindings_cuda.cpp
#endif

namespace {

using ndt_binding::to_view;
using ndt_binding::ViewTuple;
using ndt_binding::outcome_to_python;
constexpr int kRecordWidth = ndt::record::kMetricWidth;  // ndt/record_schema.h

ndt::GramSide to_side(const std::string& side) {
  if (side == "feature") return ndt::GramSide::feature;
  if (side == "sample") return ndt::GramSide::sample;
  throw std::invalid_argument("side must be 'feature' or 'sample', got '" + side + "'");
}

ndt::Accumulate to_accumulate(const std::string& name) {
  if (name == "float64") return ndt::Accumulate::float64;
  if (name == "float32") return ndt::Accumulate::float32;
  throw std::invalid_argument("accumulate must be 'float64' or 'float32', got '" + name + "'");
}

ndt::EigenSolver to_solver(const std::string& name) {
  if (name == "auto") return ndt::EigenSolver::automatic;
  if (name == "own") return ndt::EigenSolver::tridiagonal_ql;
  if (name == "lapack") return ndt::EigenSolver::lapack;
  throw std::invalid_argument("solver must be 'auto', 'own' or 'lapack', got '" + name + "'");
}

ndt::MetricOptions to_options(double eps, double energy_threshold, bool center, uint32_t metrics,
                              const std::string& solver) {
  ndt::MetricOptions o;
  o.eps = eps;
  o.energy_threshold = energy_threshold;
  o.center = center;
  o.metrics = metrics;
  o.solver = to_solver(solver);
  ndt::validate(o);
  return o;
}

py::array_t<double> records_to_array(const std::vector<ndt::Metrics>& records) {
  py::array_t<double> out({static_cast<py::ssize_t>(records.size()), static_cast<py::ssize_t>(kRecordWidth)});
  auto r = out.mutable_unchecked<2>();
  for (size_t i = 0; i < records.size(); ++i) {
    double row[kRecordWidth];
    ndt::record::write_metrics(records[i], row);
    for (int j = 0; j < kRecordWidth; ++j) r(static_cast<py::ssize_t>(i), j) = row[j];
  }
  return out;
}

py::array_t<double> vector_to_array(const std::vector<double>& v) {
  py::array_t<double> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

void* capsule_pointer(const py::dict& capi, const char* name) {
  if (!capi.contains(name)) return nullptr;
  PyObject* capsule = py::object(capi[name]).ptr();
  if (!PyCapsule_CheckExact(capsule)) return nullptr;
  void* p = PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule));
  if (!p) PyErr_Clear();
  return p;
}

// Finds `name` in the shared library that holds `anchor` or in its dependencies (dlsym on a
// handle searches both): SciPy's BLAS wrappers live in cython_blas.so, OpenBLAS in its dependency.
void* symbol_near(void* anchor, const char* name) {
  Dl_info info;
  if (anchor == nullptr || dladdr(anchor, &info) == 0 || info.dli_fname == nullptr) return nullptr;
  void* handle = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) return nullptr;
  void* symbol = dlsym(handle, name);
  dlclose(handle);
  return symbol;
}

py::array_t<double> full_gram(const ViewTuple& view, const std::string& side, const std::string& accumulate,
                              bool reference) {
  const ndt::MatrixView x = to_view(view);
  ndt::validate(x, "gram");
  const ndt::GramSide s = to_side(side);
  const int64_t n = s == ndt::GramSide::feature ? x.cols : x.rows;
  const ndt::Accumulate acc = to_accumulate(accumulate);  // parse while holding the GIL
  py::array_t<double> out({n, n});
  double* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    auto fill = [&](auto* lower) {
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j <= i; ++j) o[i * n + j] = o[j * n + i] = static_cast<double>(lower[i * n + j]);
    };
    if (acc == ndt::Accumulate::float64) {
      std::vector<double> g(static_cast<size_t>(n * n), 0.0);
      if (reference) ndt::gram_update_reference<double>(x, s, g.data());
      else ndt::gram_update<double>(x, s, g.data());
      fill(g.data());
    } else {
      std::vector<float> g(static_cast<size_t>(n * n), 0.0f);
      if (reference) ndt::gram_update_reference<float>(x, s, g.data());
      else ndt::gram_update<float>(x, s, g.data());
      fill(g.data());
    }
  }
  return out;
}

// Folds one matrix into an accumulator with the GIL released (after reset() when `replace`).
void add_view(ndt::GramAccumulator& acc, const ViewTuple& view, int threads, bool replace) {
  const ndt::MatrixView x = to_view(view);
  py::gil_scoped_release release;
  const ndt::ThreadBudgetScope budget(threads);
  if (replace) acc.reset();
  acc.add(x);
}

template <size_t N>
py::tuple names(const char* const (&columns)[N]) {
  py::tuple out(N);
  for (size_t i = 0; i < N; ++i) out[i] = py::str(columns[i]);
  return out;
}

// Detections as float64 rows (indices and steps exact below 2^53): with `layers`, the layer first
// (FINISH_JUMP_COLUMNS), else JUMP_EVENT_COLUMNS.
py::array_t<double> event_rows(const std::vector<ndt::JumpEvent>& events, const std::vector<int64_t>* layers) {
  const int skip = layers != nullptr ? 1 : 0;
  py::array_t<double> out({static_cast<py::ssize_t>(events.size()), static_cast<py::ssize_t>(7 + skip)});
  auto r = out.mutable_unchecked<2>();
  for (size_t i = 0; i < events.size(); ++i) {
    const auto& e = events[i];
    const auto row = static_cast<py::ssize_t>(i);
    if (layers != nullptr) r(row, 0) = static_cast<double>((*layers)[i]);
    r(row, skip + 0) = static_cast<double>(e.series);
    r(row, skip + 1) = static_cast<double>(e.rule);
    r(row, skip + 2) = static_cast<double>(e.index);
    r(row, skip + 3) = static_cast<double>(e.step);
    r(row, skip + 4) = e.z;
    r(row, skip + 5) = e.before;
    r(row, skip + 6) = e.after;
  }
  return out;
}

}  // namespace

// A finished sample's leftovers for Python: None in the usual case (every record in the ring,
// no detection, no error), else (overflow rows or None, detections (k, 8) of
// FINISH_JUMP_COLUMNS or None, weight error text or None, spectra error or None) where the
// spectra error is (text, layers of the flagged rows) from a failed batched solve.
py::object ndt_binding::outcome_to_python(const ndt::SampleOutcome& out, int64_t width) {
  if (out.overflow.empty() && out.jumps.empty() && out.weight_error.empty() && out.spectra_error.empty())
    return py::none();
  py::object overflow = py::none(), jumps = py::none(), weight_error = py::none(), spectra_error = py::none();
  if (!out.overflow.empty()) {
    py::array_t<double> rows({static_cast<py::ssize_t>(out.overflow.size()) / width, static_cast<py::ssize_t>(width)});
    std::copy(out.overflow.begin(), out.overflow.end(), rows.mutable_data());
    overflow = rows;
  }
  if (!out.jumps.empty()) jumps = event_rows(out.jumps, &out.jump_layers);
  if (!out.weight_error.empty()) weight_error = py::str(out.weight_error);
  if (!out.spectra_error.empty()) spectra_error = py::make_tuple(py::str(out.spectra_error), out.spectra_error_layers);
  return py::make_tuple(overflow, jumps, weight_error, spectra_error);
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "ndt_fast native core (private; use the ndt_fast package).";

  // ---- the record schema (ndt/record_schema.h): every Python module derives its offsets from these
  m.attr("RECORD_COLUMNS") = names(ndt::record::kMetricColumns);
  m.attr("RECORD_HEADER") = names(ndt::record::kHeaderColumns);
  m.attr("SAMPLE_COLUMNS") = names(ndt::record::kSampleColumns);
  m.attr("WEIGHT_COLUMNS") = names(ndt::record::kWeightColumns);
  m.attr("JUMP_COLUMNS") = names(ndt::record::kJumpColumns);
  m.attr("KIND_SAMPLE") = static_cast<int>(ndt::record::kKindSample);
  m.attr("KIND_JUMP") = static_cast<int>(ndt::record::kKindJump);
  m.attr("FLAG_TRACKER_ERROR") = ndt::record::kFlagTrackerError;
  m.attr("METRIC_BITS") = py::dict(
      py::arg("stable_rank") = static_cast<uint32_t>(ndt::kStableRank),
      py::arg("participation_ratio") = static_cast<uint32_t>(ndt::kParticipationRatio),
      py::arg("cumulative_90") = static_cast<uint32_t>(ndt::kCumulative90),
      py::arg("nuclear_norm_ratio") = static_cast<uint32_t>(ndt::kNuclearNormRatio),
      py::arg("participation_ratio_eig") = static_cast<uint32_t>(ndt::kParticipationRatioEig),
      py::arg("effective_rank") = static_cast<uint32_t>(ndt::kEffectiveRank));
  m.attr("FLAG_NON_FINITE") = static_cast<uint32_t>(ndt::kFlagNonFinite);
  m.attr("FLAG_ZERO") = static_cast<uint32_t>(ndt::kFlagZero);
  m.attr("FLAG_NOT_CONVERGED") = static_cast<uint32_t>(ndt::kFlagNotConverged);
  m.attr("OWN_SOLVER_MAX_DIM") = ndt::own_solver_max_dim();
#ifdef NDT_WITH_CUDA
  m.attr("HAS_CUDA") = true;  // the submodule _core.cuda exists (usable only with a GPU)
  register_cuda(m);
#else
  m.attr("HAS_CUDA") = false;
#endif

  m.def(
      "register_linalg",
      [](py::object blas_capi, py::object lapack_capi) {
        ndt::LinalgRoutines r;
        if (!blas_capi.is_none()) {
          const auto d = blas_capi.cast<py::dict>();
          r.dsyrk = reinterpret_cast<ndt::dsyrk_fn>(capsule_pointer(d, "dsyrk"));
          r.ssyrk = reinterpret_cast<ndt::ssyrk_fn>(capsule_pointer(d, "ssyrk"));
        }
        if (!lapack_capi.is_none()) {
          const auto d = lapack_capi.cast<py::dict>();
          r.dsyevd = reinterpret_cast<ndt::dsyevd_fn>(capsule_pointer(d, "dsyevd"));
        }
        void* anchor = r.dsyrk ? reinterpret_cast<void*>(r.dsyrk) : reinterpret_cast<void*>(r.dsyevd);
        r.set_threads_local = reinterpret_cast<ndt::set_threads_local_fn>(symbol_near(anchor, "openblas_set_num_threads_local"));
        ndt::register_linalg(r);
      },
      py::arg("blas_capi"), py::arg("lapack_capi"),
      "Registers SciPy's BLAS/LAPACK (the __pyx_capi__ dicts of scipy.linalg.cython_blas/_lapack); "
      "None disables that library. Call at import time only.");

  m.def("set_num_threads", &ndt::set_max_threads, py::arg("n"),
        "Threads the batched entry points may use across layers (default: hardware concurrency).");
  m.def("get_num_threads", &ndt::max_threads);

  m.def("linalg_status", [] {
    const auto& r = ndt::linalg();
    return py::dict(py::arg("dsyrk") = r.dsyrk != nullptr, py::arg("ssyrk") = r.ssyrk != nullptr,
                    py::arg("dsyevd") = r.dsyevd != nullptr,
                    py::arg("set_threads_local") = r.set_threads_local != nullptr);
  });

  m.def(
      "metrics",
      [](const std::vector<ViewTuple>& views, double eps, double energy_threshold, bool center, uint32_t metrics,
         const std::string& solver, int threads) {
        const ndt::MetricOptions o = to_options(eps, energy_threshold, center, metrics, solver);
        std::vector<ndt::MatrixView> xs;
        xs.reserve(views.size());
        for (const auto& v : views) xs.push_back(to_view(v));
        std::vector<ndt::Metrics> out(xs.size());
        {
          py::gil_scoped_release release;
          const ndt::ThreadBudgetScope budget(threads);
          ndt::metrics_of_matrices(xs, o, out.data());
        }
        return records_to_array(out);
      },
      py::arg("views"), py::kw_only(), py::arg("eps"), py::arg("energy_threshold"), py::arg("center"),
      py::arg("metrics"), py::arg("solver"), py::arg("threads") = 0,
      "Metrics of each matrix (its smaller Gram, float64): array (len(views), 9) of RECORD_COLUMNS. "
      "threads: at most this many threads (ours and BLAS's); 0 = automatic.");

  m.def(
      "gram_eigenvalues",
      [](const ViewTuple& view, bool center, const std::string& solver) {
        const ndt::MatrixView x = to_view(view);
        const ndt::EigenSolver s = to_solver(solver);
        std::vector<double> lambda;
        {
          py::gil_scoped_release release;
          lambda = ndt::gram_eigenvalues(x, center, s);
        }
        return vector_to_array(lambda);
      },
      py::arg("view"), py::kw_only(), py::arg("center"), py::arg("solver"));

  m.def(
      "symmetric_eigenvalues",
      [](py::array_t<double, py::array::c_style | py::array::forcecast> a, const std::string& solver) {
        if (a.ndim() != 2 || a.shape(0) != a.shape(1) || a.shape(0) < 1)
          throw std::invalid_argument("symmetric_eigenvalues: expected a non-empty square matrix");
        const int64_t n = a.shape(0);
        std::vector<double> work(a.data(), a.data() + n * n), lambda(static_cast<size_t>(n));
        const ndt::EigenSolver s = to_solver(solver);
        {
          py::gil_scoped_release release;
          ndt::symmetric_eigenvalues(work.data(), n, lambda.data(), s);
        }
        return vector_to_array(lambda);
      },
      py::arg("a"), py::arg("solver") = "auto",
      "Eigenvalues (descending) of a symmetric float64 matrix (both triangles used); NaN if non-finite.");

  // ---- batched symmetric eigenvalues (issue 14) ----
  m.attr("BATCHED_SOLVER_MAX_DIM") = ndt::batched_solver_max_dim();
  m.def(
      "symmetric_eigenvalues_batched",
      [](const py::list& matrices, const std::string& solver) {
        // Each item: a C-contiguous float64 square array (ndt_fast.metrics.symmetric_eigenvalues
        // converts and checks); items of one size may also come as one (k, n, n) array.
        const ndt::EigenSolver s = to_solver(solver);
        std::vector<py::array_t<double, py::array::c_style>> keep;
        std::vector<const double*> a;
        std::vector<int64_t> n;
        for (const py::handle item : matrices) {
          auto arr = py::cast<py::array_t<double, py::array::c_style>>(item);
          if (arr.ndim() == 2) {
            if (arr.shape(0) != arr.shape(1) || arr.shape(0) < 1)
              throw std::invalid_argument("symmetric_eigenvalues: expected non-empty square matrices");
            a.push_back(arr.data());
            n.push_back(arr.shape(0));
          } else if (arr.ndim() == 3) {
            if (arr.shape(1) != arr.shape(2) || arr.shape(1) < 1)
              throw std::invalid_argument("symmetric_eigenvalues: expected non-empty square matrices");
            for (py::ssize_t k = 0; k < arr.shape(0); ++k) {
              a.push_back(arr.data(k));
              n.push_back(arr.shape(1));
            }
          } else {
            throw std::invalid_argument("symmetric_eigenvalues: expected 2-D or 3-D arrays");
          }
          keep.push_back(std::move(arr));
        }
        // One flat output: the spectra back to back, in input order.
        const int64_t total = std::accumulate(n.begin(), n.end(), int64_t{0});
        py::array_t<double> values(static_cast<py::ssize_t>(total));
        py::array_t<bool> ok(static_cast<py::ssize_t>(n.size()));
        std::vector<double*> w;
        double* out = values.mutable_data();
        for (const int64_t nk : n) {
          w.push_back(out);
          out += nk;
        }
        {
          py::gil_scoped_release release;
          ndt::symmetric_eigenvalues_batched(a.data(), n.data(), w.data(), static_cast<int64_t>(n.size()),
                                             ok.mutable_data(), s);
        }
        return py::make_tuple(values, ok);
      },
      py::arg("matrices"), py::arg("solver") = "auto",
      "Eigenvalues (descending) of each matrix (lower triangles read), back to back in one float64 "
      "array, and a bool array: False where a matrix was non-finite or did not converge (values NaN).");
  m.def(
      "set_lane_kernel",
      [](const std::string& name) {
        if (name == "auto") ndt::set_lane_kernel(ndt::LaneKernel::automatic);
        else if (name == "portable") ndt::set_lane_kernel(ndt::LaneKernel::portable);
        else if (name == "avx2") ndt::set_lane_kernel(ndt::LaneKernel::avx2);
        else throw std::invalid_argument("lane kernel must be 'auto', 'portable' or 'avx2', got '" + name + "'");
      },
      py::arg("name"), "The batched eigensolver's instruction set, process-wide (tests and benchmarks).");
  m.def("lane_kernel", [] { return std::string(ndt::lane_kernel() == ndt::LaneKernel::avx2 ? "avx2" : "portable"); });
  m.def("lane_kernel_available", [](const std::string& name) {
    return name != "avx2" || ndt::lane_kernel_available(ndt::LaneKernel::avx2);
  });
  // ---- end of batched symmetric eigenvalues ----

  m.def(
      "metrics_from_spectrum",
      [](py::array_t<double, py::array::c_style | py::array::forcecast> lambda, double eps, double energy_threshold,
         uint32_t metrics) {
        if (lambda.ndim() != 1 || lambda.shape(0) < 1)
          throw std::invalid_argument("metrics_from_spectrum: expected a non-empty 1-D spectrum");
        const ndt::MetricOptions o = to_options(eps, energy_threshold, false, metrics, "auto");
        const auto nan = std::numeric_limits<double>::quiet_NaN();  // trace and PR_eig from λ
        return records_to_array({ndt::metrics_from_spectrum(lambda.data(), lambda.shape(0), nan, nan, o)});
      },
      py::arg("lambda_"), py::kw_only(), py::arg("eps"), py::arg("energy_threshold"), py::arg("metrics"));

  m.def("gram", &full_gram, py::arg("view"), py::kw_only(), py::arg("side"), py::arg("accumulate"),
        py::arg("reference"), "The full symmetric Gram (float64 array) of one matrix, for tests.");

  py::class_<ndt::GramAccumulator>(m, "GramAccumulator")
      .def(py::init([](int64_t dim, const std::string& side, const std::string& accumulate, bool center) {
             return new ndt::GramAccumulator(dim, to_side(side), to_accumulate(accumulate), center);
           }),
           py::arg("dim"), py::arg("side") = "feature", py::arg("accumulate") = "float64", py::arg("center") = false)
      .def(
          "add", [](ndt::GramAccumulator& self, const ViewTuple& view, int threads) { add_view(self, view, threads, false); },
          py::arg("view"), py::kw_only(), py::arg("threads") = 0)
      .def(
          "refill", [](ndt::GramAccumulator& self, const ViewTuple& view, int threads) { add_view(self, view, threads, true); },
          py::arg("view"), py::arg("threads"),
          "reset() then add(view): the Gram of this one matrix (the tracker's hook, in one call).")
      .def("reset", &ndt::GramAccumulator::reset)
      .def_property_readonly("dim", &ndt::GramAccumulator::dim)
      .def_property_readonly("side",
                             [](const ndt::GramAccumulator& self) {
                               return self.side() == ndt::GramSide::feature ? "feature" : "sample";
                             })
      .def_property_readonly("rows_seen", &ndt::GramAccumulator::rows_seen)
      .def_property_readonly("batches", &ndt::GramAccumulator::batches)
      .def_property_readonly("centered", &ndt::GramAccumulator::centered)
      .def_property_readonly("uncentered_trace", &ndt::GramAccumulator::uncentered_trace)
      .def(
          "gram",
          [](const ndt::GramAccumulator& self) {
            py::array_t<double> out({self.dim(), self.dim()});
            self.symmetric_gram(out.mutable_data());
            return out;
          },
          "The full symmetric Gram (float64), of the centred rows if the accumulator is centred.")
      .def(
          "lower_triangle",
          [](const ndt::GramAccumulator& self) {
            py::array_t<double> out(self.triangle_size());
            self.lower_triangle(out.mutable_data());
            return out;
          },
          "The raw Gram's lower triangle, row by row (dim·(dim+1)/2 float64): what ranks sum.")
      .def(
          "load_lower_triangle",
          [](ndt::GramAccumulator& self, py::array_t<double, py::array::c_style | py::array::forcecast> values,
             int64_t rows_seen) {
            if (values.ndim() != 1 || values.shape(0) != self.triangle_size())
              throw std::invalid_argument("GramAccumulator.load_lower_triangle: expected " +
                                          std::to_string(self.triangle_size()) + " values (dim " +
                                          std::to_string(self.dim()) + "), got an array of " +
                                          std::to_string(values.size()));
            self.load_lower_triangle(values.data(), rows_seen);
          },
          py::arg("values"), py::arg("rows_seen"),
          "Replace the Gram by a lower triangle (e.g. the sum over ranks) and rows_seen by rows_seen.");

  m.def(
      "metrics_of_accumulators",
      [](const std::vector<const ndt::GramAccumulator*>& accs, double eps, double energy_threshold, bool center,
         uint32_t metrics, const std::string& solver, int threads) {
        const ndt::MetricOptions o = to_options(eps, energy_threshold, center, metrics, solver);
        std::vector<ndt::Metrics> out(accs.size());
        {
          py::gil_scoped_release release;
          const ndt::ThreadBudgetScope budget(threads);
          ndt::metrics_of_accumulators(accs, o, out.data());
        }
        return records_to_array(out);
      },
      py::arg("accumulators"), py::kw_only(), py::arg("eps"), py::arg("energy_threshold"), py::arg("center"),
      py::arg("metrics"), py::arg("solver"), py::arg("threads") = 0);

  py::class_<ndt::RecordRing>(m, "RecordRing")
      .def(py::init<int64_t, int64_t>(), py::arg("capacity"), py::arg("width"))
      .def(
          "push",
          [](ndt::RecordRing& self, const py::array_t<double, py::array::c_style | py::array::forcecast>& rows) {
            NDT_CHECK_ARG(rows.ndim() == 2 && rows.shape(1) == self.width(),
                          "records must be a 2-D array with " << self.width() << " columns");
            return self.push(rows.data(), rows.shape(0));
          },
          py::arg("rows"), "Append all rows (n × width float64) if they fit; False (nothing appended) if not.")
      .def(
          "pop",
          [](ndt::RecordRing& self, int64_t max_count) {
            NDT_CHECK_ARG(max_count >= 0, "max_count must be >= 0");
            // Sized by what the ring holds now, not by its capacity: a drain of an almost empty
            // ring (the common case) must not allocate and zero capacity × width doubles (7.9 MB
            // at the default capacity). Records pushed meanwhile stay for the next pop.
            const int64_t n = std::min({max_count, self.capacity(), self.size()});
            std::vector<double> buffer(static_cast<size_t>(n * self.width()));
            const int64_t got = self.pop(buffer.data(), n);
            py::array_t<double> out({got, self.width()});
            std::copy_n(buffer.data(), got * self.width(), out.mutable_data());
            return out;
          },
          py::arg("max_count"), "Remove and return up to max_count oldest records (k × width float64).")
      .def(
          "peek",
          [](const ndt::RecordRing& self) {
            std::vector<double> buffer(static_cast<size_t>(self.capacity() * self.width()));
            const int64_t got = self.peek(buffer.data());
            py::array_t<double> out({got, self.width()});
            std::copy_n(buffer.data(), got * self.width(), out.mutable_data());
            return out;
          },
          "A copy of the records held, oldest first (k × width float64); nothing is removed.")
      .def("__len__", &ndt::RecordRing::size)
      .def_property_readonly("capacity", &ndt::RecordRing::capacity)
      .def_property_readonly("width", &ndt::RecordRing::width)
      .def_property_readonly("total_pushed", &ndt::RecordRing::total_pushed);

  // ---- online jump detection (ndt/jumps.h) ---------------------------------------------------------
  // Events leave as float64 rows (k, 7) of JUMP_EVENT_COLUMNS (indices and steps exact below 2^53).
  m.attr("JUMP_EVENT_COLUMNS") = py::make_tuple("series", "rule", "index", "step", "z", "before", "after");
  using JumpValues = py::array_t<double, py::array::c_style | py::array::forcecast>;
  py::class_<ndt::JumpBank>(m, "JumpBank")
      .def(py::init([](int64_t series, int64_t ndt_window, double ndt_z_threshold, int64_t ndt_min_samples,
                       int64_t window, int64_t block, double threshold, int64_t min_reference, double min_scale) {
             ndt::NdtRule a;
             a.window = ndt_window;
             a.z_threshold = ndt_z_threshold;
             a.min_samples = ndt_min_samples;
             ndt::DefaultRule b;
             b.window = window;
             b.block = block;
             b.threshold = threshold;
             b.min_reference = min_reference;
             b.min_scale = min_scale;
             return new ndt::JumpBank(series, a, b);
           }),
           py::arg("series"), py::kw_only(), py::arg("ndt_window") = 50, py::arg("ndt_z_threshold") = 3.0,
           py::arg("ndt_min_samples") = 20, py::arg("window") = 200, py::arg("block") = 7,
           py::arg("threshold") = 5.0, py::arg("min_reference") = 100, py::arg("min_scale") = 1e-10)
      .def(
          "push",
          [](ndt::JumpBank& self, int64_t step, const JumpValues& values) {
            NDT_CHECK_ARG(values.ndim() == 1 && values.shape(0) == self.series(),
                          "values must be 1-D with one value per series (" << self.series() << "), got "
                                                                             << values.ndim() << "-D");
            std::vector<ndt::JumpEvent> events;
            {
              py::gil_scoped_release release;
              self.push(step, values.data(), events);
            }
            return event_rows(events, nullptr);
          },
          py::arg("step"), py::arg("values"),
          "Next sample of every series (float64 (series,)) at training step `step`; the detections it "
          "completes as float64 (k, 7) rows of JUMP_EVENT_COLUMNS.")
      .def(
          "push_many",
          [](ndt::JumpBank& self, const py::array& steps, const JumpValues& values) {
            NDT_CHECK_ARG(steps.dtype().kind() == 'i' || steps.dtype().kind() == 'u',
                          "steps must be an integer array, got dtype kind '" << steps.dtype().kind() << "'");
            const auto s = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(steps);
            NDT_CHECK_ARG(s && s.ndim() == 1, "steps must be a 1-D integer array");
            NDT_CHECK_ARG(values.ndim() == 2 && values.shape(0) == s.shape(0) && values.shape(1) == self.series(),
                          "values must be 2-D (len(steps), series) = (" << s.shape(0) << ", " << self.series()
                                                                         << ")");
            std::vector<ndt::JumpEvent> events;
            {
              py::gil_scoped_release release;
              self.push_many(s.shape(0), s.data(), values.data(), events);
            }
            return event_rows(events, nullptr);
          },
          py::arg("steps"), py::arg("values"),
          "push() for each row: steps int (n,), values float64 (n, series); all detections, float64 (k, 7).")
      .def_property_readonly("series", &ndt::JumpBank::series)
      .def_property_readonly("samples_seen", &ndt::JumpBank::samples_seen);

  // ---- the per-sample finish (ndt/sample_finish.h) -------------------------------------------------
  m.attr("FINISH_JUMP_COLUMNS") = py::make_tuple("layer", "series", "rule", "index", "step", "z", "before", "after");
  using Doubles = py::array_t<double, py::array::c_style | py::array::forcecast>;
  using Ints = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
  py::class_<ndt::SampleFinisher>(m, "SampleFinisher")
      .def(py::init([](int64_t layers, double eps, double energy_threshold, bool center, uint32_t metrics,
                       uint32_t weight_metrics, bool track_weights, bool detect_jumps, int64_t ndt_window,
                       double ndt_z_threshold, int64_t spectra_batch) {
             ndt::SampleFinishOptions o;
             o.spectra_batch = spectra_batch;
             o.layers = layers;
             o.activations = to_options(eps, energy_threshold, center, metrics, "auto");
             o.weights = to_options(eps, energy_threshold, center, weight_metrics, "auto");
             o.track_weights = track_weights;
             o.detect_jumps = detect_jumps;
             o.ndt_rule.window = ndt_window;
             o.ndt_rule.z_threshold = ndt_z_threshold;
             return new ndt::SampleFinisher(o);
           }),
           py::arg("layers"), py::kw_only(), py::arg("eps"), py::arg("energy_threshold"), py::arg("center"),
           py::arg("metrics"), py::arg("weight_metrics"), py::arg("track_weights"), py::arg("detect_jumps"),
           py::arg("ndt_window") = 50, py::arg("ndt_z_threshold") = 3.0, py::arg("spectra_batch") = 1)
      .def(
          "finish",
          [](ndt::SampleFinisher& self, ndt::RecordRing* ring, int64_t step, double loss, double grad_norm,
             std::vector<int64_t> layers, std::vector<ndt::GramAccumulator*> accs,
             const std::vector<std::optional<ViewTuple>>& weights, std::vector<int64_t> failed, int threads,
             const std::vector<std::optional<ViewTuple>>& refills) {
            const ndt_binding::FinishCall call(step, loss, grad_norm, std::move(layers), std::move(accs), weights,
                                               std::move(failed), threads, refills);
            ndt::SampleOutcome out;
            {
              py::gil_scoped_release release;  // (one release for the Grams and the finish)
              call.run(self, ring, out);
            }
            return outcome_to_python(out, self.width());
          },
          py::arg("ring").none(true), py::arg("step"), py::arg("loss"), py::arg("grad_norm"), py::arg("layers"),
          py::arg("accumulators"), py::arg("weights"), py::arg("failed"), py::arg("threads"),
          py::arg("refills") = std::vector<std::optional<ViewTuple>>{},
          "One sample, computed and recorded: metrics of every accumulator (reset afterwards) and weight "
          "view (None: no weight), NaN rows flagged FLAG_TRACKER_ERROR for `failed` layers, records into "
          "`ring` (None: all returned), jump banks fed. `refills` (one per accumulator, or empty): a "
          "view's Gram replaces its accumulator's first (the tracker's deferred Grams), in the same "
          "GIL-free call. With spectra_batch = k > 1 the sample waits "
          "until k samples do, then all are emitted in order. Returns None, or (overflow records, "
          "detections (k, 8) of FINISH_JUMP_COLUMNS, weight error, (spectra error, layers)) with None "
          "for each part that is empty.")
      .def(
          "flush",
          [](ndt::SampleFinisher& self, ndt::RecordRing* ring, int threads) {
            ndt::SampleOutcome out;
            {
              py::gil_scoped_release release;
              const ndt::ThreadBudgetScope budget(threads);
              self.flush(ring, out);
            }
            return outcome_to_python(out, self.width());
          },
          py::arg("ring").none(true), py::arg("threads"),
          "Every waiting sample (spectra_batch > 1), solved in one call and recorded in step order. "
          "Same return value as finish().")
      .def_property_readonly("pending", &ndt::SampleFinisher::pending,
                             "Samples finished but not yet recorded (< spectra_batch).")
      .def_property_readonly("spectra_batch", &ndt::SampleFinisher::spectra_batch,
                             "The batch in effect (1 when no requested metric needs a spectrum).")
      .def(
          "record",
          [](ndt::SampleFinisher& self, ndt::RecordRing* ring, int64_t step, double loss, double grad_norm,
             const Ints& layers, const Doubles& metrics, const std::optional<Doubles>& weight_metrics,
             const Ints& rows_seen, int threads) {
            const int64_t k = layers.ndim() == 1 ? layers.shape(0) : -1;
            NDT_CHECK_ARG(k >= 0 && rows_seen.ndim() == 1 && rows_seen.shape(0) == k,
                          "layers and rows_seen must be 1-D of equal length");
            NDT_CHECK_ARG(metrics.ndim() == 2 && metrics.shape(0) == k && metrics.shape(1) == kRecordWidth,
                          "metrics must be (len(layers), " << kRecordWidth << ")");
            NDT_CHECK_ARG(!weight_metrics || (weight_metrics->ndim() == 2 && weight_metrics->shape(0) == k &&
                                              weight_metrics->shape(1) == kRecordWidth),
                          "weight_metrics must be None or (len(layers), " << kRecordWidth << ")");
            ndt::SampleOutcome out;
            {
              py::gil_scoped_release release;
              const ndt::ThreadBudgetScope budget(threads);  // (waiting samples are flushed first)
              self.record({step, loss, grad_norm}, k, layers.data(), metrics.data(),
                          weight_metrics ? weight_metrics->data() : nullptr, rows_seen.data(), ring, out);
            }
            return outcome_to_python(out, self.width());
          },
          py::arg("ring").none(true), py::arg("step"), py::arg("loss"), py::arg("grad_norm"), py::arg("layers"),
          py::arg("metrics"), py::arg("weight_metrics").none(true), py::arg("rows_seen"), py::arg("threads") = 1,
          "One sample whose metric records (k, 9) were computed elsewhere (a device; NaN error rows): "
          "recorded and fed to the jump banks as finish() does, after the waiting samples (flushed "
          "first, with `threads`). Same return value.")
      .def(
          "replay",
          [](ndt::SampleFinisher& self, int64_t layer, const Ints& steps, const Doubles& values) {
            NDT_CHECK_ARG(steps.ndim() == 1 && values.ndim() == 2 && values.shape(0) == steps.shape(0) &&
                              values.shape(1) == self.series(),
                          "replay: steps (n,) and values (n, " << self.series() << ") expected");
            py::gil_scoped_release release;
            self.replay(layer, steps.shape(0), steps.data(), values.data());
          },
          py::arg("layer"), py::arg("steps"), py::arg("values"),
          "Resume: a layer's earlier samples into its jump bank (values: its metric series), detections dropped.")
      .def_property_readonly("width", &ndt::SampleFinisher::width)
      .def_property_readonly("series", &ndt::SampleFinisher::series);
  ndt_binding::register_worker(m);  // FinishWorker (bindings_worker.cpp): SampleFinisher is registered above
}
