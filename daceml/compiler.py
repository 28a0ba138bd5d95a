"""Compiling SDFGs into shared objects, with a build cache keyed by content.

``compile_sdfg(sdfg)`` returns a :class:`CompiledProgram`. Builds live in
``config.cache_dir/<key>`` where ``key`` is a SHA-256 over the SDFG's content
(``SDFG.hash_sdfg`` plus its name), the settings that change generated code,
daceml's own sources and the registered op implementations. A later process
asking for the same program loads it instead of compiling.

The cache is safe under concurrency and interruption:

- builders of the same key take an exclusive ``fcntl`` lock on
  ``<key>.lock``; the second one finds the finished entry and loads it;
- a build happens in a private temporary folder; only after the compiler
  succeeded is a manifest (with the SHA-256 of the shared object) written and
  the folder renamed into place atomically. A killed compiler or a full disk
  leaves a temporary folder that nobody loads; an entry whose shared object
  does not match its manifest is rebuilt.
"""
import contextlib
import ctypes
import dataclasses
import fcntl
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

import dace
from dace import data as dt
from dace.codegen import codegen as dace_codegen
from dace.codegen import compiler as dace_compiler
from dace.codegen import exceptions as dace_cgx
from dace.codegen.compiled_sdfg import CompiledSDFG, ReloadableDLL

from daceml import config
from daceml.errors import CompilationError

log = logging.getLogger(__name__)

MANIFEST = "daceml_build.json"
_TEMP_PREFIX = ".build-"
_STALE_TEMP_SECONDS = 6 * 3600

_source_fingerprint: Optional[str] = None
#: parts of daceml that do not change generated code (left out of the build key)
_NOT_CODEGEN = {"gui", "cli.py", "testing", "analysis", "bench.py", "bench_gpu.py"}
#: the files of daceml that generated code depends on: its Python and the headers / CMake files it ships
_CODEGEN_FILES = ("*.py", "*.h", "*.cmake")


def _daceml_source_fingerprint() -> str:
    """SHA-256 over daceml's sources (Python, shipped headers and CMake files): any change of the
    compiler invalidates old builds."""
    global _source_fingerprint
    if _source_fingerprint is None:
        root = os.path.dirname(os.path.abspath(__file__))
        h = hashlib.sha256()
        paths = {p for pattern in _CODEGEN_FILES for p in glob.glob(os.path.join(root, "**", pattern), recursive=True)}
        for path in sorted(paths):
            if os.path.relpath(path, root).split(os.sep)[0] in _NOT_CODEGEN:
                continue
            h.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as f:
                h.update(f.read())
        _source_fingerprint = h.hexdigest()
    return _source_fingerprint


#: JSON keys that are not part of an SDFG's content (names, history, source locations)
_NOT_CONTENT = {"name", "hash", "orig_sdfg", "transformation_hist", "instrument", "guid", "debuginfo"}


