// daceml GUI front end: plain JavaScript over the server's JSON API.
// The server keeps the session (versions, history); this page only sends operations.
"use strict";

const TOKEN = document.querySelector('meta[name="daceml-token"]').content;
const $ = (id) => document.getElementById(id);
const S = {
  session: null,        // /api/session
  version: null,        // id of the version drawn
  renderer: null,
  matches: [],
  selection: [],        // [{cfg, state, node}]
  analysis: null,
  previewOp: null,
  nodeTimes: null,      // {version, values: {"cfg/state/node": ms}} from the last run with per-node times
  openMatch: null,
  busy: 0,
};

// --- plumbing ---------------------------------------------------------------------------------

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "html") e.innerHTML = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(method, path, body) {
  const opts = {method, headers: {"X-Daceml-Token": TOKEN}};
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch("/api/" + path, opts);
  } catch (e) {
    throw new Error("the daceml server does not answer (was it stopped?): " + e.message);
  }
  const text = await resp.text();
  if (!resp.ok) {
    let msg = text;
    try { msg = JSON.parse(text).error || text; } catch (e) { /* not JSON */ }
    const err = new Error(msg);
    err.status = resp.status;
    throw err;
  }
  const ctype = resp.headers.get("Content-Type") || "";
  return ctype.startsWith("application/json") ? {json: JSON.parse(text), text, headers: resp.headers}
                                               : {json: null, text, headers: resp.headers};
}

function showError(err) {
  const msg = err instanceof Error ? err.message : String(err);
  $("error-text").textContent = msg;
  $("error").classList.remove("hidden");
  console.warn("daceml GUI error:", msg);
}
function clearError() { $("error").classList.add("hidden"); $("error-text").textContent = ""; }

// Runs ``fn`` with the busy indicator (shown after 250 ms) and errors shown in the page.
async function work(label, fn) {
  S.busy += 1;
  const timer = setTimeout(() => { $("busy-text").textContent = label + "…"; $("busy").classList.remove("hidden"); }, 250);
  try {
    return await fn();
  } catch (e) {
    showError(e);
    return undefined;
  } finally {
    clearTimeout(timer);
    S.busy -= 1;
    if (S.busy === 0) $("busy").classList.add("hidden");
  }
}

function fmtNum(x, unit = "") {
  if (x === null || x === undefined || Number.isNaN(x)) return "–";
  const a = Math.abs(x);
  const sfx = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
  for (const [v, s] of sfx) if (a >= v) return (x / v).toFixed(a / v >= 100 ? 0 : 2) + " " + s + unit;
  return (Number.isInteger(x) ? x : x.toFixed(3)) + (unit ? " " + unit : "");
}
function fmtErr(x) { return x === null || x === undefined ? "–" : (x === Infinity || x === "Infinity") ? "∞" : Number(x).toExponential(2); }

// --- session, stages, history -----------------------------------------------------------------

async function refreshSession(state) {
  if (!state) state = (await api("GET", "session")).json;
  if (!state.session) {
    S.session = null;
    $("model-name").textContent = "no model open";
    if (state.load_error) showError(state.load_error);
    return;
  }
  S.session = state;
  $("model-name").textContent = state.model.description;
  $("model-name").title = `${state.model.name}: inputs ${state.model.inputs.map((i) => `${i.name}${JSON.stringify(i.shape)} ${i.dtype}`).join(", ")}; reference: ${state.model.reference}`;
  $("btn-undo").disabled = !state.can_undo;
  $("btn-redo").disabled = !state.can_redo;
  renderStages();
  renderHistory();
  renderPasses();
  if (S.version !== state.current.id) await showVersion(state.current.id);
}

function renderStages() {
  const nav = $("stages");
  nav.innerHTML = "";
  const cur = S.session.current.level;
  for (const st of S.session.stages) {
    const b = el("button", {"data-level": st.level, title: st.version !== null
      ? `show version ${st.version} (${st.name}); reverts the history to it`
      : `lower the graph to level ${st.level} (${st.name})`}, el("span", {class: "lv"}, st.level), st.name);
    if (st.version !== null) b.classList.add("reached");
    if (st.level === cur) b.classList.add("current");
    b.addEventListener("click", () => stageClicked(st));
    nav.append(b);
  }
}

