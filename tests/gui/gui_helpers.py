"""Helpers of the GUI tests (a module of its own: every test folder has a conftest)."""
import http.client
import json


class Client:
    """Requests to a GuiServer; ``token=False`` leaves the token out."""

    def __init__(self, srv):
        self.srv = srv

    def request(self, method, path, body=None, token=True, headers=None, raw=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=120)
        hdrs = dict(headers or {})
        if token is True:
            hdrs.setdefault("X-Daceml-Token", self.srv.token)
        elif isinstance(token, str):
            hdrs["X-Daceml-Token"] = token
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        ctype = resp.getheader("Content-Type") or ""
        parsed = json.loads(payload) if ctype.startswith("application/json") and payload else None
        return resp.status, parsed, payload, resp

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body if body is not None else {}, **kw)
