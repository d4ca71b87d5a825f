// pybind11 glue only: argument conversion, GIL release, exception mapping.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cctype>
#include <cmath>
#include <thread>

#include "comm/communicator.h"
#include "comm/factory.h"
#include "common/errors.h"
#include "reduce/reduce_bindings.h"
#include "reduce/reduce_cpu.h"
#include "ring/schedule.h"
#ifdef RR_HAVE_MPI
#include "transport/mpi_transport.h"
#endif
#ifdef RR_HAVE_UCX
#include "transport/ucx_transport.h"
#endif
#ifdef RR_HAVE_CUDA
#include "bindings_cuda.h"
#include "ipc/ipc_bindings.h"
#endif

namespace py = pybind11;
using namespace rr;

namespace {

// The Python exception a wait hook caught (Ctrl-C), re-raised once the core
// has unwound and aborted the communicator.
thread_local PyObject* stashedType = nullptr;
thread_local PyObject* stashedValue = nullptr;
thread_local PyObject* stashedTrace = nullptr;
std::thread::id mainThread;

void raisePython(const char* cls, const char* what) {
  py::object errors = py::module_::import("ringreduce.errors");
  PyErr_SetString(errors.attr(cls).ptr(), what);
}

// Runs while the core waits, with the GIL released: on the main thread it
// lets Python's signal handlers run, and a raised exception ends the wait.
void checkSignals() {
  if (std::this_thread::get_id() != mainThread) return;
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() == 0) return;
  PyErr_Fetch(&stashedType, &stashedValue, &stashedTrace);
  throw Interrupted("interrupted by a signal while waiting");
}

Options withHooks(Options o) {
  o.interruptCheck = checkSignals;
  return o;
}

// Device calls learn here whether their stream is being captured into a CUDA graph.
void markCapture(Call& c) {
#ifdef RR_HAVE_CUDA
  if (c.device >= 0) c.capturing = streamCapturing(c.stream);
#else
  (void)c;
#endif
}