async function stageClicked(st) {
  clearError();
  if (st.level === S.session.current.level) return;
  if (st.version !== null && st.level < S.session.current.level) {
    await work(`reverting to ${st.name}`, async () => refreshSession((await api("POST", "revert", {version: st.version})).json));
  } else if (st.level > S.session.current.level) {
    await applyOp({kind: "level", level: st.level}, `lowering to level ${st.level} (${st.name})`);
  } else if (st.version !== null) {
    await work(`reverting to ${st.name}`, async () => refreshSession((await api("POST", "revert", {version: st.version})).json));
  }
}

function renderHistory() {
  const box = $("history");
  box.innerHTML = "";
  for (const h of S.session.history) {
    const row = el("div", {class: "history-entry" + (h.index === S.session.cursor ? " current" : "") + (h.active ? "" : " inactive"),
                           "data-version": h.id},
      el("span", {class: "vid"}, "v" + h.id),
      el("span", {class: "badge lv"}, h.stage),
      el("span", {class: "label", title: h.label}, h.label),
      h.index === S.session.cursor ? el("span", {class: "badge"}, "current")
        : el("button", {class: "small", onclick: () => work("reverting", async () =>
            refreshSession((await api("POST", "revert", {version: h.id})).json))}, "Revert here"));
    box.append(row);
  }
}

async function applyOp(op, label) {
  clearError();
  return work(label || "applying", async () => {
    const state = (await api("POST", "apply", {version: S.session.current.id, op})).json;
    await refreshSession(state);
    return state;
  });
}

// --- graph ----------------------------------------------------------------------------------

function makeRenderer(sdfgText) {
  const container = $("graph");
  if (S.renderer) { try { S.renderer.destroy(); } catch (e) { /* old renderer */ } }
  container.innerHTML = "";
  const sdfg = checkCompatLoad(parse_sdfg(sdfgText));
  S.renderer = new SDFGRenderer(sdfg, container, undefined, mouseHandler, null, false, null, null);
  applyOverlay();
}

async function showVersion(vid) {
  const r = await api("GET", "graph?version=" + vid);
  S.version = vid;
  S.selection = [];
  S.previewOp = null;
  $("preview-bar").classList.add("hidden");
  makeRenderer(r.text);
  const v = S.session.history.find((h) => h.id === vid);
  $("graph-info").textContent = v ? `version ${vid} · ${v.stage}` : `version ${vid}`;
  S.analysis = null;
  await Promise.all([loadTransformations(), loadLibraryNodes(), loadAnalysis()]);
  $("inspector").innerHTML = '<span class="muted">Click a node in the graph to inspect it.</span>';
  $("recipe-text").classList.add("hidden");
}

function elementRef(info) {
  return {cfg: info.cfgId, state: info.stateId, node: info.id};
}

function forNodes(fn) {
  if (!S.renderer) return;
  S.renderer.doForAllGraphElements((group, info, obj) => fn(group, info, obj));
}

function clearHighlights() {
  forNodes((g, i, obj) => { obj.highlighted = false; });
}

function highlightMatch(m, zoom) {
  if (!S.renderer) return;
  const objs = [];
  forNodes((group, info, obj) => {
    let hit = false;
    if (m.state_id >= 0) hit = group === "nodes" && info.cfgId === m.cfg_id && info.stateId === m.state_id && m.nodes.includes(info.id);
    else hit = group === "states" && info.cfgId === m.cfg_id && m.nodes.includes(info.id);
    obj.highlighted = hit;
    if (hit) objs.push(obj);
  });
  if (zoom && objs.length) S.renderer.zoom_to_view(objs);
  else S.renderer.draw_async();
}

function mouseHandler(evtype, event, mousepos, elements, renderer, selected, sdfv, endsPan) {
  if (evtype !== "click" || S.previewOp) return false;
  const refs = [];
  for (const e of selected || []) {
    if (e && e.data && e.data.node !== undefined) {
      const cfg = (e.cfg && e.cfg.cfg_list_id !== undefined) ? e.cfg.cfg_list_id : e.sdfg.cfg_list_id;
      refs.push({cfg, state: e.parent_id, node: e.id, label: e.data.node.label});
    }
  }
  S.selection = refs;
  if (refs.length === 1) inspect(refs[0]);
  if ($("xf-selection").checked) renderTransformations();
  return false;
}

