// daceml._C: calls the entry point of a program compiled by DaCe with raw
// pointers and integer symbol values, without going through ctypes.
//
// A DaCe program's entry point is `void __program_<name>(State *handle, ...)`
// where every argument after the handle is either a pointer to an array or an
// integer symbol value (daceml never passes floating-point scalars by value:
// the importer turns rank-0 tensors into arrays of one element). On the
// x86-64 System V and AArch64 ABIs, pointers and 64-bit integers travel in the
// same integer registers and stack slots, and the caller removes the arguments
// it pushed. So one function-pointer type per argument-count bucket (8, 16,
// ..., 1024) serves every program: the unused trailing arguments are zeros the
// callee never reads.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

using Caller = void (*)(void *, void *, const int64_t *);

template <size_t... I>
void call_with(void *fn, void *handle, const int64_t *args, std::index_sequence<I...>) {
    using Fn = void (*)(void *, decltype((void)I, int64_t())...);
    reinterpret_cast<Fn>(fn)(handle, args[I]...);
}

template <size_t N>
void call_bucket(void *fn, void *handle, const int64_t *args) {
    call_with(fn, handle, args, std::make_index_sequence<N>{});
}

constexpr size_t kBuckets[] = {8, 16, 32, 64, 128, 256, 512, 1024};
constexpr Caller kCallers[] = {&call_bucket<8>,   &call_bucket<16>,  &call_bucket<32>,
                               &call_bucket<64>,  &call_bucket<128>, &call_bucket<256>,
                               &call_bucket<512>, &call_bucket<1024>};
constexpr size_t kMaxArgs = 1024;

size_t bucket_index(size_t nargs) {
    for (size_t i = 0; i < sizeof(kBuckets) / sizeof(kBuckets[0]); ++i) {
        if (nargs <= kBuckets[i]) return i;
    }
    throw std::invalid_argument("daceml._C: a compiled program takes " + std::to_string(nargs) +
                                " arguments; at most " + std::to_string(kMaxArgs) + " are supported");
}

// A prepared call: a fixed entry point and state handle, and an argument
// buffer that Python fills slot by slot (weights once, inputs per call).
class Program {
  public:
    Program(uintptr_t fn, uintptr_t handle, size_t nargs)
        : fn_(reinterpret_cast<void *>(fn)), handle_(reinterpret_cast<void *>(handle)), nargs_(nargs) {
        if (fn == 0) throw std::invalid_argument("daceml._C.Program: null entry point");
        size_t b = bucket_index(nargs);
        caller_ = kCallers[b];
        args_.assign(kBuckets[b], 0);
    }

    void set(size_t index, int64_t value) {
        check(index);
        args_[index] = value;
    }

    void set_many(size_t start, const std::vector<int64_t> &values) {
        if (start + values.size() > nargs_)
            throw std::out_of_range("daceml._C.Program.set_many: slots " + std::to_string(start) + ".." +
                                    std::to_string(start + values.size()) + " exceed the program's " +
                                    std::to_string(nargs_) + " arguments");
        for (size_t i = 0; i < values.size(); ++i) args_[start + i] = values[i];
    }

    // Sets the slots listed in `indices` to `values`, then calls.
    void call_with_updates(const std::vector<size_t> &indices, const std::vector<int64_t> &values) {
        if (indices.size() != values.size())
            throw std::invalid_argument("daceml._C.Program.call_with_updates: " + std::to_string(indices.size()) +
                                        " indices but " + std::to_string(values.size()) + " values");
        for (size_t i = 0; i < indices.size(); ++i) {
            check(indices[i]);
            args_[indices[i]] = values[i];
        }
        call();
    }

    void call() {
        py::gil_scoped_release release;
        caller_(fn_, handle_, args_.data());
    }

    std::vector<int64_t> arguments() const { return {args_.begin(), args_.begin() + nargs_}; }
    size_t nargs() const { return nargs_; }

  private:
    void check(size_t index) const {
        if (index >= nargs_)
            throw std::out_of_range("daceml._C.Program: argument slot " + std::to_string(index) +
                                    " out of range (program takes " + std::to_string(nargs_) + ")");
    }

    void *fn_;
    void *handle_;
    size_t nargs_;
    Caller caller_;
    std::vector<int64_t> args_;
};

// Reads the live state of a torch module tree for each call of a DaceModule
// (daceml/torch/dispatch.py; daceml/_dispatch.py has the same in Python): per
// entry, the tensor under `attr` in its module's parameter or buffer dict, its
// contiguity, its data pointer and, for tensors a weight-prep program reads, its
// version. One pass in C++: a CNN has hundreds of tensors, and the program that
// just ran has evicted the interpreter's data from the caches.
class StateReader {
  public:
    StateReader(py::list dicts, py::list attrs, std::vector<int64_t> positions, size_t nkey)
        : positions_(std::move(positions)), nkey_(nkey) {
        if (dicts.size() != attrs.size() || dicts.size() != positions_.size())
            throw std::invalid_argument("daceml._C.StateReader: " + std::to_string(dicts.size()) + " dicts, " +
                                        std::to_string(attrs.size()) + " attrs, " +
                                        std::to_string(positions_.size()) + " positions");
        for (size_t i = 0; i < dicts.size(); ++i) {
            if (!PyDict_Check(dicts[i].ptr()))
                throw std::invalid_argument("daceml._C.StateReader: entry " + std::to_string(i) + " is not a dict");
            if (positions_[i] >= static_cast<int64_t>(nkey_))
                throw std::out_of_range("daceml._C.StateReader: key position " + std::to_string(positions_[i]) +
                                        " of entry " + std::to_string(i) + " >= " + std::to_string(nkey_));
            dicts_.push_back(py::reinterpret_borrow<py::object>(dicts[i]));
            attrs_.push_back(py::reinterpret_borrow<py::object>(attrs[i]));
        }
        tensor_type_ = py::module_::import("torch").attr("Tensor");
        is_contiguous_ = py::str("is_contiguous");
        data_ptr_ = py::str("data_ptr");
        version_ = py::str("_version");
    }

