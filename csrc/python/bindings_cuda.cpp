// The CUDA half of the binding: ndt_fast._core.cuda (compiled only with NDT_WITH_CUDA; registered
// from bindings.cpp). Device buffers and streams arrive as integers (tensor.data_ptr(),
// torch.cuda.current_stream().cuda_stream) from ndt_fast/cuda.py, which keeps the tensors alive
// and checks devices, dtypes and shapes first. The GIL is released around every call into CUDA.
//
// NEVER RUN: compiled only (no GPU in the writing session).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <tuple>
#include <vector>

#include "ndt/check.h"
#include "ndt/cuda/device.h"
#include "view_tuple.h"

namespace py = pybind11;

namespace {

using ndt_binding::ViewTuple;
using ndt_binding::to_view;

ndt::cuda::DeviceSolver to_device_solver(const std::string& name) {
  if (name == "auto") return ndt::cuda::DeviceSolver::automatic;
  if (name == "jacobi") return ndt::cuda::DeviceSolver::own_jacobi;
  if (name == "cusolver") return ndt::cuda::DeviceSolver::cusolver;
  throw std::invalid_argument("device solver must be 'auto', 'jacobi' or 'cusolver', got '" + name + "'");
}

py::dict availability_dict(const ndt::cuda::Availability& a) {
  return py::dict(py::arg("compiled") = a.compiled, py::arg("device_count") = a.device_count,
                  py::arg("cublas") = a.cublas, py::arg("cusolver") = a.cusolver,
                  py::arg("math_headers") = a.math_headers, py::arg("reason") = a.reason);
}

template <typename T>
std::vector<T*> pointers(const std::vector<uintptr_t>& addresses) {
  std::vector<T*> out;
  out.reserve(addresses.size());
  for (uintptr_t a : addresses) out.push_back(reinterpret_cast<T*>(a));
  return out;
}

}  // namespace

