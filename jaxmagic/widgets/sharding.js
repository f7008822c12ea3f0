// Sharding explorer view (anywidget ES module). Python (render/explorer.py) computes and formats
// everything: this file only turns `data_json` / `view_json` / `plan_json` into DOM and reports
// what the user does through the `selected`, `dims`, `facet`, `pinned` and `spec_request` traits.
// Styles: jaxmagic/render/jaxmagic.css (the widget's _css, shared with the HTML reports).

function el(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
    else if (k === "class") n.className = v;
    else n.setAttribute(k, v);
  }
  for (const c of children) n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return n;
}

function render({ model, el: root }) {
  const box = el("div", { class: "jm jm-explorer" });
  root.append(box);
  const send = (traits) => { for (const [k, v] of Object.entries(traits)) model.set(k, v); model.save_changes(); };
  let hover = null;
  const parsed = {};
  const json = (name) => {  // parse each JSON trait once per change
    const text = model.get(name) || "{}";
    if (parsed[name]?.text !== text) parsed[name] = { text, value: JSON.parse(text) };
    return parsed[name].value;
  };

  // Hover only toggles classes (rebuilding the DOM under the pointer would fight the user).
  function highlight(dev) {
    hover = dev;
    const d = dev ?? json("view_json").pinned;
    box.querySelectorAll(".jm-dev").forEach((n) => n.classList.toggle("jm-hl", +n.dataset.device === d));
    box.querySelectorAll("table.jm-grid td").forEach((n) =>
      n.classList.toggle("jm-hl", d != null && n.dataset.devices.split(",").includes(String(d))));
  }

  function arrayPanel(v) {
    const panel = el("div", { class: "jm-panel jm-array" },
      el("div", {}, el("b", {}, v.name), " ", el("code", {}, v.type), " · ",
        el("code", { class: "jm-spec-text" }, v.spec_text), el("span", { class: "jm-muted" }, v.note)));
    if (v.dim_options.length) {
      const picker = (which, pos) => {
        const s = el("select", { class: `jm-dim-${which}`, onchange: (e) => {
          const dims = [...v.dims]; dims[pos] = +e.target.value; send({ dims }); } });
        v.dim_options.forEach((label, d) => s.append(Object.assign(el("option", { value: d }, label), { selected: d === v.dims[pos] })));
        return s;
      };
      panel.append(el("div", {}, "rows ", picker("row", 0), "  cols ", picker("col", 1)));
    }
    v.facets.forEach((f, k) => {
      const slider = el("input", { type: "range", min: 0, max: f.count - 1, value: f.index, class: "jm-facet", "data-dim": f.dim,
        oninput: (e) => { const facet = [...v.facet]; facet[k] = +e.target.value; send({ facet }); } });
      slider.disabled = f.count === 1;
      panel.append(el("div", {}, slider, el("span", { class: "jm-facet-label" }, f.label)));
    });
    const g = v.grid;
    const table = el("table", { class: "jm-grid", "data-rows": g.rows.length, "data-cols": g.col_heads.length },
      el("tr", {}, el("th"), ...g.col_heads.map((h) => el("th", {}, h))));
    for (const row of g.rows) {
      table.append(el("tr", {}, el("th", {}, row.head), ...row.cells.map((c) =>
        el("td", { style: `background:${c.color}`, "data-devices": c.devices.join(","), title: c.title,
          onmouseenter: () => highlight(c.devices.length ? c.devices[0] : null), onmouseleave: () => highlight(null) },
        c.label, el("small", {}, c.bytes)))));
    }
    panel.append(el("div", { class: "jm-muted" }, g.caption), table);
    const inputs = v.spec_inputs.map((text, d) => el("input", { class: "jm-spec-input", "data-dim": d, value: text,
      placeholder: "None", onkeydown: (e) => { if (e.key === "Enter") apply(); } }));
    const apply = () => send({ spec_request: { name: v.name, entries: inputs.map((i) => i.value), n: Date.now() } });
    const reset = () => send({ spec_request: { name: v.name, reset: true, n: Date.now() } });
    panel.append(el("div", { class: "jm-spec-editor" }, el("b", {}, "Edit PartitionSpec "),
      el("span", { class: "jm-muted" }, v.mesh_axes), ...inputs.flatMap((inp, d) => [el("span", {}, ` dim ${d}: `), inp]),
      " ", el("button", { class: "jm-apply", onclick: apply }, "Apply"), " ", el("button", { class: "jm-reset", onclick: reset }, "Reset")));
    const err = model.get("error"), status = model.get("status");
    if (err) panel.append(el("div", { class: "jm-error" }, err));
    else if (status) panel.append(el("div", { class: "jm-status" }, status));
    return panel;
  }

  function deviceBars(data, v) {
    const rows = data.devices.map((d) => el("div", { class: "jm-dev", "data-device": d.device,
      onmouseenter: () => highlight(d.device), onmouseleave: () => highlight(null),
      onclick: () => send({ pinned: v.pinned === d.device ? -1 : d.device }) },
      el("span", {}, d.label), el("span", { class: "jm-dev-bytes" }, d.bytes),
      el("span", {}, el("span", { class: "jm-bar", style: `width:${d.bar}` }))));
    return el("div", { class: "jm-panel" }, el("div", {}, el("b", {}, "Bytes per device "),
      el("span", { class: "jm-muted" }, data.devices_note)), el("div", { class: "jm-devs" }, ...rows));
  }

  function arrayTable(data, v) {
    const head = ["path", "kind", "type", "spec", "shard", "per device"].concat(v.holds_head ? [v.holds_head] : []);
    const body = data.arrays.map((a, i) => {
      const holds = v.holds_head ? [v.holds[i]] : [];
      const cls = (i === v.index ? "jm-sel" : "") + (holds.length && !holds[0].held ? " jm-dim" : "");
      return el("tr", { class: cls, "data-index": i, onclick: () => send({ selected: i }) },
        el("td", {}, el("code", {}, a.label)), el("td", {}, a.kind), el("td", {}, el("code", {}, a.type)),
        el("td", {}, el("code", {}, a.spec_text)), el("td", {}, el("code", {}, a.shard)),
        el("td", { class: "num" }, a.per_device), ...holds.map((h) => el("td", {}, h.text)));
    });
    return el("div", { class: "jm-panel jm-scroll" }, el("b", {}, `Arrays (${data.arrays.length})`),
      el("table", { class: "jm-leaves" }, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))), el("tbody", {}, ...body)));
  }

  // Plan mode: the call's plan for the layout shown (Python plans it again on every spec edit).
  function planPanel(p) {
    const table = (head, rows, numeric, cls) => el("table", { class: cls },
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c, i) => el("td", numeric.includes(i) ? { class: "num" } : {}, c))))));
    const panel = el("div", { class: "jm-panel jm-plan" },
      el("div", {}, el("b", {}, p.title), " ", el("span", { class: "jm-muted" }, p.subtitle)),
      el("div", { class: "jm-plan-peak" }, "peak per device ", el("b", {}, p.peak)),
      table(["memory per device", "bytes"], p.memory, [1], "jm-plan-memory"));
    if (p.donation) panel.append(el("div", { class: "jm-muted" }, p.donation));
    panel.append(el("div", {}, el("b", {}, p.collectives_title)));
    if (p.collectives.length) panel.append(table(p.collectives_head, p.collectives, p.collectives_numeric, "jm-plan-collectives"));
    p.notes.forEach((n) => panel.append(el("div", { class: "jm-muted" }, "note: " + n)));
    return panel;
  }

  function draw() {
    const data = json("data_json"), v = json("view_json"), plan = json("plan_json");
    if (!data.arrays || v.index === undefined) { box.replaceChildren("nothing to show"); return; }
    box.replaceChildren(el("h3", {}, `${data.title} `, el("span", { class: "jm-muted" }, data.subtitle)),
      arrayPanel(v), el("div", { class: "jm-row" }, deviceBars(data, v), arrayTable(data, v)));
    if (plan.title) box.append(planPanel(plan));
    if (data.skipped_note) box.append(el("div", { class: "jm-muted" }, data.skipped_note));
    highlight(hover);
  }

  const events = ["data_json", "view_json", "plan_json", "error", "status"].map((name) => `change:${name}`);
  events.forEach((e) => model.on(e, draw));
  draw();
  return () => { events.forEach((e) => model.off(e, draw)); box.remove(); };
}

export default { render };