    // Appends each tensor's data pointer to `values` and returns the key (a tuple: (data
    // pointer, version) at each entry's position, None elsewhere); None when an entry is
    // missing, not a tensor or not contiguous (the caller then takes its checked path).
    py::object read(py::list values) {
        py::tuple key(nkey_);
        for (size_t i = 0; i < nkey_; ++i) PyTuple_SET_ITEM(key.ptr(), i, py::none().release().ptr());
        // First find every tensor, then touch each one's memory: the lookups and the first
        // loads of all tensors overlap instead of waiting one cache miss at a time.
        tensors_.resize(dicts_.size());
        for (size_t i = 0; i < dicts_.size(); ++i) {
            PyObject *t = PyDict_GetItemWithError(dicts_[i].ptr(), attrs_[i].ptr());  // borrowed
            if (t == nullptr) {
                if (PyErr_Occurred()) throw py::error_already_set();
                return py::none();
            }
            tensors_[i] = t;
            __builtin_prefetch(t);
        }
        for (size_t i = 0; i < dicts_.size(); ++i) {
            int is_tensor = PyObject_IsInstance(tensors_[i], tensor_type_.ptr());
            if (is_tensor < 0) throw py::error_already_set();
            if (!is_tensor) return py::none();
            // a hint only (a prefetch never faults): torch's THPVariable keeps its TensorImpl
            // pointer right after the object header and a flag
            const char *impl = *reinterpret_cast<const char *const *>(reinterpret_cast<const char *>(tensors_[i]) + 24);
            for (int line = 0; line < 4; ++line) __builtin_prefetch(impl + 64 * line);
        }
        for (size_t i = 0; i < dicts_.size(); ++i) {
            PyObject *t = tensors_[i];
            py::object contiguous = steal(PyObject_CallMethodNoArgs(t, is_contiguous_.ptr()));
            if (contiguous.ptr() != Py_True) return py::none();
            py::object ptr = steal(PyObject_CallMethodNoArgs(t, data_ptr_.ptr()));
            if (PyList_Append(values.ptr(), ptr.ptr()) < 0) throw py::error_already_set();
            if (positions_[i] >= 0) {
                py::object ver = steal(PyObject_GetAttr(t, version_.ptr()));
                PyObject *pair = PyTuple_Pack(2, ptr.ptr(), ver.ptr());
                if (pair == nullptr) throw py::error_already_set();
                PyObject *old = PyTuple_GET_ITEM(key.ptr(), positions_[i]);
                PyTuple_SET_ITEM(key.ptr(), positions_[i], pair);
                Py_DECREF(old);
            }
        }
        return std::move(key);
    }

  private:
    static py::object steal(PyObject *o) {
        if (o == nullptr) throw py::error_already_set();
        return py::reinterpret_steal<py::object>(o);
    }

    std::vector<py::object> dicts_, attrs_;
    std::vector<PyObject *> tensors_;  // borrowed, during read()
    std::vector<int64_t> positions_;
    size_t nkey_;
    py::object tensor_type_, is_contiguous_, data_ptr_, version_;
};

void call(uintptr_t fn, uintptr_t handle, const std::vector<int64_t> &args) {
    if (fn == 0) throw std::invalid_argument("daceml._C.call: null entry point");
    size_t b = bucket_index(args.size());
    std::vector<int64_t> padded(kBuckets[b], 0);
    std::copy(args.begin(), args.end(), padded.begin());
    py::gil_scoped_release release;
    kCallers[b](reinterpret_cast<void *>(fn), reinterpret_cast<void *>(handle), padded.data());
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "daceml._C: low-overhead calls into programs compiled by DaCe";
    m.attr("MAX_ARGS") = kMaxArgs;
    m.def("call", &call, py::arg("entry_point"), py::arg("handle"), py::arg("args"),
          "Calls entry_point(handle, *args); args are pointers (as integers) and integer symbol values.");
    py::class_<Program>(m, "Program")
        .def(py::init<uintptr_t, uintptr_t, size_t>(), py::arg("entry_point"), py::arg("handle"), py::arg("nargs"))
        .def("set", &Program::set, py::arg("index"), py::arg("value"))
        .def("set_many", &Program::set_many, py::arg("start"), py::arg("values"))
        .def("call_with_updates", &Program::call_with_updates, py::arg("indices"), py::arg("values"))
        .def("__call__", &Program::call)
        .def_property_readonly("arguments", &Program::arguments)
        .def_property_readonly("nargs", &Program::nargs);
    py::class_<StateReader>(m, "StateReader")
        .def(py::init<py::list, py::list, std::vector<int64_t>, size_t>(), py::arg("dicts"), py::arg("attrs"),
             py::arg("positions"), py::arg("nkey"))
        .def("read", &StateReader::read, py::arg("values"));
}