// The dtype code of a buffer-protocol view, or -1 when unsupported.
int dtypeCodeOf(const Py_buffer& view) {
  std::string fmt = view.format ? view.format : "B";
  if (!fmt.empty() && (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@')) fmt = fmt.substr(1);
  if (fmt.size() != 1) return -1;
  const char f = fmt[0];
  if (f == 'e') return static_cast<int>(DType::kFloat16);
  if (f == 'f') return static_cast<int>(DType::kFloat32);
  if (f == 'd') return static_cast<int>(DType::kFloat64);
  if (f == '?') return static_cast<int>(DType::kBool);
  if (std::string("bhilqnBHILQN").find(f) == std::string::npos) return -1;
  const bool isSigned = std::islower(static_cast<unsigned char>(f));
  switch (view.itemsize) {
    case 1: return static_cast<int>(isSigned ? DType::kInt8 : DType::kUInt8);
    case 2: return static_cast<int>(isSigned ? DType::kInt16 : DType::kUInt16);
    case 4: return static_cast<int>(isSigned ? DType::kInt32 : DType::kUInt32);
    case 8: return static_cast<int>(isSigned ? DType::kInt64 : DType::kUInt64);
    default: return -1;
  }
}

// (ptr, count, dtype code or -1, readonly, c_contiguous, format)
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

// The latency path for the commonest call, a blocking all-reduce of host
// memory: no Python layer between the caller and the core.
void allreduceHostNow(Communicator& c, uintptr_t in, uintptr_t out, int64_t count, int dtype,
                      int op) {
  RR_CHECK_ARG(validDType(dtype), "unknown dtype code " + std::to_string(dtype));
  RR_CHECK_ARG(validOp(op), "unknown op code " + std::to_string(op));
  Call call;
  call.coll = Coll::kAllreduce;
  call.in = reinterpret_cast<const void*>(in);
  call.out = reinterpret_cast<void*>(out);
  call.count = count;
  call.dtype = static_cast<DType>(dtype);
  call.op = static_cast<ReduceOp>(op);
  py::gil_scoped_release release;
  c.submit(std::move(call), false)->wait(-1.0, -1);
}

// The same for arrays that expose the buffer protocol (NumPy): x in place
// when out is None. Returns false, touching nothing, when the call is not
// that simple (read-only, strided, unsupported dtype, out of another shape
// or dtype, partial overlap); the Python layer then takes the general path
// with its checks and messages.
bool allreduceHostArrays(Communicator& c, py::handle x, py::handle out, int op) {
  Py_buffer in, dst;
  uintptr_t dest = 0;
  const bool inPlace = out.is_none();
  if (PyObject_GetBuffer(x.ptr(), &in, inPlace ? PyBUF_RECORDS : PyBUF_RECORDS_RO) != 0) {
    PyErr_Clear();
    return false;
  }
  bool ok = PyBuffer_IsContiguous(&in, 'C') && dtypeCodeOf(in) >= 0 && validOp(op);
  if (ok && !inPlace) {
    if (PyObject_GetBuffer(out.ptr(), &dst, PyBUF_RECORDS) != 0) {
      PyErr_Clear();
      ok = false;
    } else {
      const char* a = static_cast<const char*>(in.buf);
      const char* b = static_cast<const char*>(dst.buf);
      ok = PyBuffer_IsContiguous(&dst, 'C') && dtypeCodeOf(dst) == dtypeCodeOf(in) &&
           dst.len == in.len && (a == b || a + in.len <= b || b + dst.len <= a);
      dest = reinterpret_cast<uintptr_t>(dst.buf);
      PyBuffer_Release(&dst);
    }
  }
  const int code = dtypeCodeOf(in);
  ok = ok && opRefusal(static_cast<DType>(code), static_cast<ReduceOp>(op)).empty();
  const uintptr_t src = reinterpret_cast<uintptr_t>(in.buf);
  if (inPlace) dest = src;
  const int64_t count = in.itemsize ? in.len / in.itemsize : 0;
  PyBuffer_Release(&in);  // the caller holds the arrays for the whole call
  if (!ok) return false;
  allreduceHostNow(c, src, dest, count, code, op);
  return true;
}

Call makeCall(Coll coll, uintptr_t in, uintptr_t out, int64_t count, DType dtype, ReduceOp op,
              int root, int peer, std::vector<int64_t> counts, std::vector<int64_t> recvCounts,
              int device, uintptr_t stream, int64_t chunkBytes, std::string algo) {
  Call c;
  c.coll = coll;
  c.in = reinterpret_cast<const void*>(in);
  c.out = reinterpret_cast<void*>(out);
  c.count = count;
  c.dtype = dtype;
  c.op = op;
  c.root = root;
  c.peer = peer;
  c.counts = std::move(counts);
  c.recvCounts = std::move(recvCounts);
  c.device = device;
  c.stream = stream;
  c.chunkBytes = chunkBytes;
  c.algo = std::move(algo);
  return c;
}

py::tuple spanTuple(const Span& sp) { return py::make_tuple(sp.offset, sp.count); }

template <class E, int N, const char* (*Name)(E)>
void bindEnum(py::module_& m, const char* pyName, const char* doc) {
  py::enum_<E> e(m, pyName, doc);
  for (int i = 0; i < N; ++i) e.value(Name(static_cast<E>(i)), static_cast<E>(i));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "ringreduce core: ring all-reduce and other collectives over MPI, UCX and NCCL";
  mainThread = std::this_thread::get_id();

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Interrupted&) {
      if (stashedType) {
        PyErr_Restore(stashedType, stashedValue, stashedTrace);
        stashedType = stashedValue = stashedTrace = nullptr;
      } else {
        PyErr_SetNone(PyExc_KeyboardInterrupt);
      }
    } catch (const TimeoutError& e) {
      raisePython("CollectiveTimeout", e.what());
    } catch (const MismatchError& e) {
      raisePython("CollectiveMismatch", e.what());
    } catch (const TypeArgError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    } catch (const ArgumentError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const Error& e) {
      raisePython("RingReduceError", e.what());
    }
  });

  bindEnum<DType, kNumDTypes, dtypeName>(m, "DType", "Element types (names as NumPy/torch spell them).");
  bindEnum<ReduceOp, kNumOps, opName>(m, "ReduceOp", "Reduction operators.");
  bindEnum<Coll, kNumColls, collName>(m, "Coll", "Collectives.");
  m.attr("ANY_SOURCE") = kAnySource;  // the peer of a receive from any source

