"""The GUI driven in headless Chromium: load a model, lower it, apply a fusion, undo, redo,
run (error and latency), see errors in the page, export the recipe and rebuild the same SDFG.

Set DACEML_GUI_SCREENSHOTS=docs/screenshots to keep the screenshots of the main views.
"""
import copy
import os
import subprocess
import sys
import types

import pytest

from daceml.gui import recipe as gui_recipe


def _node_screen_position(page, label):
    """Where the renderer drew the node ``label`` (page coordinates)."""
    return page.evaluate('''(label) => {
        let out = null;
        S.renderer.doForAllGraphElements((g, i, o) => {
            if (g !== 'nodes' || o.data.node.label !== label) return;
            const t = S.renderer.get_canvas_manager().get_user_transform();
            const c = S.renderer.get_canvas().getBoundingClientRect();
            const r = window.devicePixelRatio;
            out = {x: c.left + (t.a * o.x + t.c * o.y + t.e) / r, y: c.top + (t.b * o.x + t.d * o.y + t.f) / r};
        });
        return out;
    }''', label)


def _wait_version(page, vid, timeout=60000):
    page.wait_for_function(f"S.version === {vid} && S.busy === 0", timeout=timeout)


def _history_ids(server):
    s = server.session
    return s.history[:s.cursor + 1]


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    pg = context.new_page()
    problems = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # failed requests are expected (errors the page shows); script errors are not
    pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error"
          and not m.text.startswith("Failed to load resource") else None)
    pg.problems = problems
    pg.goto(server.url)
    pg.wait_for_selector('body[data-ready="1"]', timeout=60000)
    yield pg
    context.close()


