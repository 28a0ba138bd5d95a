"""daceml's browser GUI: see the dataflow, try transformations, measure, export a recipe.

    daceml gui model.onnx                      # or: daceml gui path/to/net.py:Net
    daceml.gui.serve(module, (x,))             # from Python: a torch module, DaceModule or ONNX model

A small local server (:mod:`daceml.gui.server`) keeps the session (graph
versions, history) and serves a page that draws the SDFG with DaCe's own
renderer. Everything the page needs ships in this package and in dace; no
network is used.
"""
import logging
import sys
from typing import Any, Dict, Optional, Sequence

log = logging.getLogger(__name__)


def serve(model: Any, example_inputs: Optional[Sequence[Any]] = None, *, port: int = 0, open_browser: bool = True,
          block: bool = True, dims: Optional[Dict[str, int]] = None, token: Optional[str] = None):
    """Opens ``model`` in the GUI and serves it on 127.0.0.1.

    :param model: a torch ``nn.Module`` or ``DaceModule`` (with ``example_inputs``), an
                  ONNX ``ModelProto``, an ``ONNXModel``, a path to an ``.onnx`` file, or
                  ``"path/to/file.py:ModuleClass"``.
    :param example_inputs: inputs to run on (default for ONNX: random, symbolic dims from ``dims`` or 2).
    :param port: port to listen on (0: any free port).
    :param open_browser: open the page in the default browser.
    :param block: serve until interrupted (Ctrl-C); otherwise serve in a background thread
                  and return at once.
    :return: the :class:`~daceml.gui.server.GuiServer` (``.url`` has the token, ``.shutdown()``).
    """
    from daceml.gui import loading
    from daceml.gui.server import GuiServer
    from daceml.gui.session import Session
    source = loading.load(model, example_inputs, dims)
    server = GuiServer(Session(source), port=port, token=token)
    return _run(server, open_browser, block)


def _run(server, open_browser: bool, block: bool):
    print(f"daceml GUI: {server.url}", file=sys.stderr, flush=True)
    if open_browser:
        server.open_browser()
    if not block:
        return server.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return server


def main(model: str, port: int = 0, open_browser: bool = True, dims: Optional[Dict[str, int]] = None) -> int:
    """``daceml gui MODEL``: a model that fails to open is shown as an error in the page."""
    from daceml.errors import DacemlError
    from daceml.gui import loading
    from daceml.gui.server import GuiServer
    from daceml.gui.session import Session
    session, error = None, None
    try:
        session = Session(loading.load(model, dims=dims))
    except DacemlError as ex:
        error = f"could not open {model}: {ex}"
    except Exception as ex:  # shown in the page; the server stays up to open another model
        error = f"could not open {model}: {type(ex).__name__}: {ex}"
    if error:
        print(f"daceml GUI: {error}", file=sys.stderr)
    server = GuiServer(session, port=port, load_error=error)
    _run(server, open_browser, block=True)
    return 0


__all__ = ["serve", "main"]