#ifdef RR_HAVE_MPI
  m.attr("has_mpi") = true;
  m.def("mpi_initialize", &MpiTransport::initialize, "Initialise MPI unless already done.");
  m.def("mpi_finalize", &MpiTransport::finalize, py::call_guard<py::gil_scoped_release>());
  m.def("mpi_cuda_aware", &MpiTransport::cudaAware, "True when MPI takes device pointers.");
#else
  m.attr("has_mpi") = false;
  m.def("mpi_initialize", [] { return false; });
  m.def("mpi_finalize", [] {});
  m.def("mpi_cuda_aware", [] { return false; });
#endif

  py::class_<SelectPolicy>(m, "SelectPolicy")
      .def(py::init<>())
      .def_readwrite("forced", &SelectPolicy::forced)
      .def_readwrite("small_bytes", &SelectPolicy::smallBytes)
      .def_readwrite("medium_bytes", &SelectPolicy::mediumBytes)
      .def_readwrite("one_shot_bytes", &SelectPolicy::oneShotBytes)
      .def_readwrite("gpu_ring_bytes", &SelectPolicy::gpuRingBytes)
      .def_readwrite("shm_bytes", &SelectPolicy::shmBytes)
      .def_readwrite("shm_one_shot_bytes", &SelectPolicy::shmOneShotBytes);

  py::class_<Options>(m, "Options", "Communicator settings; ringreduce.settings fills them.")
      .def(py::init<>())
      .def_readwrite("timeout", &Options::timeoutSec)
      .def_readwrite("chunk_bytes", &Options::chunkBytes)
      .def_readwrite("device_chunk_bytes", &Options::deviceChunkBytes)
      .def_readwrite("depth", &Options::depth)
      .def_readwrite("fingerprint", &Options::fingerprint)
      .def_readwrite("check", &Options::check)
      .def_readwrite("nan_check", &Options::nanCheck)
      .def_readwrite("device_fingerprint", &Options::deviceFingerprint)
      .def_readwrite("policy", &Options::policy);

#ifdef RR_HAVE_UCX
  m.attr("has_ucx") = true;
  py::class_<UcxOptions>(m, "UcxOptions", "What UCX may use; empty fields take ringreduce's defaults.")
      .def(py::init<>())
      .def_readwrite("net_devices", &UcxOptions::netDevices)
      .def_readwrite("tls", &UcxOptions::tls)
      .def_readwrite("rndv_thresh", &UcxOptions::rndvThresh)
      .def_readwrite("rndv_scheme", &UcxOptions::rndvScheme)
      .def_readwrite("keepalive_interval", &UcxOptions::keepaliveInterval)
      .def_readwrite("extra", &UcxOptions::extra)
      .def_readwrite("device_buffers", &UcxOptions::deviceBuffers);
  m.def("ucx_cuda_memory", [] { std::string w; return UcxTransport::cudaMemoryAvailable(&w) ? "" : w; },
        "'' when this process's UCX moves CUDA memory (its CUDA transports loaded), else why not.");
#else
  m.attr("has_ucx") = false;
#endif

  py::class_<LoopbackWorld, std::shared_ptr<LoopbackWorld>>(
      m, "LoopbackWorld", "N ranks in one process (one thread each), for tests.")
      .def(py::init<int>(), py::arg("size"))
      .def_property_readonly("size", &LoopbackWorld::size)
      .def("sever", &LoopbackWorld::sever, py::arg("rank"),
           "Messages to and from `rank` vanish from now on, as if it had died.");

  py::class_<Work, std::shared_ptr<Work>>(m, "Work")
      .def("wait", &Work::wait, py::arg("timeout") = -1.0, py::arg("stream") = -1,
           py::call_guard<py::gil_scoped_release>())
      .def("is_completed", &Work::isCompleted, py::call_guard<py::gil_scoped_release>())
      .def_property_readonly("source", &Work::source);

  py::class_<Communicator, std::shared_ptr<Communicator>>(m, "Communicator")
      .def_static("self_world", [](const Options& o) { return makeSelfCommunicator(withHooks(o)); },
                  py::arg("options"))
      .def_static(
          "loopback",
          [](std::shared_ptr<LoopbackWorld> w, int rank, const Options& o) {
            return makeLoopbackCommunicator(std::move(w), rank, withHooks(o));
          },
          py::arg("world"), py::arg("rank"), py::arg("options"))
      .def_static(
          "device_only",
          [](int rank, int size, const Options& o) {
            return makeDeviceOnlyCommunicator(rank, size, withHooks(o));
          },
          py::arg("rank"), py::arg("size"), py::arg("options"))