def content_hash(sdfg: dace.SDFG) -> str:
    """A SHA-256 of ``sdfg``'s content that is the same in every process.

    ``SDFG.hash_sdfg()`` hashes the JSON in dict order, and some dicts (connectors made
    from sets) come out in an order that depends on PYTHONHASHSEED; this hash sorts keys
    and leaves out names, history and debug information (source locations).
    """

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items()
                    if not (isinstance(k, str) and (k in _NOT_CONTENT or k.startswith("_meta_")))
                    and k != "cfg_list_id"}
        if isinstance(obj, (list, tuple)):
            return [strip(v) for v in obj]
        return obj

    text = json.dumps(strip(json.loads(json.dumps(sdfg.to_json(), default=str))), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def build_key(sdfg: dace.SDFG, extra: Optional[Dict[str, Any]] = None) -> str:
    """The content hash that names the build folder of ``sdfg``."""
    from daceml.onnx.ops import registry  # late: the registry imports the op modules
    h = hashlib.sha256()
    h.update(sdfg.name.encode())
    h.update(content_hash(sdfg).encode())
    h.update(json.dumps(config.snapshot(), sort_keys=True).encode())
    h.update(_daceml_source_fingerprint().encode())
    h.update(registry.fingerprint().encode())
    if extra:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()[:40]


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _library_path(folder: str, name: str) -> str:
    return os.path.join(folder, "build", f"lib{name}.{dace.Config.get('compiler', 'library_extension')}")


@contextlib.contextmanager
def _locked(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def entry_is_valid(folder: str) -> bool:
    """True if ``folder`` holds a finished build whose shared object matches its manifest."""
    manifest_path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(manifest_path):
        return False
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        lib = _library_path(folder, manifest["sdfg_name"])
        return os.path.isfile(lib) and _sha256_file(lib) == manifest["library_sha256"]
    except (OSError, ValueError, KeyError):
        return False


def _summarise_compiler_output(output: str, limit: int = 6) -> str:
    errors = [line.strip() for line in output.splitlines() if re.search(r"\berror\b", line)]
    if not errors:
        errors = [line.strip() for line in output.strip().splitlines()[-limit:]]
    return "\n".join("    " + e[:300] for e in errors[:limit])


def _build_into(sdfg: dace.SDFG, folder: str, validate: bool) -> None:
    """Generates code for ``sdfg`` and compiles it in ``folder`` (raises CompilationError)."""
    sdfg.build_folder = folder
    sdfg.fill_scope_connectors()
    program_objects = dace_codegen.generate_code(sdfg, validate=validate)
    # Expansions of daceml's node classes are made on the fly; the saved program need not replay them.
    for sub in sdfg.all_sdfgs_recursive():
        sub.transformation_hist = []
    dace_compiler.generate_program_folder(sdfg, program_objects, folder)
    try:
        dace_compiler.configure_and_compile(folder, sdfg.name)
    except (dace_cgx.CompilationError, dace_cgx.CompilerConfigurationError) as ex:
        kept = os.path.join(config.settings.cache_dir, "failed", f"{sdfg.name}-{uuid.uuid4().hex[:8]}")
        os.makedirs(kept, exist_ok=True)
        log_path = os.path.join(kept, "compiler-output.log")
        with open(log_path, "w") as f:
            f.write(str(ex))
        shutil.copytree(os.path.join(folder, "src"), os.path.join(kept, "src"), dirs_exist_ok=True)
        raise CompilationError(f"compiling program {sdfg.name!r} failed; first errors:\n"
                               f"{_summarise_compiler_output(str(ex).replace(folder, kept))}\n"
                               f"full compiler output: {log_path}; generated sources: {kept}/src") from None


def _clean_stale_temporaries(cache_dir: str) -> None:
    now = time.time()
    for path in glob.glob(os.path.join(cache_dir, _TEMP_PREFIX + "*")):
        try:
            if now - os.path.getmtime(path) > _STALE_TEMP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


@dataclasses.dataclass
class Build:
    """A finished build in the cache (returned instead of a program when not loading it)."""
    folder: str
    key: str
    built: bool
    seconds: float


def compile_sdfg(sdfg: dace.SDFG, validate: bool = True, extra_key: Optional[Dict[str, Any]] = None,
                 load: bool = True, key_source: Optional[dace.SDFG] = None) -> Union["CompiledProgram", Build]:
    """Compiles ``sdfg`` (or finds its cached build) and returns a callable program, or only
    the :class:`Build` if ``load`` is False (e.g. a GPU program on a machine without a GPU).

    ``key_source``: the program ``sdfg`` was lowered from, whose content then names the build
    instead of ``sdfg``'s (``extra_key`` must then say how it was lowered): for lowerings whose
    output differs from process to process in names and node order but not in meaning.

    The SDFG given is not modified: code generation works on a copy.
    """
    import copy
    cache_dir = config.settings.cache_dir
    key = build_key(sdfg if key_source is None else key_source, extra_key)
    folder = os.path.join(cache_dir, key)
    start = time.perf_counter()
    built = False
    if not entry_is_valid(folder):
        with _locked(folder + ".lock"):
            if not entry_is_valid(folder):
                if os.path.exists(folder):
                    log.warning("build cache entry %s is incomplete or corrupt; rebuilding it", folder)
                    shutil.rmtree(folder, ignore_errors=True)
                _clean_stale_temporaries(cache_dir)
                temp = os.path.join(cache_dir, f"{_TEMP_PREFIX}{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
                log.info("compiling %s into %s", sdfg.name, folder)
                try:
                    _build_into(copy.deepcopy(sdfg), temp, validate)
                    lib = _library_path(temp, sdfg.name)
                    manifest = {"key": key, "sdfg_name": sdfg.name, "library_sha256": _sha256_file(lib),
                                "created": time.time(), "dace_version": dace.__version__}
                    with open(os.path.join(temp, MANIFEST), "w") as f:
                        json.dump(manifest, f)
                        f.flush()
                        os.fsync(f.fileno())
                    os.rename(temp, folder)
                finally:
                    shutil.rmtree(temp, ignore_errors=True)
                built = True
    if not load:
        return Build(folder, key, built, time.perf_counter() - start)
    program = CompiledProgram.load(folder)
    program.built = built
    program.seconds = time.perf_counter() - start
    log.info("%s %s in %.2f s (%s)", "compiled" if built else "loaded", sdfg.name, program.seconds, folder)
    return program


class CompiledProgram:
    """A compiled SDFG, called with arrays (numpy or torch, by name) and symbol values.

    Arguments are passed as raw pointers through :mod:`daceml._C` (no ctypes on
    the call path; where the extension is not built for this Python, through the ctypes
    stand-in of :mod:`daceml._dispatch`). Arrays must be C-contiguous with the SDFG's dtype; callers
    with user-facing names check that (see :mod:`daceml.onnx.importer`).
    """

    def __init__(self, csdfg: CompiledSDFG, folder: str):
        from daceml import _dispatch
        self.csdfg = csdfg
        self.sdfg: dace.SDFG = csdfg.sdfg
        self.folder = folder
        self.built = False
        self.seconds = 0.0
        arglist = self.sdfg.arglist()
        self.argnames: List[str] = list(self.sdfg.signature_arglist(with_types=False, arglist=arglist))
        self.arg_descs: Dict[str, dt.Data] = {n: arglist[n] for n in self.argnames}
        for name, desc in self.arg_descs.items():
            if not isinstance(desc, dt.Array) and desc.dtype not in dace.dtypes.INTEGER_TYPES:
                raise CompilationError(f"program {self.sdfg.name!r}: argument {name!r} is a "
                                       f"{desc.dtype} scalar; daceml programs take arrays and integer symbols only")
        self.free_symbols = sorted(self.sdfg.free_symbols)
        self.symbol_names = [n for n in self.argnames if not isinstance(self.arg_descs[n], dt.Array)]
        self.array_names = [n for n in self.argnames if isinstance(self.arg_descs[n], dt.Array)]
        self._slot = {n: i for i, n in enumerate(self.argnames)}
        self._entry = ctypes.cast(csdfg._cfunc, ctypes.c_void_p).value
        self._init_symbols: Optional[Tuple[int, ...]] = None
        self._C = _dispatch.implementation()
        self._program = None

    @classmethod
    def load(cls, folder: str) -> "CompiledProgram":
        with open(os.path.join(folder, MANIFEST)) as f:
            name = json.load(f)["sdfg_name"]
        sdfg = dace.SDFG.from_file(os.path.join(folder, "program.sdfg"))
        from daceml.targets import cpu
        if cpu.MKL.is_installed():  # a program may link libmkl_rt: GNU threading, libgomp global
            cpu.prepare_mkl()
        csdfg = CompiledSDFG(sdfg, ReloadableDLL(_library_path(folder, name), name))
        return cls(csdfg, folder)

    def _ensure_initialized(self, symbols: Dict[str, int]) -> None:
        gpu = self.csdfg.has_gpu_code
        if gpu:
            from daceml.targets import cuda
            cuda.require_gpu(f"program {self.sdfg.name!r}")
        values = tuple(int(symbols[n]) for n in self.symbol_names if n in self.free_symbols)
        if self._init_symbols == values and self._program is not None:
            if gpu:
                self._follow_stream()
            return
        if self.csdfg._initialized:
            self.csdfg.finalize()
        initargs = tuple(self.arg_descs[n].dtype.as_ctypes()(int(symbols[n]))
                         for n in self.symbol_names if n in self.free_symbols)
        self.csdfg._initialize(initargs)
        self._init_symbols = values
        handle = self.csdfg._libhandle.value
        self._program = self._C.Program(self._entry, handle, len(self.argnames))
        if gpu:
            self._stream = None
            self._follow_stream()

    def _follow_stream(self) -> None:
        """A CUDA program runs on the caller's current torch stream (ordered with its work)."""
        import torch
        from daceml.targets import cuda
        stream = torch.cuda.current_stream().cuda_stream
        if getattr(self, "_stream", None) != stream:
            cuda.bind_stream(self, stream)
            self._stream = stream

    @staticmethod
    def pointer(value: Any) -> int:
        if isinstance(value, np.ndarray):
            return value.__array_interface__["data"][0]
        if hasattr(value, "data_ptr"):
            return value.data_ptr()
        raise TypeError(f"expected a numpy array or torch tensor, got {type(value).__name__}")

    def __call__(self, **kwargs: Any) -> None:
        """Runs the program. Every array argument and symbol must be given by name."""
        missing = [n for n in self.argnames if n not in kwargs]
        if missing:
            raise TypeError(f"program {self.sdfg.name!r}: missing arguments {missing}")
        symbols = {n: kwargs[n] for n in self.symbol_names}
        self._ensure_initialized(symbols)
        values = [self.pointer(kwargs[n]) if n in self.arg_descs and isinstance(self.arg_descs[n], dt.Array)
                  else int(kwargs[n]) for n in self.argnames]
        self._program.set_many(0, values)
        self._program()

    def prepared(self, symbols: Dict[str, int]):
        """The ``daceml._C.Program`` for these symbol values, for callers that fill slots themselves."""
        self._ensure_initialized(symbols)
        for n in self.symbol_names:
            self._program.set(self._slot[n], int(symbols[n]))
        return self._program

    def slot(self, name: str) -> int:
        return self._slot[name]
