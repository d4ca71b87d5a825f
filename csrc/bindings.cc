// pybind11 glue only: argument conversion, GIL release, exception mapping.
#include <pybind11/pybind11.h>
#include <cctype>
#include <pybind11/stl.h>

#include "comm/communicator.h"
#include "comm/host_engine.h"
#include "common/errors.h"
#include "reduce/reduce_bindings.h"
#include "reduce/reduce_cpu.h"
#include "ring/schedule.h"
#include "transport/self_transport.h"
#ifdef RR_HAVE_MPI
#include "transport/mpi_transport.h"
#endif
#ifdef RR_HAVE_CUDA
#include "bindings_cuda.h"
#include "ipc/ipc_bindings.h"
#endif

namespace py = pybind11;
using namespace rr;

namespace {

void raisePython(const char* cls, const char* what) {
  py::object errors = py::module_::import("ringreduce.errors");
  PyErr_SetString(errors.attr(cls).ptr(), what);
}

std::unique_ptr<Transport> makeHostTransport(const std::string& kind) {
  if (kind == "self") return std::make_unique<SelfTransport>();
#ifdef RR_HAVE_MPI
  if (kind == "mpi") {
    MpiTransport::initialize();
    return std::make_unique<MpiTransport>();
  }
#endif
  if (kind == "mpi")
    throw ArgumentError(
        "ringreduce was built without MPI (no mpicc found at build time); install MPI "
        "(e.g. Debian's openmpi-bin libopenmpi-dev) and rebuild, or set MPICC");
  throw ArgumentError("unknown host transport '" + kind + "'");
}

// The buffer protocol, read in C++: much cheaper than NumPy's Python-level
// attributes on the small-message path. Returns (ptr, count, dtype code or
// -1, readonly, c_contiguous, format).
// The dtype code of a buffer-protocol view, or -1 when unsupported.
int dtypeCodeOf(const Py_buffer& view) {
  std::string fmt = view.format ? view.format : "B";
  if (!fmt.empty() && (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@')) fmt = fmt.substr(1);
  if (fmt.size() != 1) return -1;
  char f = fmt[0];
  bool isInt = std::string("bhilqnBHILQN").find(f) != std::string::npos;
  bool isSigned = isInt && std::islower(static_cast<unsigned char>(f));
  if (f == 'e') return static_cast<int>(DType::kFloat16);
  if (f == 'f') return static_cast<int>(DType::kFloat32);
  if (f == 'd') return static_cast<int>(DType::kFloat64);
  if (isInt && view.itemsize == 1) return static_cast<int>(isSigned ? DType::kInt8 : DType::kUInt8);
  if (isInt && isSigned && view.itemsize == 4) return static_cast<int>(DType::kInt32);
  if (isInt && isSigned && view.itemsize == 8) return static_cast<int>(DType::kInt64);
  return -1;
}

py::tuple hostBuffer(py::handle obj) {
  Py_buffer view;
  if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_RECORDS_RO) != 0) {
    PyErr_Clear();
    throw py::type_error("object does not expose the buffer protocol");
  }
  int code = dtypeCodeOf(view);
  bool contiguous = PyBuffer_IsContiguous(&view, 'C') != 0;
  int64_t count = view.itemsize ? view.len / view.itemsize : 0;
  py::tuple t = py::make_tuple(reinterpret_cast<uintptr_t>(view.buf), count, code,
                               static_cast<bool>(view.readonly), contiguous,
                               std::string(view.format ? view.format : "B"));
  PyBuffer_Release(&view);
  return t;
}

// The latency path for the commonest call, a blocking in-place all-reduce of
// a writable, contiguous host array of a supported dtype: no Python layer in
// between. Returns false (touching nothing) for anything else, and the
// Python layer then takes the general path with its checks and messages.
bool allreduceHostInPlace(Communicator& c, py::handle obj, int op) {
  Py_buffer view;
  if (PyObject_GetBuffer(obj.ptr(), &view, PyBUF_RECORDS) != 0) {  // writable only
    PyErr_Clear();
    return false;
  }
  int code = dtypeCodeOf(view);
  bool ok = code >= 0 && PyBuffer_IsContiguous(&view, 'C') && op >= 0 && op < kNumOps;
  Call call;
  call.coll = Coll::kAllreduce;
  call.in = call.out = view.buf;
  call.count = view.itemsize ? view.len / view.itemsize : 0;
  call.dtype = static_cast<DType>(code);
  call.op = static_cast<ReduceOp>(op);
  PyBuffer_Release(&view);  // the caller holds the array for the whole call
  if (!ok) return false;
  std::shared_ptr<Work> work;
  {
    py::gil_scoped_release release;
    work = c.submit(std::move(call), false);
    work->wait(-1.0, -1);
  }
  return true;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ringreduce core: chunked ring collectives over MPI and NCCL";

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const TimeoutError& e) {
      raisePython("CollectiveTimeout", e.what());
    } catch (const MismatchError& e) {
      raisePython("CollectiveMismatch", e.what());
    } catch (const ArgumentError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const Error& e) {
      raisePython("RingReduceError", e.what());
    }
  });

