"""The GUI's local HTTP server (Python's http.server; no other dependency).

It listens on 127.0.0.1 only and answers only requests that carry the
session token (the server compiles and runs code): in the URL's ``token``
query parameter, in an ``X-Daceml-Token`` header, or in the cookie the page
gets when it is opened with the token. Requests whose Host header is not this
server's loopback address are refused too (DNS rebinding).

Endpoints (JSON unless noted; errors are ``{"error": message, "status": code}``)::

    GET  /                            the page (text/html)
    GET  /static/<file>               the page's script and style
    GET  /sdfv/<file>                 DaCe's SDFG renderer, from the installed dace package
    GET  /api/session                 model, inputs, stages, passes, history, cursor
    GET  /api/graph?version=ID        the SDFG JSON of a version (default: current)
    GET  /api/transformations?version=ID   applicable DaCe transformations with properties
    GET  /api/node?version=&cfg=&state=&node=   the node inspector
    GET  /api/library_nodes?version=ID     ONNX nodes, implementations and why not
    GET  /api/analysis?version=ID     bytes moved / FLOPs per node and edge, totals per stage
    GET  /api/recipe[?download=1]     the history as a Python recipe (text/x-python)
    GET  /api/sdfg?version=ID         the SDFG as a .sdfg file download
    GET  /api/jobs/<id>               progress and result of a run
    POST /api/apply    {"version": ID, "op": {...}}   a new version from the current one
    POST /api/preview  {"version": ID, "op": {...}}   the graph the op would make (nothing changes)
    POST /api/undo  /api/redo  /api/revert {"version": ID}
    POST /api/run      {"repeat": N, "per_node": bool}  compile and measure (a job)
    POST /api/load     {"path": "model.onnx" | "file.py:Class", "dims": {"N": 4}}   open another model
"""
import http.server
import json
import logging
import mimetypes
import os
import secrets
import socketserver
import threading
import traceback
import urllib.parse
import webbrowser
from typing import Any, Dict, Optional, Tuple

from daceml.errors import DacemlError
from daceml.gui import loading
from daceml.gui.session import DACE_LOCK, GuiError, Session

log = logging.getLogger(__name__)

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
COOKIE = "daceml_gui_token"
MAX_BODY = 1 << 20
_TYPES = {".js": "application/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".json": "application/json", ".woff2": "font/woff2",
          ".png": "image/png", ".svg": "image/svg+xml", ".map": "application/json"}


def sdfv_dir() -> str:
    """The folder of DaCe's web renderer (sdfv.js and its chunks) in the installed dace package."""
    import dace
    return os.path.join(os.path.dirname(os.path.abspath(dace.__file__)), "viewer", "webclient", "dist")


