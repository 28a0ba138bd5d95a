"""Logging channels of daceml.

Every module logs through ``logging.getLogger(__name__)``; a channel is a
logger name below ``daceml`` (``compiler``, ``onnx.importer``,
``onnx.ops.registry`` ...). ``DACEML_LOG`` switches channels on at DEBUG level:
``DACEML_LOG=compiler,onnx.ops.registry`` or ``DACEML_LOG=all``. Without it,
daceml's warnings still reach the root logger as usual.
"""
import logging
import sys

_HANDLER_NAME = "daceml-log-channels"


def configure(channels: str) -> None:
    """Switches the named channels (comma separated, or ``all``) on at DEBUG level."""
    names = [c.strip() for c in (channels or "").split(",") if c.strip()]
    if not names:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(logging.Formatter("[%(name)s] %(levelname)s: %(message)s"))
    for name in names:
        logger_name = "daceml" if name == "all" else (name if name.startswith("daceml") else "daceml." + name)
        logger = logging.getLogger(logger_name)
        logger.setLevel(logging.DEBUG)
        if not any(h.get_name() == _HANDLER_NAME for h in logger.handlers):
            logger.addHandler(handler)
        logger.propagate = False
