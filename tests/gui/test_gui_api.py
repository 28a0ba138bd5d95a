"""The GUI server's API: every endpoint, the token, bad requests, errors that keep the session."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

from gui_helpers import Client


def _lower_to_fusion_candidate(client):
    """Level 2 (expanded) + InlineAndSimplify: the Relu and Sigmoid maps can be fused."""
    _, s, _, _ = client.get("/api/session")
    status, s, _, _ = client.post("/api/apply", {"version": s["current"]["id"], "op": {"kind": "level", "level": 2}})
    assert status == 200, s
    status, s, _, _ = client.post("/api/apply", {"version": s["current"]["id"],
                                                 "op": {"kind": "pass", "pass": "InlineAndSimplify"}})
    assert status == 200, s
    return s


def _match(client, name, version=None):
    q = "" if version is None else f"?version={version}"
    status, body, _, _ = client.get("/api/transformations" + q)
    assert status == 200, body
    found = [m for m in body["matches"] if m["name"] == name]
    assert found, f"no {name} in {[m['name'] for m in body['matches']]}"
    return found[0]


# --- security --------------------------------------------------------------------------------------


def test_bound_to_loopback_with_a_random_token(server):
    assert server.httpd.server_address[0] == "127.0.0.1"
    assert len(server.token) >= 24
    assert server.url == f"http://127.0.0.1:{server.port}/?token={server.token}"


@pytest.mark.parametrize("path", ["/", "/api/session", "/api/graph", "/static/app.js", "/sdfv/sdfv.js",
                                  "/api/recipe", "/api/jobs/x"])
def test_requests_without_the_token_are_refused(client, path):
    status, body, _, _ = client.get(path, token=False)
    assert status == 403
    assert "token" in body["error"]
    status, _, _, _ = client.get(path, token="wrong-" + client.srv.token)
    assert status == 403


def test_posts_without_the_token_are_refused(client):
    for path in ("/api/apply", "/api/undo", "/api/run", "/api/load"):
        status, body, _, _ = client.post(path, {}, token=False)
        assert status == 403, path
    # nothing happened
    _, s, _, _ = client.get("/api/session")
    assert s["cursor"] == 0 and len(s["history"]) == 1


def test_token_in_query_header_and_cookie(client):
    srv = client.srv
    status, _, page, resp = client.get(f"/?token={srv.token}", token=False)
    assert status == 200
    assert srv.token in page.decode()  # the page gets the token for its API calls
    cookie = resp.getheader("Set-Cookie")
    assert cookie.startswith(f"daceml_gui_token={srv.token}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # static files accept the cookie (the renderer loads its chunks without the token) ...
    status, _, _, _ = client.get("/static/app.css", token=False, headers={"Cookie": f"daceml_gui_token={srv.token}"})
    assert status == 200
    # ... the API does not: it needs the header or the query parameter
    status, _, _, _ = client.get("/api/session", token=False, headers={"Cookie": f"daceml_gui_token={srv.token}"})
    assert status == 403
    status, _, _, _ = client.get(f"/api/session?token={srv.token}", token=False)
    assert status == 200


def test_foreign_host_header_is_refused(client):
    status, body, _, _ = client.get("/api/session", headers={"Host": "evil.example:80"})
    assert status == 403 and "127.0.0.1" in body["error"]
    status, _, _, _ = client.get("/api/session", headers={"Host": f"localhost:{client.srv.port}"})
    assert status == 200


# --- pages and assets ------------------------------------------------------------------------------


def test_index_static_and_renderer_assets(client):
    status, _, page, resp = client.get("/")
    assert status == 200 and resp.getheader("Content-Type").startswith("text/html")
    html = page.decode()
    assert "/sdfv/sdfv.js" in html and "/static/app.js" in html and "{{TOKEN}}" not in html
    status, _, js, resp = client.get("/static/app.js")
    assert status == 200 and "javascript" in resp.getheader("Content-Type") and b"SDFGRenderer" in js
    status, _, sdfv, resp = client.get("/sdfv/sdfv.js")
    assert status == 200 and "charset=utf-8" in resp.getheader("Content-Type")
    assert b"window.SDFGRenderer" in sdfv


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/%2e%2e/server.py", "/sdfv/../../__init__.py",
                                  "/static/nope.js", "/nope"])
def test_no_files_outside_the_asset_folders(client, path):
    status, body, _, _ = client.get(path)
    assert status == 404, body


# --- session, graph ----------------------------------------------------------------------------------


def test_session(client):
    status, s, _, _ = client.get("/api/session")
    assert status == 200
    assert s["model"]["name"] == "tiny"
    assert s["model"]["inputs"] == [{"name": "x", "shape": [4, 8], "dtype": "float32"}]
    assert s["model"]["reference"] == "onnxruntime"
    assert s["current"]["id"] == 0 and s["current"]["stage"] == "imported"
    assert [st["name"] for st in s["stages"]] == ["imported", "graph", "operator", "fusion", "data movement"]
    assert {p["name"] for p in s["passes"]} >= {"ExpandLibraryNodes", "InlineAndSimplify", "FuseMaps"}
    assert s["can_undo"] is False and s["can_redo"] is False


def test_graph(client):
    status, sdfg, _, resp = client.get("/api/graph")
    assert status == 200 and sdfg["type"] == "SDFG" and resp.getheader("X-Daceml-Version") == "0"
    labels = {n["label"] for st in sdfg["nodes"] for n in st["nodes"]}
    assert {"relu", "sigmoid", "matmul", "add"} <= labels
    status, body, _, _ = client.get("/api/graph?version=abc")
    assert status == 400 and "integer" in body["error"]
    status, body, _, _ = client.get("/api/graph?version=99")
    assert status == 404 and "no version 99" in body["error"]


def test_sdfg_download(client):
    status, sdfg, _, resp = client.get("/api/sdfg?version=0")
    assert status == 200 and sdfg["type"] == "SDFG"
    assert 'filename="tiny_v0.sdfg"' in resp.getheader("Content-Disposition")


# --- operations ------------------------------------------------------------------------------------


def test_levels_make_one_version_per_stage(client):
    s = _lower_to_fusion_candidate(client)
    assert [h["stage"] for h in s["history"]] == ["imported", "graph", "operator", "fusion"]
    assert s["current"]["label"] == "pass InlineAndSimplify"
    status, body, _, _ = client.post("/api/apply", {"version": s["current"]["id"], "op": {"kind": "level", "level": 1}})
    assert status == 422 and "already at level" in body["error"]
    status, body, _, _ = client.post("/api/apply", {"version": s["current"]["id"], "op": {"kind": "level", "level": 7}})
    assert status == 400 and "1..4" in body["error"]


def test_transformations_list_apply_undo_redo_revert(client):
    s = _lower_to_fusion_candidate(client)
    cur = s["current"]["id"]
    m = _match(client, "MapFusion")
    assert m["cfg_id"] == 0 and m["state_id"] == 0 and len(m["nodes"]) == 3
    assert "map" in m["doc"].lower() and "relu" in m["where"]
    tiling = _match(client, "MapTiling")
    props = {p["name"]: p for p in tiling["properties"]}
    assert props["tile_sizes"]["kind"] == "list" and props["divides_evenly"]["kind"] == "bool"
    status, s2, _, _ = client.post("/api/apply", {"version": cur,
                                                  "op": {"kind": "transformation", "match": m["index"]}})
    assert status == 200, s2
    fused = s2["current"]["id"]
    assert fused == cur + 1 and s2["current"]["label"].startswith("MapFusion")
    _, sdfg, _, _ = client.get("/api/graph")
    assert sum(1 for st in sdfg["nodes"] for n in st["nodes"] if n["type"] == "MapEntry") == 1  # fused map; GEMM: MKL
    # stale version: the page must reload first
    status, body, _, _ = client.post("/api/apply", {"version": cur, "op": {"kind": "transformation", "match": 0}})
    assert status == 409 and "changed" in body["error"]
    status, s3, _, _ = client.post("/api/undo")
    assert status == 200 and s3["current"]["id"] == cur and s3["can_redo"]
    status, s4, _, _ = client.post("/api/redo")
    assert status == 200 and s4["current"]["id"] == fused
    status, body, _, _ = client.post("/api/redo")
    assert status == 409 and "nothing to redo" in body["error"]
    status, s5, _, _ = client.post("/api/revert", {"version": 0})
    assert status == 200 and s5["current"]["id"] == 0 and s5["cursor"] == 0
    status, body, _, _ = client.post("/api/undo")
    assert status == 409 and "nothing to undo" in body["error"]
    # an operation after revert cuts the later versions off the history; they stay readable by id
    status, s6, _, _ = client.post("/api/apply", {"version": 0, "op": {"kind": "expand_all"}})
    assert status == 200 and [h["id"] for h in s6["history"]] == [0, fused + 1]
    status, body, _, _ = client.post("/api/revert", {"version": fused})
    assert status == 409 and "not in the history" in body["error"]
    assert client.get(f"/api/graph?version={fused}")[0] == 200
    status, body, _, _ = client.post("/api/revert", {})
    assert status == 400


def test_transformation_properties_and_errors_keep_the_session(client):
    s = _lower_to_fusion_candidate(client)
    cur = s["current"]["id"]
    n_history = len(s["history"])
    strip = _match(client, "StripMining")
    tiling = _match(client, "MapTiling")

    def apply(op):
        return client.post("/api/apply", {"version": cur, "op": op})

    status, body, _, _ = apply({"kind": "transformation", "match": tiling["index"],
                                "properties": {"tile_sizes": "a, b"}})
    assert status == 422 and "list of integers" in body["error"]
    status, body, _, _ = apply({"kind": "transformation", "match": tiling["index"], "properties": {"nope": 1}})
    assert status == 400 and "no property 'nope'" in body["error"] and "tile_sizes" in body["error"]
    vec = _match(client, "Vectorization")
    status, body, _, _ = apply({"kind": "transformation", "match": vec["index"], "properties": {"vector_len": "x"}})
    assert status == 422 and "Vectorization.vector_len: expected an integer" in body["error"]
    # a transformation that fails while applying: readable, and nothing changes
    status, body, _, _ = apply({"kind": "transformation", "match": strip["index"], "properties": {"dim_idx": 5}})
    assert status == 422 and "StripMining failed while applying" in body["error"]
    status, body, _, _ = apply({"kind": "transformation", "match": 9999})
    assert status == 400 and "no transformation match 9999" in body["error"]
    status, body, _, _ = apply({"kind": "frobnicate"})
    assert status == 400 and "unknown operation kind" in body["error"]
    status, body, _, _ = client.post("/api/apply", {"version": cur})
    assert status == 400 and "'op'" in body["error"]
    status, body, _, _ = client.post("/api/apply", {"op": {"kind": "expand_all"}})
    assert status == 400 and "version" in body["error"]
    status, body, _, _ = apply({"kind": "pass", "pass": "NoSuchPass"})
    assert status == 400 and "unknown pass" in body["error"]
    # properties that work
    status, s2, _, _ = apply({"kind": "transformation", "match": tiling["index"],
                              "properties": {"tile_sizes": "2, 4", "divides_evenly": True}})
    assert status == 200, s2
    _, graph, _, _ = client.get("/api/graph")
    ranges = [n["attributes"].get("range") for st in graph["nodes"] for n in st["nodes"] if n["type"] == "MapEntry"]
    assert any("2" in json.dumps(r) for r in ranges)
    client.post("/api/undo")
    _, after, _, _ = client.get("/api/session")
    assert len(after["history"]) == n_history + 1 and after["current"]["id"] == cur


def test_bad_request_bodies(client):
    json_header = {"Content-Type": "application/json"}
    status, body, _, _ = client.request("POST", "/api/apply", raw=b"{not json", headers=json_header)
    assert status == 400 and "not valid JSON" in body["error"]
    status, body, _, _ = client.request("POST", "/api/apply", raw=b"[1, 2]", headers=json_header)
    assert status == 400 and "JSON object" in body["error"]
    status, body, _, _ = client.request("POST", "/api/apply", raw=b"x" * (2 << 20))
    assert status == 413
    status, body, _, _ = client.get("/api/apply")
    assert status == 405 and "POST" in body["error"]
    status, body, _, _ = client.post("/api/session")
    assert status == 405 and "GET" in body["error"]
    status, body, _, _ = client.get("/api/nope")
    assert status == 404 and "endpoints" in body["error"]
    status, body, _, _ = client.request("PUT", "/api/apply", body={})
    assert status == 405


def test_preview_changes_nothing(client):
    s = _lower_to_fusion_candidate(client)
    m = _match(client, "MapFusion")
    status, body, _, _ = client.post("/api/preview", {"version": s["current"]["id"],
                                                      "op": {"kind": "transformation", "match": m["index"]}})
    assert status == 200 and body["sdfg"]["type"] == "SDFG" and body["label"].startswith("MapFusion")
    assert sum(1 for st in body["sdfg"]["nodes"] for n in st["nodes"] if n["type"] == "MapEntry") == 1  # fused map; GEMM: MKL
    _, after, _, _ = client.get("/api/session")
    assert after["current"]["id"] == s["current"]["id"] and len(after["history"]) == len(s["history"])
    status, body, _, _ = client.post("/api/preview", {"version": 0, "op": {"kind": "transformation", "match": -1}})
    assert status == 400


# --- inspector, library nodes ----------------------------------------------------------------------


def _node_id(client, label, version=0):
    _, sdfg, _, _ = client.get(f"/api/graph?version={version}")
    for st_id, st in enumerate(sdfg["nodes"]):
        for n in st["nodes"]:
            if n["label"] == label:
                return sdfg["cfg_list_id"], st_id, n["id"]
    raise AssertionError(f"no node {label}")


def test_node_inspector(client):
    cfg, st, nid = _node_id(client, "matmul")
    status, info, _, _ = client.get(f"/api/node?version=0&cfg={cfg}&state={st}&node={nid}")
    assert status == 200
    assert info["type"].startswith("ONNXMatMul") and info["onnx"]["op"] == "MatMul"
    impls = {i["name"]: i for i in info["onnx"]["implementations"]}
    assert impls["pure"]["applies"] and info["onnx"]["selected"]
    assert [e["array"]["shape"] for e in info["inputs"]] and info["outputs"][0]["array"]["dtype"] == "float32"
    assert info["analysis"]["flops"] == 2 * 4 * 3 * 8
    cfg, st, nid = _node_id(client, "x")
    status, info, _, _ = client.get(f"/api/node?cfg={cfg}&state={st}&node={nid}")
    assert status == 200 and info["array"]["shape"] == ["4", "8"] and info["array"]["storage"] == "Default"
    status, body, _, _ = client.get("/api/node?cfg=0&state=0")
    assert status == 400 and "node" in body["error"]
    status, body, _, _ = client.get("/api/node?cfg=0&state=0&node=999")
    assert status == 404 and "no node 999" in body["error"]
    status, body, _, _ = client.get("/api/node?cfg=0&state=0&node=x")
    assert status == 400


def test_library_nodes_implementations_and_expansion(client):
    status, body, _, _ = client.get("/api/library_nodes")
    assert status == 200
    nodes = {n["label"]: n for n in body["nodes"]}
    assert set(nodes) == {"relu", "sigmoid", "matmul", "add"}
    mm = nodes["matmul"]
    assert {i["name"] for i in mm["implementations"]} >= {"pure"}
    ref = {"cfg": mm["cfg"], "state": mm["state"], "node": mm["node"]}
    status, body, _, _ = client.post("/api/apply", {"version": 0, "op": {"kind": "implementation", "node": ref,
                                                                         "implementation": "nonexistent"}})
    assert status == 422 and "no implementation 'nonexistent'" in body["error"]
    status, s, _, _ = client.post("/api/apply", {"version": 0, "op": {"kind": "implementation", "node": ref,
                                                                      "implementation": "pure"}})
    assert status == 200 and "implementation of 'matmul': pure" in s["current"]["label"]
    _, body, _, _ = client.get("/api/library_nodes")
    assert {n["label"]: n for n in body["nodes"]}["matmul"]["implementation"] == "pure"
    # a node that is not a library node
    cfg, st, nid = _node_id(client, "x", s["current"]["id"])
    status, body, _, _ = client.post("/api/apply", {"version": s["current"]["id"], "op": {
        "kind": "implementation", "node": {"cfg": cfg, "state": st, "node": nid}, "implementation": "pure"}})
    assert status == 422 and "not an ONNX library node" in body["error"]
    status, body, _, _ = client.post("/api/apply", {"version": s["current"]["id"], "op": {"kind": "expand"}})
    assert status == 400 and "'node'" in body["error"]
    # expand one node
    status, s2, _, _ = client.post("/api/apply", {"version": s["current"]["id"], "op": {"kind": "expand", "node": ref}})
    assert status == 200 and s2["current"]["label"] == "expand 'matmul'"
    _, body, _, _ = client.get("/api/library_nodes")
    assert {n["label"] for n in body["nodes"]} == {"relu", "sigmoid", "add"}


def test_analysis(client):
    _lower_to_fusion_candidate(client)
    status, a, _, _ = client.get("/api/analysis")
    assert status == 200
    assert a["total"]["bytes"] > 0 and a["total"]["flops"] > 0
    assert [s["stage"] for s in a["stages"]] == ["imported", "graph", "operator", "fusion"]
    assert all(k.count("/") == 2 for k in a["nodes"]) and all("/e" in k for k in a["edges"])
    status, a0, _, _ = client.get("/api/analysis?version=0")
    assert status == 200 and a0["version"] == 0
    # imported: relu 32 + sigmoid 32x4 + matmul 2*4*3*8 + add 12 flops
    assert a0["total"]["flops"] == 32 + 4 * 32 + 2 * 4 * 3 * 8 + 12
    assert client.get("/api/analysis?version=77")[0] == 404


def test_recipe_endpoint(client):
    _lower_to_fusion_candidate(client)
    status, _, text, resp = client.get("/api/recipe")
    assert status == 200 and resp.getheader("Content-Type").startswith("text/x-python")
    src = text.decode()
    compile(src, "recipe.py", "exec")
    assert "def apply(sdfg, model=None):" in src and "def attach(dace_module" in src
    assert src.count("    # step ") == 3 and "run_pass(sdfg, {'pass': 'InlineAndSimplify'}, model)" in src
    _, s, _, _ = client.get("/api/session")
    status, _, _, resp = client.get("/api/recipe?download=1")
    assert 'filename="tiny_recipe.py"' in resp.getheader("Content-Disposition")


# --- run -------------------------------------------------------------------------------------------


def _wait(client, job_id, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        status, j, _, _ = client.get(f"/api/jobs/{job_id}")
        assert status == 200
        if j["state"] != "running":
            return j
        time.sleep(0.2)
    raise AssertionError("the run did not finish")


def test_run_job(client):
    status, body, _, _ = client.post("/api/run", {"repeat": 0})
    assert status == 400 and "1..10000" in body["error"]
    status, body, _, _ = client.post("/api/run", {"repeat": "many"})
    assert status == 400
    status, job, _, _ = client.post("/api/run", {"repeat": 3})
    assert status == 202 and job["state"] == "running"
    status, body, _, _ = client.post("/api/run", {"repeat": 3})
    assert status == 409 and "already in progress" in body["error"]
    j = _wait(client, job["id"])
    assert j["state"] == "done", j
    (row, ) = j["result"]["rows"]  # current == imported: one row
    assert row["version"] == 0 and row["max_abs_error"] < 1e-5 and row["median_ms"] > 0
    assert j["progress"] == 1.0 and any("compiling" in line for line in j["log"])
    _, s, _, _ = client.get("/api/session")
    assert s["measured"]["0"]["median_ms"] == row["median_ms"]
    status, body, _, _ = client.get("/api/jobs/nope")
    assert status == 404
    status, body, _, _ = client.post("/api/jobs/nope")
    assert status == 405


# --- loading models --------------------------------------------------------------------------------


def test_load_errors_keep_the_session(client, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not onnx")
    status, body, _, _ = client.post("/api/load", {"path": str(bad)})
    assert status == 422 and "could not open" in body["error"] and "broken.onnx" in body["error"]
    status, body, _, _ = client.post("/api/load", {"path": str(tmp_path / "missing.onnx")})
    assert status == 422 and "does not exist" in body["error"]
    status, body, _, _ = client.post("/api/load", {"path": str(tmp_path / "net.py")})
    assert status == 422 and "ModuleClass" in body["error"]
    status, body, _, _ = client.post("/api/load", {})
    assert status == 400
    status, body, _, _ = client.post("/api/load", {"path": "x.onnx", "dims": {"N": -1}})
    assert status == 400
    _, s, _, _ = client.get("/api/session")
    assert s["model"]["name"] == "tiny"


def test_load_onnx_and_torch(client, tiny_onnx, torch_spec):
    status, s, _, _ = client.post("/api/load", {"path": tiny_onnx})
    assert status == 200 and s["model"]["name"] == "tiny"
    status, s, _, _ = client.post("/api/load", {"path": torch_spec})
    assert status == 200, s
    assert s["model"]["name"] == "TinyNet" and s["model"]["reference"] == "eager PyTorch"
    assert s["model"]["inputs"][0]["shape"] == [2, 8]


def test_no_model_open(tiny_onnx):
    from daceml.gui.server import GuiServer
    srv = GuiServer(None, load_error="could not open bad.onnx: not an ONNX file").start()
    try:
        c = Client(srv)
        status, s, _, _ = c.get("/api/session")
        assert status == 200 and s["session"] is None and "not an ONNX file" in s["load_error"]
        status, body, _, _ = c.get("/api/graph")
        assert status == 409 and "no model is open" in body["error"]
        status, s, _, _ = c.post("/api/load", {"path": tiny_onnx})
        assert status == 200 and s["model"]["name"] == "tiny"
    finally:
        srv.shutdown()


# --- the command ----------------------------------------------------------------------------------


def _start_cli(args, env):
    proc = subprocess.Popen([sys.executable, "-m", "daceml.cli", "gui", *args, "--no-browser"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines = []
    t0 = time.time()
    while time.time() - t0 < 120:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/\?token=(\S+)", line)
        if m:
            return proc, int(m.group(1)), m.group(2), lines
    proc.kill()
    raise AssertionError("daceml gui printed no URL:\n" + "".join(lines))


def test_cli_gui(tiny_onnx, tmp_path):
    import http.client
    env = dict(os.environ)
    for model, expect_error in ((tiny_onnx, False), (str(tmp_path / "missing.onnx"), True)):
        proc, port, token, lines = _start_cli([model], env)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("GET", "/api/session", headers={"X-Daceml-Token": token})
            s = json.loads(conn.getresponse().read())
            conn.request("GET", "/api/session")
            assert conn.getresponse().status == 403
            if expect_error:
                assert s["session"] is None and "does not exist" in s["load_error"]
                assert any("could not open" in line for line in lines)
            else:
                assert s["model"]["name"] == "tiny"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_serve_from_python(tiny_onnx):
    import onnx
    import torch
    import daceml.gui
    srv = daceml.gui.serve(onnx.load(tiny_onnx), open_browser=False, block=False)
    try:
        status, s, _, _ = Client(srv).get("/api/session")
        assert status == 200 and s["model"]["name"] == "tiny" and s["model"]["reference"] == "onnxruntime"
    finally:
        srv.shutdown()
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    srv = daceml.gui.serve(module, (torch.randn(2, 4), ), open_browser=False, block=False)
    try:
        status, s, _, _ = Client(srv).get("/api/session")
        assert status == 200 and s["model"]["name"] == "Sequential" and s["model"]["reference"] == "eager PyTorch"
    finally:
        srv.shutdown()
    with pytest.raises(Exception, match="needs example inputs"):
        daceml.gui.serve(module, open_browser=False, block=False)