function search(text) {
  const q = text.trim().toLowerCase();
  const hits = [];
  forNodes((group, info, obj) => {
    if (group !== "nodes") return;
    const label = (obj.data && obj.data.node && obj.data.node.label || "").toLowerCase();
    const hit = q !== "" && label.includes(q);
    obj.highlighted = hit;
    if (hit) hits.push(obj);
  });
  $("search-count").textContent = q ? `${hits.length} match${hits.length === 1 ? "" : "es"}` : "";
  if (hits.length) S.renderer.zoom_to_view(hits);
  else if (S.renderer) S.renderer.draw_async();
}

// --- overlay: bytes / FLOPs / intensity ----------------------------------------------------------

let HeatOverlay = null;
function heatOverlayClass() {
  if (HeatOverlay) return HeatOverlay;
  HeatOverlay = class extends GenericSdfgOverlay {
    static type = 2;  // nodes and edges
    constructor(renderer, metric, values, edgeValues) {
      super(renderer);
      this.olClass = HeatOverlay;
      this.metric = metric;
      this.values = values;
      this.edgeValues = edgeValues;
      const all = Object.values(values).filter((x) => x !== null && x > 0);
      this.max = all.length ? Math.max(...all) : 1;
      const eall = Object.values(edgeValues).filter((x) => x !== null && x > 0);
      this.emax = eall.length ? Math.max(...eall) : 1;
    }
    refresh() { this.renderer.draw_async(); }
    color(f) { return `hsl(${Math.round((1 - Math.min(1, Math.max(0, f))) * 120)}, 85%, 50%)`; }
    key(e) {
      const cfg = (e.cfg && e.cfg.cfg_list_id !== undefined) ? e.cfg.cfg_list_id : e.sdfg.cfg_list_id;
      return `${cfg}/${e.parent_id}/${e.id}`;
    }
    shadeNode(node, ctx) {
      const v = this.values[this.key(node)];
      if (v === undefined || v === null) return;
      node.shade(this.renderer, ctx, this.color(v / this.max), 0.55);
      const mp = this.renderer.get_mousepos();
      if (mp && node.intersect(mp.x, mp.y)) {
        this.renderer.set_tooltip(() => {
          const c = this.renderer.get_tooltip_container();
          if (c) c.innerText = `${this.metric}: ${fmtNum(v)}`;
        });
      }
    }
    shadeEdge(edge, ctx) {
      if (this.metric !== "bytes") return;
      const v = this.edgeValues[this.key(edge).replace(/\/(\d+)$/, "/e$1")];
      if (!v) return;
      edge.shade(this.renderer, ctx, this.color(v / this.emax), 0.8);
    }
    draw() { this.shadeSDFG(); }
    on_mouse_event() { return false; }
  };
  return HeatOverlay;
}

function applyOverlay() {
  const metric = $("overlay").value;
  const r = S.renderer;
  if (!r) return;
  const cls = heatOverlayClass();
  r.overlayManager.deregister_overlay(cls);
  $("overlay-legend").textContent = "";
  if (!metric || !S.analysis) { r.draw_async(); return; }
  let values = {};
  const edges = {};
  if (metric === "time") {
    if (!S.nodeTimes || S.nodeTimes.version !== S.version) {
      $("overlay-legend").textContent = "run with “per-node times” on this version first";
      r.draw_async();
      return;
    }
    values = S.nodeTimes.values;
  } else {
    for (const [k, v] of Object.entries(S.analysis.nodes)) values[k] = v[metric];
    for (const [k, v] of Object.entries(S.analysis.edges)) edges[k] = v.bytes;
  }
  const ov = new cls(r, metric, values, edges);
  r.overlayManager.register_overlay_instance(ov);
  const unit = {bytes: "B", flops: "FLOP", intensity: " FLOP/B", time: " ms"}[metric];
  $("overlay-legend").textContent = `green → red: 0 → ${fmtNum(ov.max)}${unit}`;
}