#ifdef RR_HAVE_UCX
      .def_static(
          "ucx",
          [](int rank, int size, py::function exchange, const UcxOptions& ucx, const Options& o) {
            // The exchange runs Python (a store, mpi4py) on this thread,
            // which holds the GIL for the whole setup.
            AddressExchange ex = [exchange](const std::string& mine) {
              py::list got = exchange(py::bytes(mine));
              std::vector<std::string> all;
              for (auto item : got) all.push_back(item.cast<std::string>());
              return all;
            };
            return makeUcxCommunicator(rank, size, std::move(ex), ucx, withHooks(o));
          },
          py::arg("rank"), py::arg("size"), py::arg("exchange"), py::arg("ucx"), py::arg("options"))
      .def_property_readonly("transport_settings", [](Communicator& c) {
        auto* u = dynamic_cast<UcxTransport*>(&c.hostTransport());
        return u ? u->settings() : std::string();
      })
#endif
#ifdef RR_HAVE_MPI
      .def_static("mpi", [](const Options& o) { return makeMpiCommunicator(withHooks(o)); },
                  py::arg("options"), py::call_guard<py::gil_scoped_release>())
#endif
      .def_property_readonly("rank", &Communicator::rank)
      .def_property_readonly("size", &Communicator::size)
      .def_property_readonly("engines", &Communicator::engineNames)
      .def_property_readonly("sequence", &Communicator::sequence)
      .def_property_readonly("finalized", &Communicator::finalized)
      .def_property_readonly("has_host_transport", &Communicator::hasHostTransport)
      .def_property_readonly("poison_message", &Communicator::poisonMessage)
      .def_property_readonly("options", [](Communicator& c) { return c.options(); },
                             "A copy of the settings in force.")
      .def("set_timeout", [](Communicator& c, double v) { c.options().timeoutSec = v; })
      .def("set_chunk_bytes", [](Communicator& c, int64_t v) { c.options().chunkBytes = v; })
      .def("set_policy", &Communicator::setPolicy, py::call_guard<py::gil_scoped_release>())
      .def(
          "submit",
          [](Communicator& c, Coll coll, uintptr_t in, uintptr_t out, int64_t count, DType dtype,
             ReduceOp op, int root, int peer, std::vector<int64_t> counts,
             std::vector<int64_t> recvCounts, int device, uintptr_t stream, int64_t chunkBytes,
             std::string algo, bool async, int64_t tag) {
            Call call = makeCall(coll, in, out, count, dtype, op, root, peer, std::move(counts),
                                 std::move(recvCounts), device, stream, chunkBytes, std::move(algo));
            call.userTag = tag;
            markCapture(call);
            return c.submit(std::move(call), async);
          },
          py::arg("coll"), py::arg("inp") = 0, py::arg("out") = 0, py::arg("count") = 0,
          py::arg("dtype") = DType::kUInt8, py::arg("op") = ReduceOp::kSum, py::arg("root") = 0,
          py::arg("peer") = -1, py::arg("counts") = std::vector<int64_t>(),
          py::arg("recv_counts") = std::vector<int64_t>(), py::arg("device") = -1,
          py::arg("stream") = 0, py::arg("chunk_bytes") = 0, py::arg("algo") = "",
          py::arg("async_op") = false, py::arg("tag") = 0, py::call_guard<py::gil_scoped_release>())
      .def(
          "explain",
          [](Communicator& c, Coll coll, int64_t count, DType dtype, ReduceOp op, int root,
             std::vector<int64_t> counts, std::vector<int64_t> recvCounts, int device,
             std::string algo) {
            Choice ch = c.explain(makeCall(coll, 0, 0, count, dtype, op, root, -1, std::move(counts),
                                           std::move(recvCounts), device, 0, 0, std::move(algo)));
            return py::make_tuple(ch.algo ? ch.algo->name() : "direct", ch.why);
          },
          py::arg("coll"), py::arg("count") = 0, py::arg("dtype") = DType::kUInt8,
          py::arg("op") = ReduceOp::kSum, py::arg("root") = 0,
          py::arg("counts") = std::vector<int64_t>(), py::arg("recv_counts") = std::vector<int64_t>(),
          py::arg("device") = -1, py::arg("algo") = "",
          "(algorithm, why) for a call of this shape.")
      .def("refuse", &Communicator::refuse, py::arg("coll"), py::arg("peer"), py::arg("why"),
           py::arg("tag") = 0, py::call_guard<py::gil_scoped_release>())
      .def("allgather_bytes",
           [](Communicator& c, const py::bytes& mine) {
             std::string s = mine;
             std::vector<std::string> all;
             {
               py::gil_scoped_release release;
               all = c.allgatherBytes(s);
             }
             py::list out;
             for (auto& x : all) out.append(py::bytes(x));
             return out;
           },
           py::arg("mine"), "Blocking all-gather of a few bytes per rank (engine setup).")
      .def("allreduce_host_arrays", &allreduceHostArrays,
           "Blocking all-reduce of host arrays (x, out or None, op code); False if not applicable.")
      .def("allreduce_host", &allreduceHostNow,
           "Blocking all-reduce of host memory (in, out, count, dtype code, op code).")
      .def(
          "allreduce_device",
          [](Communicator& c, uintptr_t ptr, int64_t count, int dtype, int op, int device,
             uintptr_t stream, uintptr_t out) {
            // The latency path for a blocking all-reduce of a device buffer
            // the Python layer has already checked (in place when `out` is
            // 0): one crossing, ordered on `stream` (the caller's), the host
            // not blocked.
            RR_CHECK_ARG(validDType(dtype), "unknown dtype code " + std::to_string(dtype));
            RR_CHECK_ARG(validOp(op), "unknown op code " + std::to_string(op));
            Call call;
            call.coll = Coll::kAllreduce;
            call.in = reinterpret_cast<void*>(ptr);
            call.out = reinterpret_cast<void*>(out ? out : ptr);
            call.count = count;
            call.dtype = static_cast<DType>(dtype);
            call.op = static_cast<ReduceOp>(op);
            call.device = device;
            call.stream = stream;
            markCapture(call);
            c.submit(std::move(call), false)->wait(-1.0, static_cast<int64_t>(stream));
          },
          py::arg("ptr"), py::arg("count"), py::arg("dtype"), py::arg("op"), py::arg("device"),
          py::arg("stream"), py::arg("out") = 0, py::call_guard<py::gil_scoped_release>(),
          "Blocking all-reduce of `count` elements of device memory at `ptr` (into `out` when "
          "not 0), ordered on `stream`.")
      .def("attach_shared_memory", &Communicator::attachSharedMemory, py::arg("round_bytes"),
           py::call_guard<py::gil_scoped_release>(),
           "Collective: the host shared-memory algorithms for ranks of one machine. '' when "
           "attached, else why not (the same on every rank).")
      .def_property_readonly("has_shared_memory", &Communicator::hasSharedMemory)
      .def("abort", &Communicator::abort, py::arg("why"), py::call_guard<py::gil_scoped_release>())
      .def("finalize", &Communicator::finalize, py::call_guard<py::gil_scoped_release>());

  m.def("host_buffer", &hostBuffer, "(ptr, count, dtype code or -1, readonly, c_contiguous, format)");

  py::class_<RingSchedule>(m, "RingSchedule", "The ring's chunk arithmetic (elements).")
      .def(py::init<int64_t, int, int64_t>(), py::arg("count"), py::arg("world_size"),
           py::arg("chunk_elems"))
      .def_property_readonly("chunks_per_segment", &RingSchedule::chunksPerSegment)
      .def("segment", [](const RingSchedule& s, int seg) { return spanTuple(s.segment(seg)); })
      .def("chunk", [](const RingSchedule& s, int seg, int64_t c) { return spanTuple(s.chunk(seg, c)); })
      .def("rs_send_segment", &RingSchedule::rsSendSegment)
      .def("rs_recv_segment", &RingSchedule::rsRecvSegment)
      .def("ag_send_segment", &RingSchedule::agSendSegment)
      .def("ag_recv_segment", &RingSchedule::agRecvSegment);

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