class GuiServer:
    """A running GUI: ``url`` (with the token), ``session`` (None until a model loaded)."""

    def __init__(self, session: Optional[Session], port: int = 0, token: Optional[str] = None,
                 load_error: Optional[str] = None):
        self.session = session
        self.load_error = load_error
        self.token = token or secrets.token_urlsafe(24)
        self._load_lock = threading.Lock()
        handler = _make_handler(self)
        self.httpd = _Server(("127.0.0.1", port), handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/?token={self.token}"
        self._thread: Optional[threading.Thread] = None

    def start(self) -> "GuiServer":
        """Serves in a background thread."""
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="daceml-gui", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def open_browser(self) -> None:
        try:
            webbrowser.open(self.url)
        except Exception as ex:  # no browser here: the URL is printed anyway
            log.info("could not open a browser: %s", ex)

    def load(self, path: Any, dims: Optional[Dict[str, int]] = None) -> Session:
        """Opens another model; on failure the current session stays."""
        with self._load_lock, DACE_LOCK:
            try:
                source = loading.load(path, dims=dims)
            except DacemlError as ex:
                raise GuiError(f"could not open {path}: {ex}", 422) from None
            except Exception as ex:
                log.info("load failed:\n%s", traceback.format_exc())
                raise GuiError(f"could not open {path}: {type(ex).__name__}: {ex}", 422) from None
            self.session = Session(source)
            self.load_error = None
            return self.session


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _make_handler(gui: GuiServer):

    class Handler(http.server.BaseHTTPRequestHandler):
        server_version = "daceml-gui"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # noqa: D401 - http.server API
            log.debug("%s %s", self.address_string(), fmt % args)

        # --- plumbing ------------------------------------------------------------------

        def _send(self, status: int, body: bytes, ctype: str, headers: Optional[Dict[str, str]] = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any, headers: Optional[Dict[str, str]] = None) -> None:
            self._send(status, json.dumps(obj, default=str).encode(), "application/json", headers)

        def _error(self, status: int, message: str) -> None:
            self._json(status, {"error": message, "status": status})

        def _query(self) -> Dict[str, str]:
            q = urllib.parse.urlparse(self.path).query
            return {k: v[-1] for k, v in urllib.parse.parse_qs(q, keep_blank_values=True).items()}

        def _cookie_token(self) -> Optional[str]:
            for part in (self.headers.get("Cookie") or "").split(";"):
                k, _, v = part.strip().partition("=")
                if k == COOKIE:
                    return v
            return None

        def _authorized(self, allow_cookie: bool) -> Tuple[bool, Optional[str]]:
            """(authorized, how) — ``how`` is 'query' when the token came in the URL."""
            given = self._query().get("token")
            if given is not None and secrets.compare_digest(given, gui.token):
                return True, "query"
            header = self.headers.get("X-Daceml-Token")
            if header is not None and secrets.compare_digest(header, gui.token):
                return True, "header"
            if allow_cookie:
                cookie = self._cookie_token()
                if cookie is not None and secrets.compare_digest(cookie, gui.token):
                    return True, "cookie"
            return False, None

        def _host_ok(self) -> bool:
            host = (self.headers.get("Host") or "").strip().lower()
            return host in (f"127.0.0.1:{gui.port}", f"localhost:{gui.port}")

        def _body(self) -> Dict[str, Any]:
            length = self.headers.get("Content-Length")
            if length is None:
                if self.headers.get("Transfer-Encoding"):
                    raise GuiError("send the body with a Content-Length", 411)
                return {}
            try:
                n = int(length)
            except ValueError:
                raise GuiError("bad Content-Length") from None
            if n > MAX_BODY:
                # read what the client sends (up to a bound) so that it sees the 413, not a reset
                left = min(n, 16 * MAX_BODY)
                while left > 0:
                    chunk = self.rfile.read(min(left, 1 << 16))
                    if not chunk:
                        break
                    left -= len(chunk)
                self.close_connection = True
                raise GuiError(f"request body too large ({n} bytes; at most {MAX_BODY})", 413)
            raw = self.rfile.read(n) if n else b""
            if not raw:
                return {}
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as ex:
                raise GuiError(f"the request body is not valid JSON: {ex}") from None
            if not isinstance(body, dict):
                raise GuiError("the request body must be a JSON object")
            return body

        def _session(self) -> Session:
            if gui.session is None:
                raise GuiError("no model is open" + (f": {gui.load_error}" if gui.load_error else "") +
                               "; open one with POST /api/load", 409)
            return gui.session

        # --- dispatch ------------------------------------------------------------------

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        def do_DELETE(self):
            self._dispatch("DELETE")

        def _dispatch(self, method: str) -> None:
            path = urllib.parse.urlparse(self.path).path
            try:
                if not self._host_ok():
                    return self._error(403, "requests must be addressed to 127.0.0.1 or localhost on this port")
                is_api = path.startswith("/api/")
                ok, how = self._authorized(allow_cookie=not is_api and method == "GET")
                if not ok:
                    return self._error(403, "missing or wrong token: open the URL the server printed "
                                            "(it ends in ?token=...)")
                if is_api:
                    return self._api(method, path[len("/api/"):])
                if method != "GET" and method != "HEAD":
                    return self._error(405, f"{method} is not allowed on {path}")
                if path in ("/", "/index.html"):
                    return self._index(how)
                if path.startswith("/static/"):
                    return self._file(STATIC_DIR, path[len("/static/"):])
                if path.startswith("/sdfv/"):
                    return self._file(sdfv_dir(), path[len("/sdfv/"):])
                if path == "/favicon.ico":
                    return self._send(204, b"", "image/x-icon")
                return self._error(404, f"no page {path}")
            except GuiError as ex:
                return self._error(ex.status, str(ex))
            except BrokenPipeError:
                return None
            except Exception as ex:
                log.warning("internal error on %s %s:\n%s", method, path, traceback.format_exc())
                try:
                    return self._error(500, f"internal error: {type(ex).__name__}: {ex}")
                except Exception:
                    return None

        def _index(self, how: Optional[str]) -> None:
            with open(os.path.join(STATIC_DIR, "index.html"), encoding="utf-8") as f:
                html = f.read().replace("{{TOKEN}}", gui.token)
            headers = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
                                                  "style-src 'self' 'unsafe-inline'; "
                                                  "script-src 'self' 'unsafe-eval'; worker-src 'self' blob:; "
                                                  "font-src 'self' data:; connect-src 'self'"}
            if how == "query":
                headers["Set-Cookie"] = f"{COOKIE}={gui.token}; Path=/; HttpOnly; SameSite=Strict"
            self._send(200, html.encode(), "text/html; charset=utf-8", headers)

        def _file(self, root: str, rel: str) -> None:
            rel = urllib.parse.unquote(rel)
            full = os.path.realpath(os.path.join(root, rel))
            if not full.startswith(os.path.realpath(root) + os.sep) or not os.path.isfile(full):
                return self._error(404, f"no file {rel!r}")
            ext = os.path.splitext(full)[1]
            ctype = _TYPES.get(ext) or mimetypes.guess_type(full)[0] or "application/octet-stream"
            with open(full, "rb") as f:
                body = f.read()
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "private, max-age=3600")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        # --- the API -------------------------------------------------------------------

        def _api(self, method: str, route: str) -> None:
            q = self._query()
            get_routes = {"session", "graph", "transformations", "node", "library_nodes", "analysis", "recipe", "sdfg"}
            post_routes = {"apply", "preview", "undo", "redo", "revert", "run", "load"}
            if route.startswith("jobs/"):
                if method != "GET":
                    return self._error(405, f"use GET for /api/{route}")
                return self._json(200, self._session().job(route[len("jobs/"):]).to_json())
            if route in get_routes and method != "GET":
                return self._error(405, f"use GET for /api/{route}")
            if route in post_routes and method != "POST":
                return self._error(405, f"use POST for /api/{route}")
            if route not in get_routes and route not in post_routes:
                return self._error(404, f"no endpoint /api/{route}; endpoints: "
                                        f"{sorted(get_routes | post_routes | {'jobs/<id>'})}")
            if route == "session":
                if gui.session is None:
                    return self._json(200, {"session": None, "load_error": gui.load_error})
                return self._json(200, gui.session.state())
            if route == "load":
                body = self._body()
                path = body.get("path")
                if not isinstance(path, str) or not path.strip():
                    raise GuiError("'path' must be the path of an .onnx file or path/to/file.py:ModuleClass")
                dims = body.get("dims")
                if dims is not None and (not isinstance(dims, dict) or
                                         not all(isinstance(v, int) and v > 0 for v in dims.values())):
                    raise GuiError("'dims' must map symbol names to positive integers")
                gui.load(path.strip(), dims)
                return self._json(200, gui.session.state())
            s = self._session()
            if route == "graph":
                v = s.version(q.get("version"))
                body = s.graph_json(v.id).encode()
                return self._send(200, body, "application/json",
                                  {"X-Daceml-Version": str(v.id), "X-Daceml-Level": str(v.level)})
            if route == "sdfg":
                v = s.version(q.get("version"))
                body = s.graph_json(v.id).encode()
                return self._send(200, body, "application/json", {
                    "Content-Disposition": f'attachment; filename="{s.model.name}_v{v.id}.sdfg"'})
            if route == "transformations":
                v = s.version(q.get("version"))
                return self._json(200, {"version": v.id, "matches": s.matches(v.id)})
            if route == "node":
                missing = [k for k in ("cfg", "state", "node") if k not in q]
                if missing:
                    raise GuiError(f"missing query parameter(s) {missing}: /api/node?version=&cfg=&state=&node=")
                return self._json(200, s.node_info(q.get("version"), q["cfg"], q["state"], q["node"]))
            if route == "library_nodes":
                v = s.version(q.get("version"))
                return self._json(200, {"version": v.id, "nodes": s.library_nodes(v.id)})
            if route == "analysis":
                return self._json(200, s.analysis(q.get("version")))
            if route == "recipe":
                text = s.recipe().encode()
                headers = {}
                if q.get("download"):
                    headers["Content-Disposition"] = f'attachment; filename="{s.model.name}_recipe.py"'
                return self._send(200, text, "text/x-python; charset=utf-8", headers)
            body = self._body()
            if route == "apply":
                return self._json(200, s.apply(body.get("version"), body.get("op")))
            if route == "preview":
                result = s.preview(body.get("version"), body.get("op"))
                return self._json(200, result)
            if route == "undo":
                with DACE_LOCK:
                    return self._json(200, s.undo())
            if route == "redo":
                with DACE_LOCK:
                    return self._json(200, s.redo())
            if route == "revert":
                if "version" not in body:
                    raise GuiError("say which version to revert to: {\"version\": ID}")
                with DACE_LOCK:
                    return self._json(200, s.revert(body["version"]))
            if route == "run":
                job = s.start_run(body.get("repeat", 20), body.get("per_node", False))
                return self._json(202, job.to_json())
            return self._error(404, f"no endpoint /api/{route}")  # pragma: no cover

    return Handler