// --- transformations ----------------------------------------------------------------------------

async function loadTransformations() {
  const vid = S.version;
  const r = await api("GET", "transformations?version=" + vid);
  if (vid !== S.version) return;
  S.matches = r.json.matches;
  renderTransformations();
}

function propsForm(props) {
  const grid = el("div", {class: "props"});
  for (const p of props) {
    let input;
    if (p.kind === "bool") {
      input = el("input", {type: "checkbox", "data-prop": p.name});
      input.checked = !!p.value;
    } else if (p.kind === "choice") {
      input = el("select", {"data-prop": p.name}, p.choices.map((c) => el("option", {value: c}, c)));
      if (p.value !== null) input.value = p.value;
    } else {
      let v = p.value;
      if (Array.isArray(v)) v = v.join(", ");
      input = el("input", {type: "text", "data-prop": p.name, value: v === null || v === undefined ? "" : String(v),
                           placeholder: p.allow_none ? "(none)" : ""});
    }
    input.dataset.initial = input.type === "checkbox" ? String(input.checked) : input.value;
    grid.append(el("label", {title: p.desc}, p.name), input);
    if (p.desc) grid.append(el("div", {class: "desc"}, p.desc));
  }
  return grid;
}

function readProps(form) {
  const out = {};
  for (const input of form.querySelectorAll("[data-prop]")) {
    const now = input.type === "checkbox" ? String(input.checked) : input.value;
    if (now === input.dataset.initial) continue;  // only what the user changed
    out[input.dataset.prop] = input.type === "checkbox" ? input.checked : input.value;
  }
  return out;
}

function renderPasses() {
  const box = $("passes");
  box.innerHTML = "";
  for (const p of S.session.passes) {
    const form = propsForm(p.properties);
    const item = el("div", {class: "item", "data-pass": p.name},
      el("div", {class: "head", onclick: () => item.classList.toggle("open")},
        el("span", {class: "badge lv"}, "L" + p.level), el("span", {class: "name"}, p.name),
        el("span", {class: "where"}, p.doc)),
      el("div", {class: "body"}, el("p", {class: "doc"}, p.doc), p.properties.length ? form : null,
        el("div", {class: "row"}, el("button", {class: "primary", "data-action": "run-pass",
          onclick: () => applyOp({kind: "pass", pass: p.name, properties: readProps(form)}, `running ${p.name}`)}, "Run pass"))));
    box.append(item);
  }
}

function renderTransformations() {
  const box = $("xforms");
  box.innerHTML = "";
  const q = $("xf-filter").value.trim().toLowerCase();
  const onlySel = $("xf-selection").checked;
  const other = $("xf-other").checked;
  let shown = 0;
  for (const m of S.matches) {
    if (!other && m.other_target) continue;
    if (q && !m.name.toLowerCase().includes(q)) continue;
    if (onlySel) {
      const hit = S.selection.some((s) => s.cfg === m.cfg_id && ((m.state_id >= 0 && s.state === m.state_id && m.nodes.includes(s.node))));
      if (!hit) continue;
    }
    shown += 1;
    const form = propsForm(m.properties);
    const item = el("div", {class: "item", "data-match": m.index, "data-name": m.name});
    const head = el("div", {class: "head"}, el("span", {class: "name"}, m.name), el("span", {class: "where", title: m.where}, m.where));
    head.addEventListener("click", () => {
      const open = !item.classList.contains("open");
      box.querySelectorAll(".item.open").forEach((x) => x.classList.remove("open"));
      if (open) { item.classList.add("open"); S.openMatch = m.index; highlightMatch(m, true); }
      else { S.openMatch = null; clearHighlights(); S.renderer.draw_async(); }
    });
    head.addEventListener("mouseenter", () => { if (S.openMatch === null) highlightMatch(m, false); });
    head.addEventListener("mouseleave", () => { if (S.openMatch === null) { clearHighlights(); S.renderer && S.renderer.draw_async(); } });
    const body = el("div", {class: "body"},
      el("p", {class: "doc"}, m.full_doc || m.doc || "(no description)"),
      m.properties.length ? form : el("div", {class: "muted"}, "no properties"),
      el("div", {class: "row"},
        el("button", {"data-action": "preview", onclick: () => preview({kind: "transformation", match: m.index, properties: readProps(form)}, m.name)}, "Preview"),
        el("button", {class: "primary", "data-action": "apply",
                      onclick: () => applyOp({kind: "transformation", match: m.index, properties: readProps(form)}, `applying ${m.name}`)}, "Apply")));
    item.append(head, body);
    box.append(item);
  }
  $("xf-count").textContent = `${shown} of ${S.matches.length} matches shown`;
}

