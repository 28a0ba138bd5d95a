"""Typed settings of daceml, overridable by ``DACEML_*`` environment variables.

Every setting is a field of :class:`Settings`. Its environment override is
``DACEML_<FIELD NAME IN UPPER CASE>`` (for example ``DACEML_CACHE_DIR``), read
once at import. ``config.patch(...)`` changes settings temporarily::

    from daceml import config
    with config.patch(cache_dir="/tmp/x", default_implementations=["pure"]):
        ...

Importing this module also sets DaCe's configuration to safe values:

- no ``-ffast-math``: a shared object built with it sets flush-to-zero for the
  whole process, after which numpy and torch turn subnormal numbers into 0;
- ``-O3 -march=native`` for C++;
- DaCe's own build cache off: daceml keys build folders by a content hash
  (see :mod:`daceml.compiler`).
"""
import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
from typing import Any, Dict, Iterator, List, get_type_hints

log = logging.getLogger(__name__)

#: C++ flags daceml compiles with (DaCe's default minus -ffast-math, plus -fno-math-errno: math
#: functions without side effects vectorize; see daceml/targets/cpu_support/vecmath.h; plus
#: -fno-trapping-math, Clang's default: no program reads the floating-point exception flags, and
#: without it GCC's if-conversion keeps a branch for a clamp or select followed by arithmetic on
#: CPUs without AVX-512 masks, which leaves such a loop (daceml_expf's, a fused SiLU's) scalar).
CPU_COMPILER_ARGS = ("-std=c++14 -fPIC -Wall -Wextra -O3 -march=native -fno-math-errno -fno-trapping-math "
                     "-Wno-unused-parameter -Wno-unused-label -Wno-unused-variable "
                     "-Wno-unused-but-set-variable")


#: force-included into every CPU translation unit (SIMD declarations of libmvec's math functions,
#: daceml_expf)
VECMATH_HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "targets", "cpu_support", "vecmath.h")
_HAS_LIBMVEC = any(os.path.exists(os.path.join(d, "libmvec.so"))
                   for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"))


@dataclasses.dataclass
class Settings:
    """All daceml settings; field docstrings are in the comments beside them."""
    #: Folder of the build cache (one sub-folder per content hash).
    cache_dir: str = os.path.join(os.path.expanduser("~"), ".cache", "daceml")
    #: Implementation names tried, in order, for every ONNX node that has no
    #: per-node or per-op choice.
    default_implementations: List[str] = dataclasses.field(
        default_factory=lambda: ["pure", "onnxruntime"])
    #: Allow the onnxruntime single-node fallback at all.
    allow_onnxruntime_fallback: bool = True
    #: C++ compiler flags for the CPU target.
    cpu_compiler_args: str = CPU_COMPILER_ARGS
    #: Number of OpenMP threads of compiled programs (0: leave OpenMP's default).
    num_threads: int = 0
    #: Comma separated logging channels to switch on (``DACEML_LOG``);
    #: ``all`` switches on every daceml logger at DEBUG level.
    log: str = ""

    def __setattr__(self, name: str, value: Any) -> None:
        fields = {f.name for f in dataclasses.fields(self)}
        if name not in fields:
            raise AttributeError(f"daceml.config has no setting {name!r}; settings are: {sorted(fields)}")
        super().__setattr__(name, value)


def _parse_env(name: str, hint: Any, raw: str) -> Any:
    if hint is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"environment variable {name}={raw!r}: expected a boolean (1/0, true/false)")
    if hint is int:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"environment variable {name}={raw!r}: expected an integer") from None
    if hint == List[str]:
        return [s.strip() for s in raw.split(",") if s.strip()]
    return raw


def _from_environment() -> Settings:
    settings = Settings()
    hints = get_type_hints(Settings)
    for field in dataclasses.fields(Settings):
        env_name = "DACEML_" + field.name.upper()
        if env_name in os.environ:
            setattr(settings, field.name, _parse_env(env_name, hints[field.name], os.environ[env_name]))
    return settings


settings: Settings = _from_environment()


def get(name: str) -> Any:
    """Returns the current value of setting ``name``."""
    return getattr(settings, name)


def set(name: str, value: Any) -> None:  # noqa: A001 - mirrors dace.Config.set
    """Sets setting ``name`` to ``value`` (and re-applies the DaCe settings it affects)."""
    setattr(settings, name, value)
    apply_dace_settings()


@contextlib.contextmanager
def patch(**changes: Any) -> Iterator[Settings]:
    """Temporarily changes settings: ``with config.patch(cache_dir=...):``."""
    old: Dict[str, Any] = {}
    try:
        for name, value in changes.items():
            old[name] = getattr(settings, name)
            setattr(settings, name, value)
        apply_dace_settings()
        yield settings
    finally:
        for name, value in old.items():
            setattr(settings, name, value)
        apply_dace_settings()


@functools.lru_cache(maxsize=1)
def native_isa() -> str:
    """What ``-march=native`` compiles for here: the instruction-set flags of this machine's CPU
    (sorted, from /proc/cpuinfo), so that a build cache shared between machines (or a virtual
    machine moved to another host) never loads code for instructions this CPU lacks."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return " ".join(sorted(frozenset(line.split(":", 1)[1].split())))
    except OSError:
        pass
    import platform
    return f"{platform.machine()} {platform.processor()}"


def snapshot() -> Dict[str, Any]:
    """The settings that change generated code, for build-cache keys."""
    import dace
    return {
        "native_isa": hashlib.sha256(native_isa().encode()).hexdigest()[:16],
        "cpu_compiler_args": settings.cpu_compiler_args,
        "dace_version": dace.__version__,
        "linker_args": dace.Config.get("compiler", "linker", "args"),
        "cpu_libs": dace.Config.get("compiler", "cpu", "libs"),
        "build_type": dace.Config.get("compiler", "build_type"),
    }


def apply_dace_settings() -> None:
    """Writes daceml's choices into DaCe's global configuration."""
    import dace
    # vector versions of exp, erf, tanh, ... (glibc's libmvec) for vectorized loops, where libmvec
    # can be linked (its declarations without the library would leave undefined symbols), and
    # daceml's inline helpers (daceml_expf) everywhere
    vecmath = f" -include {VECMATH_HEADER}" + (" -DDACEML_LIBMVEC" if _HAS_LIBMVEC else "")
    dace.Config.set("compiler", "cpu", "args", value=settings.cpu_compiler_args + vecmath)
    dace.Config.set("compiler", "cpu", "libs", value="mvec" if _HAS_LIBMVEC else "")
    # DaCe's default build type (RelWithDebInfo) appends -O2 after our -O3.
    dace.Config.set("compiler", "build_type", value="Release")
    # daceml keys builds by content hash itself; DaCe must not reuse by name.
    dace.Config.set("compiler", "use_cache", value=False)
    dace.Config.set("cache", value="unique")
    dace.Config.set("debugprint", value=False)
    dace.Config.set("profiling", value=False)
    # Compiled programs are called with arrays that may be views (torch tensors).
    dace.Config.set("compiler", "allow_view_arguments", value=True)
    dace.Config.set("default_build_folder", value=os.path.join(settings.cache_dir, "dace-default"))


def _setup_logging() -> None:
    from daceml import log as daceml_log
    daceml_log.configure(settings.log)


apply_dace_settings()
