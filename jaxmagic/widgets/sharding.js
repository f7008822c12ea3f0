// Sharding explorer view (anywidget ES module). Python computes every layout; this file draws:
// per-device bytes, the table of arrays, the N-D grid of the selected array (two dimensions
// drawn, the others picked with sliders) and a per-dimension PartitionSpec editor.

const CSS = `
.jmx-root{font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;color:var(--jp-ui-font-color1,inherit);line-height:1.4}
.jmx-root h3{font-size:14px;margin:.2em 0 .4em}
.jmx-root .jmx-muted{opacity:.7}
.jmx-root .jmx-row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.jmx-root .jmx-panel{border:1px solid var(--jp-border-color2,rgba(128,128,128,.3));border-radius:6px;padding:8px 10px;margin:6px 0}
.jmx-root table{border-collapse:collapse;font-variant-numeric:tabular-nums}
.jmx-root .jmx-leaves td,.jmx-root .jmx-leaves th{padding:2px 8px;border-bottom:1px solid var(--jp-border-color2,rgba(128,128,128,.25));text-align:left}
.jmx-root .jmx-leaves tr.jmx-sel{outline:2px solid rgba(40,110,220,.8)}
.jmx-root .jmx-leaves tbody tr{cursor:pointer}
.jmx-root .jmx-leaves tr.jmx-dim{opacity:.45}
.jmx-root .jmx-leaves td.num{text-align:right}
.jmx-root .jmx-grid{border-collapse:separate;border-spacing:3px}
.jmx-root .jmx-grid td{border:1px solid rgba(128,128,128,.45);border-radius:4px;text-align:center;min-width:56px;padding:6px 8px;cursor:default}
.jmx-root .jmx-grid td small{display:block;opacity:.7;font-size:10px}
.jmx-root .jmx-grid th{font-weight:400;opacity:.75;font-size:11px;padding:0 4px}
.jmx-root .jmx-grid td.jmx-hl{outline:3px solid rgba(230,140,0,.95)}
.jmx-root .jmx-devs{display:grid;grid-template-columns:auto auto 1fr;gap:2px 8px;align-items:center;max-height:260px;overflow:auto}
.jmx-root .jmx-dev{display:contents;cursor:pointer}
.jmx-root .jmx-dev span{padding:1px 2px}
.jmx-root .jmx-dev.jmx-hl span{background:rgba(230,140,0,.25)}
.jmx-root .jmx-bar{height:10px;background:rgba(40,110,220,.65);border-radius:2px;min-width:1px}
.jmx-root .jmx-error{color:#c0392b;background:rgba(220,50,50,.12);border-left:3px solid rgba(220,50,50,.8);padding:3px 8px;margin:4px 0}
[data-jp-theme-light=false] .jmx-root .jmx-error{color:#ff8a80}
.jmx-root .jmx-status{opacity:.75;font-size:12px}
.jmx-root input.jmx-spec-input{width:110px;font-family:var(--jp-code-font-family,monospace);background:transparent;color:inherit;border:1px solid rgba(128,128,128,.5);border-radius:3px;padding:1px 4px}
.jmx-root select,.jmx-root button{color:inherit;background:transparent;border:1px solid rgba(128,128,128,.5);border-radius:3px;padding:1px 6px}
.jmx-root code{font-family:var(--jp-code-font-family,monospace);font-size:12px}
`;

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
}

function ranges(ids) {
  ids = [...ids].sort((a, b) => a - b);
  const out = [];
  let s = null, p = null;
  for (const i of [...ids, null]) {
    if (s === null) { s = p = i; }
    else if (i !== null && i === p + 1) { p = i; }
    else { out.push(s === p ? `${s}` : `${s}-${p}`); s = p = i; }
  }
  return out.join(",");
}

function color(shard) {
  return shard < 0 ? "transparent" : `hsla(${Math.round((shard * 137.508) % 360)},70%,55%,.33)`;
}