#ifdef RR_HAVE_MPI
  m.attr("has_mpi") = true;
  m.def("mpi_initialize", &MpiTransport::initialize, "Initialise MPI unless already done.");
  m.def("mpi_finalize", &MpiTransport::finalize);
  m.def("mpi_cuda_aware", &MpiTransport::cudaAware, "True when MPI takes device pointers.");
#else
  m.attr("has_mpi") = false;
  m.def("mpi_initialize", [] { return false; });
  m.def("mpi_finalize", [] {});
  m.def("mpi_cuda_aware", [] { return false; });
#endif

  py::class_<Work, std::shared_ptr<Work>>(m, "Work")
      .def("wait", &Work::wait, py::arg("timeout") = -1.0, py::arg("stream") = -1,
           py::call_guard<py::gil_scoped_release>())
      .def("is_completed", &Work::isCompleted, py::call_guard<py::gil_scoped_release>());

  py::class_<Communicator, std::shared_ptr<Communicator>>(m, "Communicator")
      .def(py::init([](int rank, int size, const std::string& host, double timeout,
                       int64_t chunkBytes, int depth, bool check, bool nanCheck) {
             Options o;
             o.timeoutSec = timeout;
             o.chunkBytes = chunkBytes;
             o.depth = depth;
             o.check = check;
             o.nanCheck = nanCheck;
             auto t = makeHostTransport(host);
             if (host != "self" && (t->rank() != rank || t->size() != size))
               throw ArgumentError("launcher says rank " + std::to_string(rank) + " of " +
                                   std::to_string(size) + ", MPI says " +
                                   std::to_string(t->rank()) + " of " + std::to_string(t->size()));
             return std::make_shared<Communicator>(rank, size,
                                                   std::make_unique<HostEngine>(std::move(t)), o);
           }),
           py::arg("rank"), py::arg("size"), py::arg("host"), py::arg("timeout"),
           py::arg("chunk_bytes"), py::arg("depth"), py::arg("check"), py::arg("nan_check"))
      .def_property_readonly("rank", &Communicator::rank)
      .def_property_readonly("size", &Communicator::size)
      .def_property_readonly("engines", &Communicator::engineNames)
      .def_property_readonly("sequence", &Communicator::sequence)
      .def_property_readonly("finalized", &Communicator::finalized)
      .def_property_readonly("poison_message", &Communicator::poisonMessage)
      .def_property(
          "timeout", [](Communicator& c) { return c.options().timeoutSec; },
          [](Communicator& c, double v) { c.options().timeoutSec = v; })
      .def_property(
          "chunk_bytes", [](Communicator& c) { return c.options().chunkBytes; },
          [](Communicator& c, int64_t v) {
            if (v < 1) throw ArgumentError("chunk_bytes must be >= 1, got " + std::to_string(v));
            c.options().chunkBytes = v;
          })
      .def_property(
          "device_chunk_bytes", [](Communicator& c) { return c.options().deviceChunkBytes; },
          [](Communicator& c, int64_t v) {
            if (v < 0) throw ArgumentError("device_chunk_bytes must be >= 0, got " + std::to_string(v));
            c.options().deviceChunkBytes = v;
          })
      .def_property(
          "small_bytes", [](Communicator& c) { return c.options().smallBytes; },
          [](Communicator& c, int64_t v) {
            if (v < 0) throw ArgumentError("small_bytes must be >= 0, got " + std::to_string(v));
            c.options().smallBytes = v;
          })
      .def_property(
          "depth", [](Communicator& c) { return c.options().depth; },
          [](Communicator& c, int v) {
            if (v < 1) throw ArgumentError("depth must be >= 1, got " + std::to_string(v));
            c.options().depth = v;
          })
      .def_property(
          "check", [](Communicator& c) { return c.options().check; },
          [](Communicator& c, bool v) { c.options().check = v; })
      .def_property(
          "nan_check", [](Communicator& c) { return c.options().nanCheck; },
          [](Communicator& c, bool v) { c.options().nanCheck = v; })
      .def(
          "submit",
          [](Communicator& c, int coll, uintptr_t in, uintptr_t out, int64_t count, int dtype,
             int op, int root, std::vector<int64_t> blocks, int device, uintptr_t stream,
             int64_t chunkBytes, bool async) {
            Call call;
            call.coll = static_cast<Coll>(coll);
            call.in = reinterpret_cast<const void*>(in);
            call.out = reinterpret_cast<void*>(out);
            call.count = count;
            call.dtype = static_cast<DType>(dtype);
            call.op = static_cast<ReduceOp>(op);
            call.root = root;
            call.blockCounts = std::move(blocks);
            call.device = device;
            call.stream = stream;
            call.chunkBytes = chunkBytes;
            return c.submit(std::move(call), async);
          },
          py::arg("coll"), py::arg("inp"), py::arg("out"), py::arg("count"), py::arg("dtype"),
          py::arg("op"), py::arg("root"), py::arg("blocks"), py::arg("device"), py::arg("stream"),
          py::arg("chunk_bytes"), py::arg("async_op"), py::call_guard<py::gil_scoped_release>())
      .def("allreduce_host_inplace", &allreduceHostInPlace, py::arg("x"), py::arg("op"),
           "Blocking in-place all-reduce of a host array; False if not applicable.")
      .def(
          "allreduce_path",
          [](Communicator& c, int device, int64_t count, int dtype, int op) {
            return c.allreducePath(device, count, static_cast<DType>(dtype), static_cast<ReduceOp>(op));
          },
          py::arg("device"), py::arg("count"), py::arg("dtype"), py::arg("op"))
      .def("finalize", &Communicator::finalize, py::call_guard<py::gil_scoped_release>());

  m.def("host_buffer", &hostBuffer, "(ptr, count, dtype code or -1, readonly, c_contiguous, format)");

  // Test hooks: the pure arithmetic, exposed so unit tests can check it.
  m.def("schedule_chunks", [](int64_t count, int n, int64_t chunkElems) {
    RingSchedule s(count, n, chunkElems);
    std::vector<std::tuple<int, int64_t, int64_t, int64_t>> out;
    for (int seg = 0; seg < n; ++seg)
      for (int64_t c = 0; c < s.chunksPerSegment(); ++c) {
        Span sp = s.chunk(seg, c);
        out.emplace_back(seg, c, sp.offset, sp.count);
      }
    return out;
  });
  m.def("schedule_steps", [](int n, int rank) {
    RingSchedule s(n, n, 1);
    std::vector<std::tuple<int, int, int, int>> out;  // rs send, rs recv, ag send, ag recv
    for (int t = 0; t < n - 1; ++t)
      out.emplace_back(s.rsSendSegment(rank, t), s.rsRecvSegment(rank, t),
                       s.agSendSegment(rank, t), s.agRecvSegment(rank, t));
    return out;
  });
  m.def("half_to_float", &halfToFloat);
  m.def("float_to_half", &floatToHalf);
  m.def("bf16_to_float", &bf16ToFloat);
  m.def("float_to_bf16", &floatToBf16);
  bindReducers(m);

#ifdef RR_HAVE_CUDA
  m.attr("has_cuda") = true;
  bindCuda(m);
  rr::bindIpc(m);
#else
  m.attr("has_cuda") = false;
#endif
}