void register_cuda(py::module_& m) {
  py::module_ c = m.def_submodule("cuda", "CUDA kernels (private; use ndt_fast.cuda). Compiled, never run here.");
  c.attr("RECORD_WIDTH") = ndt::cuda::kRecordWidth;
  c.attr("JACOBI_MAX_DIM") = ndt::cuda::kJacobiMaxDim;
  c.attr("SYEVJ_BATCHED_MAX_DIM") = ndt::cuda::kSyevjBatchedMaxDim;

  c.def("availability", [] { return availability_dict(ndt::cuda::availability()); },
        "What the CUDA side can do: compiled, device_count, cublas, cusolver, math_headers, reason.");
  c.def(
      "load_math_libraries",
      [](const std::vector<std::string>& dirs) {
        ndt::cuda::Availability a;
        {
          py::gil_scoped_release release;
          a = ndt::cuda::load_math_libraries(dirs);
        }
        return availability_dict(a);
      },
      py::arg("search_dirs"), "dlopen cuBLAS/cuSOLVER (already loaded ones first, then search_dirs).");

  py::class_<ndt::cuda::Context>(c, "Context")
      .def(py::init([](int device) {
             py::gil_scoped_release release;
             return new ndt::cuda::Context(device);
           }),
           py::arg("device"))
      .def_property_readonly("device", &ndt::cuda::Context::device)
      .def_property_readonly("has_cublas", &ndt::cuda::Context::has_cublas)
      .def_property_readonly("has_cusolver", &ndt::cuda::Context::has_cusolver);

  c.def(
      "gram_update",
      [](ndt::cuda::Context& ctx, const ViewTuple& view, const std::string& side, uintptr_t gram, float beta,
         uintptr_t stream, bool use_cublas) {
        const ndt::MatrixView x = to_view(view);
        NDT_CHECK_ARG(side == "feature" || side == "sample", "side must be 'feature' or 'sample', got '" << side << "'");
        const ndt::GramSide s = side == "feature" ? ndt::GramSide::feature : ndt::GramSide::sample;
        py::gil_scoped_release release;
        ndt::cuda::gram_update(ctx, x, s, reinterpret_cast<float*>(gram), beta, stream, use_cublas);
      },
      py::arg("ctx"), py::arg("view"), py::kw_only(), py::arg("side"), py::arg("gram"), py::arg("beta"),
      py::arg("stream"), py::arg("use_cublas") = true,
      "G = beta*G + X^T X (feature) or X X^T (sample) into the float32 device Gram at `gram`, on `stream`.");

  py::class_<ndt::cuda::SpectraPlan>(c, "SpectraPlan")
      .def(py::init([](ndt::cuda::Context& ctx, std::vector<int64_t> dims, double eps, double energy_threshold,
                       uint32_t metrics, const std::string& solver) {
             ndt::MetricOptions o;
             o.eps = eps;
             o.energy_threshold = energy_threshold;
             o.metrics = metrics;
             const ndt::cuda::DeviceSolver s = to_device_solver(solver);
             py::gil_scoped_release release;
             return new ndt::cuda::SpectraPlan(ctx, std::move(dims), o, s);
           }),
           py::arg("ctx"), py::arg("dims"), py::kw_only(), py::arg("eps"), py::arg("energy_threshold"),
           py::arg("metrics"), py::arg("solver"))
      .def_property_readonly("workspace_bytes", &ndt::cuda::SpectraPlan::workspace_bytes)
      .def_property_readonly("dims", &ndt::cuda::SpectraPlan::dims)
      .def(
          "run",
          [](const ndt::cuda::SpectraPlan& self, ndt::cuda::Context& ctx, const std::vector<uintptr_t>& grams,
             uintptr_t workspace, uintptr_t records, uintptr_t stream) {
            NDT_CHECK_ARG(static_cast<int64_t>(grams.size()) == self.count(),
                          "run: " << grams.size() << " Grams for a plan of " << self.count());
            const auto g = pointers<const float>(grams);
            py::gil_scoped_release release;
            self.run(ctx, g.data(), reinterpret_cast<void*>(workspace), reinterpret_cast<double*>(records), stream);
          },
          py::arg("ctx"), py::arg("grams"), py::kw_only(), py::arg("workspace"), py::arg("records"),
          py::arg("stream"), "Records (count x RECORD_WIDTH float64, device) of the Grams, queued on `stream`.")
      .def(
          "eigenvalues",
          [](const ndt::cuda::SpectraPlan& self, ndt::cuda::Context& ctx, const std::vector<uintptr_t>& grams,
             uintptr_t workspace, const std::vector<uintptr_t>& lambdas, const std::vector<uintptr_t>& infos,
             uintptr_t stream) {
            NDT_CHECK_ARG(static_cast<int64_t>(grams.size()) == self.count() &&
                              static_cast<int64_t>(lambdas.size()) == self.count() &&
                              static_cast<int64_t>(infos.size()) == self.count(),
                          "eigenvalues: need one Gram, one output and one info per plan entry (" << self.count() << ")");
            const auto g = pointers<const float>(grams);
            const auto l = pointers<double>(lambdas);
            const auto i = pointers<int>(infos);
            py::gil_scoped_release release;
            self.eigenvalues(ctx, g.data(), reinterpret_cast<void*>(workspace), l.data(), i.data(), stream);
          },
          py::arg("ctx"), py::arg("grams"), py::kw_only(), py::arg("workspace"), py::arg("lambdas"),
          py::arg("infos"), py::arg("stream"), "Eigenvalues (ascending, float64, device) and solver infos; for tests.");

  py::class_<ndt::cuda::PinnedRecordRing>(c, "PinnedRecordRing")
      .def(py::init<int64_t, int64_t, int64_t>(), py::arg("slots"), py::arg("slot_records"), py::arg("width"))
      .def(
          "push",
          [](ndt::cuda::PinnedRecordRing& self, uintptr_t records, int64_t count, int64_t tag, uintptr_t stream) {
            py::gil_scoped_release release;
            return self.push(reinterpret_cast<const double*>(records), count, tag, stream);
          },
          py::arg("records"), py::arg("count"), py::kw_only(), py::arg("tag"), py::arg("stream"),
          "Queue a copy of `count` device records into the next slot; False (nothing queued) when full.")
      .def(
          "pop",
          [](ndt::cuda::PinnedRecordRing& self, int64_t max_records) {
            NDT_CHECK_ARG(max_records >= 0, "max_records must be >= 0");
            py::array_t<double> out({max_records, self.width()});
            py::array_t<int64_t> tags(max_records);
            int64_t got = 0;
            {
              double* o = out.mutable_data();
              int64_t* t = tags.mutable_data();
              py::gil_scoped_release release;
              got = self.pop(o, t, max_records);
            }
            return py::make_tuple(out[py::slice(0, got, 1)], tags[py::slice(0, got, 1)]);
          },
          py::arg("max_records"),
          "Completed records, oldest first: (records (k x width float64), tags (k int64)); never waits.")
      .def_property_readonly("pending", &ndt::cuda::PinnedRecordRing::pending)
      .def_property_readonly("dropped", &ndt::cuda::PinnedRecordRing::dropped)
      .def_property_readonly("slots", &ndt::cuda::PinnedRecordRing::slots)
      .def_property_readonly("slot_records", &ndt::cuda::PinnedRecordRing::slot_records)
      .def_property_readonly("width", &ndt::cuda::PinnedRecordRing::width);
}