function blocks(a, d) {
  const seen = new Map();
  a.starts.forEach((st, i) => { seen.set(`${st[d]}:${a.stops[i][d]}`, [st[d], a.stops[i][d]]); });
  return [...seen.values()].sort((x, y) => x[0] - y[0]);
}

function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") n.className = v;
    else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v);
  }
  for (const c of children) n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return n;
}

function render({ model, el: root }) {
  const local = { facet: {}, highlight: null, pinned: null, drafts: {} };
  const style = document.createElement("style");
  style.textContent = CSS;
  const box = el("div", { class: "jmx-root" });
  root.append(style, box);

  const hl = () => (local.pinned !== null ? local.pinned : local.highlight);

  // Hover only re-colours (rebuilding the DOM under the pointer would fight the user);
  // a click pins the device and redraws, adding the "device k holds" column to the table.
  function applyHighlight() {
    const d = hl();
    box.querySelectorAll(".jmx-dev").forEach((n) => n.classList.toggle("jmx-hl", +n.dataset.device === d));
    box.querySelectorAll("table.jmx-grid td").forEach((n) => {
      const devs = n.dataset.devices ? n.dataset.devices.split(",").map(Number) : [];
      n.classList.toggle("jmx-hl", d !== null && devs.includes(d));
    });
  }

  function setHighlight(dev, pin) {
    if (pin) { local.pinned = local.pinned === dev ? null : dev; draw(); }
    else { local.highlight = dev; applyHighlight(); }
  }

  function deviceBars(data) {
    const peak = Math.max(1, ...data.device_bytes.map((x) => x[1]));
    const wrap = el("div", { class: "jmx-devs" });
    for (const [d, b] of data.device_bytes) {
      const row = el("div", { class: "jmx-dev" + (hl() === d ? " jmx-hl" : ""), "data-device": d,
        onmouseenter: () => setHighlight(d, false), onmouseleave: () => setHighlight(null, false),
        onclick: () => setHighlight(d, true) },
        el("span", {}, `device ${d}`), el("span", { class: "jmx-dev-bytes" }, fmtBytes(b)),
        el("span", {}, el("div", { class: "jmx-bar", style: `width:${(100 * b / peak).toFixed(1)}%` })));
      wrap.append(row);
    }
    return el("div", { class: "jmx-panel" },
      el("div", {}, el("b", {}, "Bytes per device "),
        el("span", { class: "jmx-muted" }, `imbalance max/mean ${data.imbalance.toFixed(2)} · hover or click a device`)), wrap);
  }

  function leafTable(data) {
    const dev = hl();
    const head = ["path", "kind", "type", "spec", "shard", "per device"].concat(dev !== null ? [`device ${dev} holds`] : []);
    const tbody = el("tbody");
    data.arrays.forEach((a, i) => {
      const k = a.device_ids.indexOf(dev);
      const per = Math.max(0, ...a.bytes);
      const cells = [el("code", {}, a.name + (a.edited ? " *" : "")), a.kind, el("code", {}, a.type),
        el("code", {}, a.spec_text), el("code", {}, `[${a.shard_shape.join(",")}]`), fmtBytes(per)];
      if (dev !== null) cells.push(k < 0 ? "—" : `[${a.starts[k].map((s, j) => `${s}:${a.stops[k][j]}`).join(", ")}] ${fmtBytes(a.bytes[k])}`);
      const tr = el("tr", { class: (i === model.get("selected") ? "jmx-sel" : "") + (dev !== null && k < 0 ? " jmx-dim" : ""),
        "data-index": i, onclick: () => { model.set("selected", i); model.set("dims", defaultDims(a)); model.save_changes(); local.facet = {}; draw(); } });
      cells.forEach((c, j) => tr.append(el("td", j === 5 ? { class: "num" } : {}, c)));
      tbody.append(tr);
    });
    const thead = el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h))));
    return el("div", { class: "jmx-panel", style: "max-height:300px;overflow:auto" },
      el("b", {}, `Arrays (${data.arrays.length})`), el("table", { class: "jmx-leaves" }, thead, tbody));
  }

  function defaultDims(a) {
    const r = a.shape.length;
    if (r === 0) return [];
    if (r === 1) return [0];
    const split = [...Array(r).keys()].filter((d) => blocks(a, d).length > 1);
    const rest = [...Array(r).keys()].filter((d) => !split.includes(d));
    return split.concat(rest).slice(0, 2).sort((x, y) => x - y);
  }

  function gridPanel(a) {
    let dims = model.get("dims") || [];
    const r = a.shape.length;
    if (dims.length !== Math.min(2, r) || dims.some((d) => d >= r) || (dims.length === 2 && dims[0] === dims[1])) dims = defaultDims(a);
    const [rdim, cdim] = dims.length === 2 ? dims : [null, dims.length ? dims[0] : null];
    const panel = el("div", { class: "jmx-panel jmx-array" });
    panel.append(el("div", {}, el("b", {}, a.name), " ", el("code", {}, a.type), " · ", el("code", { class: "jmx-spec-text" }, a.spec_text),
      el("span", { class: "jmx-muted" }, ` · shard [${a.shard_shape.join(",")}] · ${a.num_shards} distinct shards · ×${a.replication} replicas`)));
    // dimension pickers
    if (r >= 2) {
      const pick = (which, value) => {
        const s = el("select", { class: `jmx-dim-${which}`, onchange: (e) => {
          const v = +e.target.value; let nd = which === "row" ? [v, cdim] : [rdim, v];
          if (nd[0] === nd[1]) nd = which === "row" ? [v, rdim] : [cdim, v];
          model.set("dims", nd); model.save_changes(); local.facet = {}; draw(); } });
        for (let d = 0; d < r; d++) {
          const o = el("option", { value: d }, `dim ${d} (${a.shape[d]})`);
          if (d === value) o.selected = true;
          s.append(o);
        }
        return s;
      };
      panel.append(el("div", {}, "rows ", pick("row", rdim), "  cols ", pick("col", cdim)));
    }
    // facet sliders for the other dimensions
    const other = [...Array(r).keys()].filter((d) => d !== rdim && d !== cdim);
    const facet = {};
    for (const d of other) {
      const bl = blocks(a, d);
      const cur = Math.min(local.facet[d] || 0, bl.length - 1);
      facet[d] = bl[cur];
      const label = el("span", { class: "jmx-facet-label" }, ` dim ${d} [${bl[cur][0]}:${bl[cur][1]}] (${cur + 1}/${bl.length})`);
      const slider = el("input", { type: "range", min: 0, max: bl.length - 1, value: cur, class: "jmx-facet", "data-dim": d,
        oninput: (e) => { local.facet[d] = +e.target.value; draw(); } });
      if (bl.length === 1) slider.disabled = true;
      panel.append(el("div", {}, slider, label));
    }
    // grid
    const rows = rdim !== null ? blocks(a, rdim) : [[0, 1]];
    const cols = cdim !== null ? blocks(a, cdim) : [[0, 1]];
    const cells = rows.map(() => cols.map(() => ({ devs: [], shard: -1, bytes: 0 })));
    a.device_ids.forEach((dev, i) => {
      for (const d of other) if (a.starts[i][d] !== facet[d][0] || a.stops[i][d] !== facet[d][1]) return;
      const ri = rdim !== null ? rows.findIndex((b) => b[0] === a.starts[i][rdim] && b[1] === a.stops[i][rdim]) : 0;
      const ci = cdim !== null ? cols.findIndex((b) => b[0] === a.starts[i][cdim] && b[1] === a.stops[i][cdim]) : 0;
      const c = cells[ri][ci];
      c.devs.push(dev); c.shard = a.shard_ids[i]; c.bytes = a.bytes[i];
    });
    const table = el("table", { class: "jmx-grid", "data-rows": rows.length, "data-cols": cols.length });
    table.append(el("tr", {}, el("th", {}), ...cols.map((b) => el("th", {}, cdim !== null ? `[${b[0]}:${b[1]}]` : ""))));
    rows.forEach((rb, ri) => {
      const tr = el("tr", {}, el("th", {}, rdim !== null ? `[${rb[0]}:${rb[1]}]` : ""));
      cols.forEach((cb, ci) => {
        const c = cells[ri][ci];
        const td = el("td", { style: `background:${color(c.shard)}`, "data-devices": c.devs.join(","),
          title: `devices ${ranges(c.devs)} · ${fmtBytes(c.bytes)} each` },
          ranges(c.devs), el("small", {}, fmtBytes(c.bytes)));
        if (hl() !== null && c.devs.includes(hl())) td.classList.add("jmx-hl");
        td.addEventListener("mouseenter", () => { if (c.devs.length) setHighlight(c.devs[0], false); });
        td.addEventListener("mouseleave", () => setHighlight(null, false));
        tr.append(td);
      });
      table.append(tr);
    });
    panel.append(table);
    // spec editor: per dimension, the mesh axes that split it (comma-separated; empty = not split)
    const editor = el("div", { class: "jmx-spec-editor" }, el("b", {}, "Edit PartitionSpec "),
      el("span", { class: "jmx-muted" }, `mesh axes: ${a.mesh_axes.map((n, i) => `${n}=${a.mesh_sizes[i]}`).join(", ")}`));
    const inputs = [];
    const draft = local.drafts[a.name];
    for (let d = 0; d < r; d++) {
      const val = draft ? draft[d] : (a.spec ? (a.spec[d] || []).join(",") : "");
      const inp = el("input", { class: "jmx-spec-input", "data-dim": d, value: val, placeholder: "None",
        onkeydown: (e) => { if (e.key === "Enter") apply(); } });
      inputs.push(inp);
      editor.append(el("span", {}, ` dim ${d}: `), inp);
    }
    const apply = () => {
      local.drafts[a.name] = inputs.map((i) => i.value);
      const spec = inputs.map((i) => i.value.split(/[,+\s]+/).map((s) => s.trim()).filter((s) => s && s !== "None"));
      model.set("spec_request", { name: a.name, spec, n: Date.now() });
      model.save_changes();
    };
    editor.append(" ", el("button", { class: "jmx-apply", onclick: apply }, "Apply"),
      " ", el("button", { class: "jmx-reset", onclick: () => { delete local.drafts[a.name];
        model.set("spec_request", { name: a.name, reset: true, n: Date.now() }); model.save_changes(); } }, "Reset"));
    panel.append(editor);
    const err = model.get("error");
    if (err) panel.append(el("div", { class: "jmx-error" }, err));
    else if (model.get("status")) panel.append(el("div", { class: "jmx-status" }, model.get("status")));
    return panel;
  }

  function draw() {
    const data = JSON.parse(model.get("data_json") || "{}");
    box.replaceChildren();
    if (!data || !data.arrays || !data.arrays.length) { box.append("nothing to show"); return; }
    const sel = Math.min(model.get("selected") || 0, data.arrays.length - 1);
    box.append(el("h3", {}, `${data.name} `, el("span", { class: "jmx-muted" }, `· ${data.source} · mesh ${data.mesh_text}`)));
    box.append(gridPanel(data.arrays[sel]));
    box.append(el("div", { class: "jmx-row" }, deviceBars(data), leafTable(data)));
    if (data.skipped.length) box.append(el("div", { class: "jmx-muted" }, `${data.skipped.length} leaves not placed on devices (see the text view)`));
  }

  const redraw = () => draw();
  for (const name of ["data_json", "selected", "dims", "error", "status"]) model.on(`change:${name}`, redraw);
  draw();
  return () => { for (const name of ["data_json", "selected", "dims", "error", "status"]) model.off(`change:${name}`, redraw); };
}

export default { render };