async function preview(op, name) {
  clearError();
  await work(`previewing ${name}`, async () => {
    const r = (await api("POST", "preview", {version: S.session.current.id, op})).json;
    S.previewOp = op;
    makeRenderer(JSON.stringify(r.sdfg));
    $("preview-text").textContent = `Preview: ${r.label} (not applied)`;
    $("preview-bar").classList.remove("hidden");
  });
}

// --- inspector, library nodes ---------------------------------------------------------------------

function kvTable(obj) {
  const t = el("table", {class: "kv"});
  for (const [k, v] of Object.entries(obj)) {
    if (v === undefined) continue;
    t.append(el("tr", {}, el("td", {}, k), el("td", {}, typeof v === "object" && v !== null && !(v instanceof Node) ? JSON.stringify(v) : v)));
  }
  return t;
}

function arrayRow(a) {
  if (!a) return "–";
  return `${a.name}: ${a.dtype}[${a.shape.join(", ")}] ${a.storage}${a.transient ? ", transient" : ""}`;
}

async function inspect(ref) {
  await work("inspecting", async () => {
    const n = (await api("GET", `node?version=${S.version}&cfg=${ref.cfg}&state=${ref.state}&node=${ref.node}`)).json;
    const box = $("inspector");
    box.innerHTML = "";
    box.classList.remove("muted");
    box.append(el("h3", {}, `${n.label} `, el("span", {class: "badge"}, n.type)));
    box.append(kvTable({"id": `cfg ${n.cfg} · state ${n.state} (${n.state_label}) · node ${n.node}`, "SDFG": n.sdfg}));
    if (n.array) box.append(el("h3", {}, "Data"), kvTable({"array": n.array.name, "shape": n.array.shape.join(" × "), "dtype": n.array.dtype,
      "storage": n.array.storage, "transient": String(n.array.transient), "lifetime": n.array.lifetime, "strides": n.array.strides.join(", ")}));
    if (n.map) box.append(el("h3", {}, "Map"), kvTable({"params": n.map.params.join(", "), "range": n.map.range, "schedule": n.map.schedule, "unroll": String(n.map.unroll)}));
    if (n.tasklet) box.append(el("h3", {}, `Tasklet (${n.tasklet.language})`), el("pre", {class: "code"}, n.tasklet.code));
    if (n.nested) box.append(el("h3", {}, "Nested SDFG"), kvTable({"sdfg": n.nested.sdfg, "schedule": n.nested.schedule, "symbols": n.nested.symbol_mapping}));
    if (n.library) box.append(el("h3", {}, "Library node"), kvTable({"class": n.library.class, "implementation": n.library.implementation || "(not chosen)", "schedule": n.library.schedule}));
    if (n.onnx) {
      box.append(el("h3", {}, `ONNX ${n.onnx.op} (opset ${n.onnx.opset})`), kvTable({"ONNX name": n.onnx.onnx_name, ...n.onnx.attributes}));
      box.append(implChooser(Object.assign({}, ref, {label: n.label, implementation: n.library.implementation, selected: n.onnx.selected, implementations: n.onnx.implementations})));
    }
    if (n.analysis) box.append(el("h3", {}, "Data movement (estimate)"), kvTable({"bytes moved": fmtNum(n.analysis.bytes, "B"), "FLOPs": fmtNum(n.analysis.flops),
      "intensity": n.analysis.intensity === null ? "–" : n.analysis.intensity.toFixed(3) + " FLOP/B"}));
    const edges = (list, dir) => {
      const t = el("table", {class: "grid"}, el("tr", {}, el("th", {}, "connector"), el("th", {}, "memlet"), el("th", {}, "array")));
      for (const e of list) t.append(el("tr", {}, el("td", {}, e.connector ?? "–"), el("td", {}, `${e.data ?? "∅"}[${e.subset}] vol ${e.volume}${e.dynamic ? " (dyn)" : ""}`), el("td", {}, arrayRow(e.array))));
      return list.length ? [el("h3", {}, dir), t] : [];
    };
    box.append(...edges(n.inputs, "Inputs"), ...edges(n.outputs, "Outputs"));
    activateTab("inspector");
  });
}