def test_gui_end_to_end(page, server, tiny_onnx, screenshot_dir, tmp_path):
    # --- the imported model is drawn ---------------------------------------------------------------
    assert page.inner_text("#model-name") == "tiny.onnx"
    assert page.locator("#graph canvas").count() >= 1
    assert "version 0" in page.inner_text("#graph-info")
    pos = _node_screen_position(page, "matmul")
    page.mouse.click(pos["x"], pos["y"])
    page.wait_for_function("document.querySelector('#inspector').innerText.includes('ONNX MatMul')")
    inspector = page.inner_text("#inspector")
    assert "implementation" in inspector and "float32" in inspector and "FLOPs" in inspector
    page.screenshot(path=os.path.join(screenshot_dir, "gui_graph_inspector.png"))

    # --- lower to level 2 (stage tab), then run one pass -----------------------------------------------
    page.click('#stages button[data-level="2"]')
    _wait_version(page, 2)
    assert "operator" in page.inner_text("#graph-info")
    page.click('#tabs button[data-tab="xforms"]')
    page.click('#passes .item[data-pass="InlineAndSimplify"] .head')
    page.click('#passes .item[data-pass="InlineAndSimplify"] button[data-action="run-pass"]')
    _wait_version(page, 3)

    # --- apply a fusion from the transformations panel ------------------------------------------------
    page.fill("#xf-filter", "MapFusion")
    item = page.locator('#xforms .item[data-name="MapFusion"]').first
    item.locator(".head").click()  # opens it and highlights the match in the graph
    highlighted = page.evaluate("""() => { let n = 0; S.renderer.doForAllGraphElements((g, i, o) => {
        if (g === 'nodes' && o.highlighted) n++; }); return n; }""")
    assert highlighted == 3  # map exit, access node, map entry
    page.screenshot(path=os.path.join(screenshot_dir, "gui_transformations.png"))
    item.locator('button[data-action="preview"]').click()  # the graph it would make; nothing changes
    page.wait_for_selector("#preview-bar:not(.hidden)")
    assert "MapFusion" in page.inner_text("#preview-text")
    assert page.evaluate("""() => { let n = 0; S.renderer.doForAllGraphElements((g, i, o) => {
        if (g === 'nodes' && o.data.node.type === 'MapEntry') n++; }); return n; }""") == 1  # GEMM: a oneMKL call
    page.click("#preview-discard")
    page.wait_for_selector("#preview-bar.hidden", state="attached")
    assert _history_ids(server)[-1] == 3
    page.fill("#xf-filter", "MapFusion")
    item = page.locator('#xforms .item[data-name="MapFusion"]').first
    item.locator(".head").click()
    item.locator('button[data-action="apply"]').click()
    _wait_version(page, 4)
    assert "MapFusion" in page.inner_text("#history")
    assert server.session.current.label.startswith("MapFusion")
    fused_hash = server.session.current.hash

    # --- undo, redo ----------------------------------------------------------------------------------
    page.click("#btn-undo")
    _wait_version(page, 3)
    assert _history_ids(server)[-1] == 3 and not page.is_disabled("#btn-redo")
    page.click("#btn-redo")
    _wait_version(page, 4)
    assert _history_ids(server)[-1] == 4 and page.is_disabled("#btn-redo")

    # --- an invalid property value: a readable error, nothing lost --------------------------------------
    page.fill("#xf-filter", "MapTiling")
    tiling = page.locator('#xforms .item[data-name="MapTiling"]').first
    tiling.locator(".head").click()
    tiling.locator('input[data-prop="tile_sizes"]').fill("four, eight")
    tiling.locator('button[data-action="apply"]').click()
    page.wait_for_selector("#error:not(.hidden)")
    assert "tile_sizes: expected a list of integers" in page.inner_text("#error-text")
    assert _history_ids(server)[-1] == 4
    page.click("#error-close")

    # --- data-movement overlay ----------------------------------------------------------------------
    page.select_option("#overlay", "bytes")
    assert "green → red" in page.inner_text("#overlay-legend")
    page.click('#tabs button[data-tab="data"]')
    assert "Totals per stage" in page.inner_text("#tab-data")
    assert page.locator("#stage-totals tr").count() == 5  # header + imported, graph, operator, fusion
    assert "transients" in page.inner_text("#stage-totals tr >> nth=0")

    # --- run: error against onnxruntime and latency, before and after ------------------------------------
    page.click('#tabs button[data-tab="run"]')
    page.fill("#run-repeat", "5")
    page.check("#run-per-node")
    page.click("#btn-run")
    page.wait_for_selector("#run-table", timeout=300000)
    rows = page.locator("#run-table tr[data-version]")
    assert rows.count() == 2
    for i in range(2):
        err = float(rows.nth(i).locator(".error-cell").inner_text())
        assert err < 1e-4
        assert rows.nth(i).locator(".latency-cell").inner_text().endswith(" ms")
    assert "speedup" in page.inner_text("#speedup")
    page.wait_for_selector("#node-times")
    page.select_option("#overlay", "time")  # DaCe timer instrumentation, per node
    assert "ms" in page.inner_text("#overlay-legend") and "green" in page.inner_text("#overlay-legend")
    page.select_option("#overlay", "bytes")
    page.click("#btn-fit")
    page.wait_for_timeout(800)  # the renderer animates the zoom
    page.screenshot(path=os.path.join(screenshot_dir, "gui_run_overlay.png"))

    # --- export the recipe and rebuild the SDFG in Python ---------------------------------------------
    page.click("#btn-recipe")
    page.wait_for_selector("#recipe-text:not(.hidden)")
    text = page.inner_text("#recipe-text")
    assert "apply_transformation(sdfg," in text and "'MapFusion'" in text
    path = tmp_path / "tiny_recipe.py"
    path.write_text(text)
    out = subprocess.run([sys.executable, str(path), tiny_onnx], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == fused_hash
    # in this process (same hash seed as the server) DaCe's own hash agrees too
    from daceml.onnx import ONNXModel
    recipe = types.ModuleType("recipe")
    exec(compile(text, str(path), "exec"), recipe.__dict__)
    model = ONNXModel(tiny_onnx)
    sdfg = recipe.apply(copy.deepcopy(model.sdfg), model)
    assert sdfg.hash_sdfg() == server.session.versions[4].sdfg.hash_sdfg()
    assert gui_recipe.sdfg_hash(sdfg) == fused_hash

    # --- a model that fails to import: a message in the page, the session stays ------------------------
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx model")
    page.click("#btn-load")
    page.fill("#load-path", str(bad))
    page.click("#load-ok")
    page.wait_for_selector("#error:not(.hidden)")
    assert "could not open" in page.inner_text("#error-text")
    assert server.session.current.id == 4 and page.inner_text("#model-name") == "tiny.onnx"
    assert not page.problems, page.problems


def test_stage_tabs_and_revert(page, server):
    page.click('#stages button[data-level="3"]')
    _wait_version(page, 3)
    assert [server.session.versions[v].level for v in server.session.history] == [0, 1, 2, 3]
    page.click('#stages button[data-level="1"]')  # an earlier stage: revert to it
    _wait_version(page, 1)
    assert server.session.cursor == 1
    page.click('#tabs button[data-tab="history"]')
    page.locator('.history-entry[data-version="3"] button').click()
    _wait_version(page, 3)
    page.fill("#search", "sigmoid")
    assert "match" in page.inner_text("#search-count")
    assert not page.problems, page.problems
