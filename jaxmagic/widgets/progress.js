// Live training progress (anywidget ES module). Python (render/training.py progress_view) sends
// every string already formatted, the chart and the per-layer heatmap as SVG; this file only
// places them and reports a click on Stop. Styles: jaxmagic/render/jaxmagic.css (the widget's _css).

function el(tag, cls, text) {
  const n = document.createElement(tag);
  if (cls) n.className = cls;
  if (text !== undefined) n.textContent = text;
  return n;
}

function render({ model, el: host }) {
  const root = el("div", "jm jm-progress-widget");
  const badge = el("span", "jm-badge");
  const stop = el("button", "jm-stop", "Stop");
  stop.title = "End training gracefully at the next step boundary";
  const onStop = () => {
    stop.disabled = true; stop.textContent = "Stopping…";
    model.set("stop_requested", true); model.save_changes();
  };
  stop.addEventListener("click", onStop);
  const head = el("h3", "jm-head"), title = el("span", "", "Training");
  head.append(title, badge, stop);
  // role and value sit on a wrapper: `.jm-progress[aria-valuenow]` marks the static snapshot
  const meter = el("div");
  meter.setAttribute("role", "progressbar");
  const bar = el("div", "jm-progress"), fill = el("div", "jm-progress-fill");
  bar.append(fill); meter.append(bar);
  const label = el("div", "jm-muted"), msg = el("div", "jm-message"), stats = el("div", "jm-totals");
  const chart = el("div"), heat = el("div", "jm-flight"), table = el("div"), ckpts = el("div", "jm-muted");
  root.append(head, meter, label, msg, stats, chart, heat, table, ckpts);
  host.append(root);

  let svg, heatSvg;
  function update() {
    const v = model.get("view") || {};
    title.textContent = v.title || "Training"; // a tracked loop (render/loops.py) names itself
    badge.textContent = v.status || "starting";
    badge.className = `jm-badge jm-${v.status_kind || "info"}`;
    stop.style.display = v.running === false || v.stoppable === false ? "none" : "";
    fill.style.width = v.percent || "0%";
    meter.setAttribute("aria-valuenow", v.aria || "0");
    label.textContent = v.label || "";
    msg.textContent = v.message || "";
    stats.replaceChildren(...(v.stats || []).map(([k, value]) => {
      const s = el("span", "jm-stat", `${k} `); s.append(el("b", "", value)); return s; }));
    if (svg !== v.chart) { svg = v.chart; chart.innerHTML = svg || ""; }
    if (heatSvg !== v.heatmap) { heatSvg = v.heatmap; heat.innerHTML = heatSvg || ""; }
    const t = v.table || { headers: [], rows: [] };
    if (t.rows.length) {
      const tb = el("table", "jm-metrics"), hr = el("tr");
      t.headers.forEach((h) => hr.append(el("th", "num", h)));
      tb.append(hr);
      t.rows.forEach((r) => { const tr = el("tr"); r.forEach((c) => tr.append(el("td", "num", c))); tb.append(tr); });
      table.replaceChildren(tb);
    }
    ckpts.textContent = v.checkpoints || "";
  }

  model.on("change:view", update);
  update();
  return () => { model.off("change:view", update); stop.removeEventListener("click", onStop); root.remove(); };
}

export default { render };