function implChooser(n) {
  const sel = el("select", {"data-node": `${n.cfg}/${n.state}/${n.node}`});
  sel.append(el("option", {value: ""}, `default (${n.selected || "none applies"})`));
  for (const impl of n.implementations) {
    const o = el("option", {value: impl.name, disabled: !impl.applies}, impl.applies ? impl.name : `${impl.name} — cannot apply`);
    sel.append(o);
  }
  if (n.implementation) sel.value = n.implementation;
  const reasons = n.implementations.filter((i) => !i.applies).map((i) => el("div", {class: "reason"}, `${i.name}: ${i.reason}`));
  const ref = {cfg: n.cfg, state: n.state, node: n.node};
  return el("div", {class: "libnode"},
    el("div", {class: "row"}, el("span", {}, "implementation"), sel,
      el("button", {"data-action": "set-impl", onclick: () => {
        if (!sel.value) { showError("choose an implementation first (the default is what the registry picks when the node expands)"); return; }
        applyOp({kind: "implementation", node: ref, implementation: sel.value}, `choosing ${sel.value} for ${n.label}`);
      }}, "Set"),
      el("button", {"data-action": "expand", onclick: () => applyOp({kind: "expand", node: ref}, `expanding ${n.label}`)}, "Expand")),
    reasons);
}

async function loadLibraryNodes() {
  const vid = S.version;
  const r = (await api("GET", "library_nodes?version=" + vid)).json;
  if (vid !== S.version) return;
  const box = $("libnodes");
  box.innerHTML = "";
  $("btn-expand-all").disabled = r.nodes.length === 0;
  if (!r.nodes.length) { box.append(el("p", {class: "muted"}, "No ONNX library nodes in this version: all are expanded.")); return; }
  for (const n of r.nodes) {
    box.append(el("div", {class: "item open", "data-libnode": n.label},
      el("div", {class: "head"}, el("span", {class: "name"}, n.label), el("span", {class: "badge"}, `${n.op} v${n.opset}`),
        el("span", {class: "where"}, n.implementation ? `chosen: ${n.implementation}` : `default: ${n.selected || "none applies"}`)),
      el("div", {class: "body"}, implChooser(n))));
  }
}

// --- data movement ------------------------------------------------------------------------------

