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
}
