"""Exceptions daceml raises on bad input; each message names the thing at fault."""


class DacemlError(Exception):
    """Base class of daceml's own errors."""


class ModelLoadError(DacemlError, ValueError):
    """A model file or ModelProto could not be read or is malformed."""


class UnsupportedOpsError(DacemlError, NotImplementedError):
    """The model uses ops daceml cannot run; lists all of them at once."""

    def __init__(self, unsupported, supported_hint: str = ""):
        #: list of (op_type, node name, domain, detail)
        self.unsupported = list(unsupported)
        lines = [f"  - {op} (node {name!r}, domain {dom or 'ai.onnx'}){': ' + detail if detail else ''}"
                 for op, name, dom, detail in self.unsupported]
        msg = f"{len(self.unsupported)} unsupported node(s) in the model:\n" + "\n".join(lines)
        if supported_hint:
            msg += "\n" + supported_hint
        super().__init__(msg)


class InvalidNodeError(DacemlError, ValueError):
    """An ONNX node is malformed (missing input, wrong attribute type, ...)."""


class NoImplementationError(DacemlError, NotImplementedError):
    """No registered implementation of an op can expand a node; lists the reasons."""


class CompilationError(DacemlError, RuntimeError):
    """The C++ compiler failed; the full log is in a file named in the message."""


class InputError(DacemlError, ValueError):
    """A call got an input of the wrong shape, dtype, or count."""


class InputTypeError(DacemlError, TypeError):
    """A call got an input of the wrong type or dtype."""