async function loadAnalysis() {
  const vid = S.version;
  const r = (await api("GET", "analysis?version=" + vid)).json;
  if (vid !== S.version) return;
  S.analysis = r;
  applyOverlay();
  const box = $("data");
  box.innerHTML = "";
  box.append(el("p", {class: "muted"}, r.source));
  const t = r.total;
  box.append(el("h3", {}, "This version"), kvTable({"bytes moved": fmtNum(t.bytes, "B"), "FLOPs": fmtNum(t.flops),
    "arithmetic intensity": t.intensity === null ? "–" : t.intensity.toFixed(3) + " FLOP/B",
    "transient memory": fmtNum(t.transient_bytes, "B")}));
  const st = el("table", {class: "grid", id: "stage-totals"}, el("tr", {}, el("th", {}, "stage"), el("th", {}, "version"), el("th", {class: "num"}, "bytes"), el("th", {class: "num"}, "FLOPs"), el("th", {class: "num"}, "FLOP/B"), el("th", {class: "num"}, "transients")));
  for (const s of r.stages) st.append(el("tr", {}, el("td", {}, `${s.level} ${s.stage}`), el("td", {}, "v" + s.version), el("td", {class: "num"}, fmtNum(s.bytes, "B")), el("td", {class: "num"}, fmtNum(s.flops)), el("td", {class: "num"}, s.intensity === null ? "–" : s.intensity.toFixed(3)), el("td", {class: "num"}, fmtNum(s.transient_bytes, "B"))));
  box.append(el("h3", {}, "Totals per stage"), st);
  const rows = Object.entries(r.nodes).filter(([k, v]) => v.top_level).sort((a, b) => b[1].bytes - a[1].bytes).slice(0, 40);
  const nt = el("table", {class: "grid"}, el("tr", {}, el("th", {}, "node"), el("th", {class: "num"}, "bytes"), el("th", {class: "num"}, "FLOPs"), el("th", {class: "num"}, "FLOP/B")));
  for (const [key, v] of rows) {
    const [cfg, state, node] = key.split("/").map(Number);
    nt.append(el("tr", {class: "click", onclick: () => {
      const objs = [];
      forNodes((g, info, obj) => { const hit = g === "nodes" && info.cfgId === cfg && info.stateId === state && info.id === node; obj.highlighted = hit; if (hit) objs.push(obj); });
      if (objs.length) S.renderer.zoom_to_view(objs);
      inspect({cfg, state, node});
    }}, el("td", {}, `${v.label} `, el("span", {class: "badge"}, v.type)), el("td", {class: "num"}, fmtNum(v.bytes, "B")), el("td", {class: "num"}, fmtNum(v.flops)), el("td", {class: "num"}, v.intensity === null ? "–" : v.intensity.toFixed(3))));
  }
  box.append(el("h3", {}, "Nodes by bytes moved"), nt);
}

// --- run -----------------------------------------------------------------------------------------

async function run() {
  clearError();
  activateTab("run");
  const repeat = parseInt($("run-repeat").value, 10);
  const body = {repeat: Number.isNaN(repeat) ? 20 : repeat, per_node: $("run-per-node").checked};
  const job = await work("starting the run", async () => (await api("POST", "run", body)).json);
  if (!job) return;
  $("btn-run").disabled = $("btn-run2").disabled = true;
  $("run-progress").classList.remove("hidden");
  $("run-result").innerHTML = "";
  try {
    for (;;) {
      let j;
      try { j = (await api("GET", "jobs/" + job.id)).json; } catch (e) { showError(e); break; }
      $("run-bar").style.width = Math.round(100 * j.progress) + "%";
      $("run-message").textContent = `${j.message} · ${j.elapsed.toFixed(1)} s`;
      if (j.state === "done") { renderRun(j.result); break; }
      if (j.state === "error") { showError("the run failed: " + j.error); $("run-result").append(el("p", {class: "bad"}, "Run failed: " + j.error)); break; }
      await new Promise((res) => setTimeout(res, 300));
    }
  } finally {
    $("btn-run").disabled = $("btn-run2").disabled = false;
  }
}

function renderRun(r) {
  const box = $("run-result");
  box.innerHTML = "";
  const t = el("table", {class: "grid", id: "run-table"}, el("tr", {}, el("th", {}, ""), el("th", {}, "version"),
    el("th", {class: "num", title: `largest absolute difference from ${r.reference} over all outputs`}, "max error"),
    el("th", {class: "num"}, "median"), el("th", {class: "num"}, "min"), el("th", {class: "num"}, "compile")));
  r.rows.forEach((row, i) => {
    t.append(el("tr", {"data-version": row.version}, el("td", {}, r.rows.length === 2 ? (i === 0 ? "before" : "after") : "current"),
      el("td", {title: row.label, style: "white-space: nowrap"}, `v${row.version} · ${row.stage}`),
      el("td", {class: "num error-cell " + (row.max_abs_error <= 1e-3 ? "ok" : "bad")}, fmtErr(row.max_abs_error)),
      el("td", {class: "num latency-cell"}, row.median_ms.toFixed(4) + " ms"),
      el("td", {class: "num"}, row.min_ms.toFixed(4) + " ms"),
      el("td", {class: "num"}, row.built ? row.compile_s.toFixed(2) + " s" : "cached")));
  });
  box.append(t);
  if (r.speedup) box.append(el("p", {class: "big", id: "speedup"}, `speedup ${r.speedup.toFixed(2)}× (median of ${r.repeat} interleaved rounds)`));
  box.append(el("p", {class: "muted"}, `max error: the largest absolute difference from ${r.reference} over all outputs (${r.outputs.join(", ")}); latency: one call of the compiled program on the example inputs.`));
  if (r.node_times) {
    S.nodeTimes = {version: r.node_times_version, values: r.node_times};
    const n = Object.keys(r.node_times).length;
    box.append(el("p", {id: "node-times"}, `per-node times of version ${r.node_times_version}: ${n} node(s) timed; choose the overlay “time per node”.`));
    if ($("overlay").value === "time") applyOverlay();
  }
}

// --- recipe, load ---------------------------------------------------------------------------------

async function exportRecipe() {
  clearError();
  activateTab("history");
  await work("exporting the recipe", async () => {
    const r = await api("GET", "recipe");
    $("recipe-text").textContent = r.text;
    $("recipe-text").classList.remove("hidden");
    const a = $("recipe-download");
    a.href = "/api/recipe?download=1&token=" + encodeURIComponent(TOKEN);
    a.setAttribute("download", `${S.session.model.name}_recipe.py`);
    a.classList.remove("hidden");
  });
}

function activateTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const body of document.querySelectorAll(".tab-body")) body.classList.toggle("hidden", body.id !== "tab-" + name);
}

function wire() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => activateTab(b.dataset.tab));
  $("error-close").addEventListener("click", clearError);
  $("btn-undo").addEventListener("click", () => work("undoing", async () => { clearError(); await refreshSession((await api("POST", "undo")).json); }));
  $("btn-redo").addEventListener("click", () => work("redoing", async () => { clearError(); await refreshSession((await api("POST", "redo")).json); }));
  $("btn-run").addEventListener("click", run);
  $("btn-run2").addEventListener("click", run);
  $("btn-recipe").addEventListener("click", exportRecipe);
  $("btn-recipe2").addEventListener("click", exportRecipe);
  $("btn-expand-all").addEventListener("click", () => applyOp({kind: "expand_all"}, "expanding all library nodes"));
  $("btn-fit").addEventListener("click", () => S.renderer && S.renderer.zoom_to_view());
  $("btn-collapse").addEventListener("click", () => S.renderer && S.renderer.collapseAll());
  $("btn-expand").addEventListener("click", () => S.renderer && S.renderer.expandAll());
  $("search").addEventListener("input", (e) => search(e.target.value));
  $("overlay").addEventListener("change", applyOverlay);
  $("xf-filter").addEventListener("input", renderTransformations);
  $("xf-selection").addEventListener("change", renderTransformations);
  $("xf-other").addEventListener("change", renderTransformations);
  $("preview-discard").addEventListener("click", () => work("discarding the preview", () => showVersion(S.session.current.id)));
  $("preview-apply").addEventListener("click", () => { const op = S.previewOp; if (op) applyOp(op, "applying"); });
  $("btn-load").addEventListener("click", () => $("load-dialog").showModal());
  $("load-form").addEventListener("submit", (e) => {
    if (e.submitter && e.submitter.value !== "ok") return;
    const path = $("load-path").value.trim();
    if (!path) return;
    work(`opening ${path}`, async () => {
      clearError();
      const state = (await api("POST", "load", {path})).json;
      S.version = null;
      await refreshSession(state);
    });
  });
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "TEXTAREA") return;
    if ((e.ctrlKey || e.metaKey) && e.key === "z" && !$("btn-undo").disabled) { e.preventDefault(); $("btn-undo").click(); }
    if ((e.ctrlKey || e.metaKey) && e.key === "y" && !$("btn-redo").disabled) { e.preventDefault(); $("btn-redo").click(); }
  });
}

async function start() {
  wire();
  for (let i = 0; i < 200 && typeof window.SDFGRenderer === "undefined"; i++) await new Promise((r) => setTimeout(r, 50));
  if (typeof window.SDFGRenderer === "undefined") { showError("DaCe's SDFG renderer (sdfv.js) did not load"); return; }
  await work("loading the session", () => refreshSession());
  document.body.dataset.ready = "1";
}

start();
