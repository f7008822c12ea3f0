// Live training progress for jaxmagic's Trainer (anywidget ES module, no dependencies).
const CSS = `
.jmp{font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;line-height:1.45;color:inherit;max-width:760px}
.jmp h3{font-size:14px;margin:.2em 0 .4em;font-weight:600;display:flex;gap:8px;align-items:center}
.jmp .badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px;font-weight:600;background:rgba(40,110,220,.2)}
.jmp .badge.completed{background:rgba(40,160,80,.22)}.jmp .badge.interrupted,.jmp .badge.stopped{background:rgba(230,140,0,.22)}
.jmp .badge.diverged,.jmp .badge.failed{background:rgba(220,50,50,.22)}
.jmp .bar{position:relative;height:14px;border-radius:7px;background:rgba(128,128,128,.18);overflow:hidden;margin:.3em 0;max-width:560px}
.jmp .fill{height:100%;background:rgba(40,110,220,.7);transition:width .15s}
.jmp .stats{display:flex;flex-wrap:wrap;gap:4px 16px;margin:.3em 0}.jmp .stats b{font-variant-numeric:tabular-nums}
.jmp table{border-collapse:collapse;margin:.3em 0;font-variant-numeric:tabular-nums}
.jmp th,.jmp td{padding:2px 8px;border-bottom:1px solid rgba(128,128,128,.3);text-align:right}
.jmp th{font-weight:600}
.jmp button.stop{margin-left:auto;padding:2px 10px;border-radius:4px;border:1px solid rgba(220,50,50,.6);background:rgba(220,50,50,.12);color:inherit;cursor:pointer}
.jmp button.stop:disabled{opacity:.5;cursor:default}
.jmp .muted{opacity:.7}.jmp .msg{margin:.2em 0}
`;

function fmt(v, d = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "n/a";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return String(v);
  return Number(v.toPrecision(d)).toString();
}
function count(v) {
  if (v === null || v === undefined || !isFinite(v)) return "n/a";
  for (const [u, s] of [["G", 1e9], ["M", 1e6], ["k", 1e3]]) if (v >= s) return (v / s).toPrecision(3) + u;
  return v >= 100 ? v.toFixed(0) : v.toPrecision(3);
}
function secs(s) {
  if (s === null || s === undefined || !isFinite(s)) return "n/a";
  if (s < 1) return (s * 1000).toPrecision(3) + " ms";
  if (s < 120) return s.toPrecision(3) + " s";
  const m = Math.floor(s / 60), r = Math.round(s % 60);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m` : `${m}m${String(r).padStart(2, "0")}s`;
}
const NS = "http://www.w3.org/2000/svg";
function chart(curves, xMax) {
  const W = 560, H = 180, L = 48, R = 10, T = 16, B = 22;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("class", "jm-chart");
  svg.style.fontSize = "10px";
  const series = Object.entries(curves || {}).filter(([, p]) => p && p.length);
  const all = series.flatMap(([, p]) => p);
  if (!all.length) {
    const t = document.createElementNS(NS, "text"); t.setAttribute("x", 10); t.setAttribute("y", 20);
    t.setAttribute("fill", "currentColor"); t.textContent = "waiting for the first steps…"; svg.appendChild(t); return svg;
  }
  let y0 = Math.min(...all.map(p => p[1])), y1 = Math.max(...all.map(p => p[1]));
  if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }
  const xData = Math.max(...all.map(p => p[0]), 1);
  // show the remaining way to the target, unless that would squash the curve to a sliver
  const x1 = Math.max(xMax && xMax <= 4 * xData ? xMax : 0, xData);
  const sx = x => L + x / x1 * (W - L - R), sy = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const el = (tag, attrs, text) => { const e = document.createElementNS(NS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; svg.appendChild(e); return e; };
  for (const f of [0, 0.5, 1]) {
    const yv = y0 + f * (y1 - y0), yy = sy(yv);
    el("line", {x1: L, x2: W - R, y1: yy, y2: yy, stroke: "currentColor", "stroke-opacity": ".15"});
    el("text", {x: L - 4, y: yy + 3, "text-anchor": "end", fill: "currentColor", opacity: ".7"}, fmt(yv, 3));
  }
  el("text", {x: L, y: H - 6, fill: "currentColor", opacity: ".7"}, "0");
  el("text", {x: W - R, y: H - 6, "text-anchor": "end", fill: "currentColor", opacity: ".7"}, `step ${Math.round(x1)}`);
  const colors = ["#2f6fdc", "#e0730b", "#2a9d4b", "#b23fb5"];
  let lx = L + 8;
  series.forEach(([name, pts], i) => {
    const c = colors[i % colors.length], evalSeries = name.startsWith("eval_");
    el("polyline", {class: `jm-series jm-series-${name}`, points: pts.map(p => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" "),
      fill: "none", stroke: c, "stroke-width": evalSeries ? 1.2 : 1.5, ...(evalSeries ? {"stroke-dasharray": "3 2"} : {})});
    if (evalSeries) pts.forEach(p => el("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 2.6, fill: c}));
    el("rect", {x: lx, y: 4, width: 10, height: 3, fill: c});
    el("text", {x: lx + 13, y: 9, fill: "currentColor"}, name);
    lx += 20 + 6 * name.length;
  });
  return svg;
}

function render({ model, el }) {
  const root = document.createElement("div"); root.className = "jmp jm-progress-widget";
  const style = document.createElement("style"); style.textContent = CSS; root.appendChild(style);
  const head = document.createElement("h3");
  const title = document.createElement("span"); title.textContent = "Training";
  const badge = document.createElement("span"); badge.className = "badge";
  const stop = document.createElement("button"); stop.className = "stop"; stop.textContent = "Stop";
  stop.title = "End training gracefully at the next step boundary";
  stop.addEventListener("click", () => {
    stop.disabled = true; stop.textContent = "Stopping…";
    model.set("stop_requested", true); model.save_changes();
  });
  head.append(title, badge, stop);
  const bar = document.createElement("div"); bar.className = "bar jm-progress";
  const fill = document.createElement("div"); fill.className = "fill jm-progress-fill"; bar.appendChild(fill);
  const label = document.createElement("div"); label.className = "muted jm-progress-label";
  const msg = document.createElement("div"); msg.className = "msg";
  const stats = document.createElement("div"); stats.className = "stats";
  const chartBox = document.createElement("div");
  const table = document.createElement("div");
  const ckpts = document.createElement("div"); ckpts.className = "muted";
  root.append(head, bar, label, msg, stats, chartBox, table, ckpts);
  el.appendChild(root);

  function update() {
    const s = model.get("state") || {};
    const status = s.status || "starting";
    badge.textContent = status; badge.className = "badge " + status;
    const running = ["starting", "compiling", "training", "evaluating", "saving", "running"].includes(status);
    stop.style.display = running ? "" : "none";
    const frac = s.fraction === null || s.fraction === undefined ? 0 : s.fraction;
    fill.style.width = (Math.max(0, Math.min(1, frac)) * 100).toFixed(1) + "%";
    bar.setAttribute("aria-valuenow", (frac * 100).toFixed(0));
    label.textContent = `step ${s.step ?? 0}` + (s.target ? ` / ${s.target}` : "") +
      (s.epoch !== null && s.epoch !== undefined && s.steps_per_epoch ? ` · epoch ${s.epoch + 1}` : "");
    msg.textContent = s.message || "";
    const items = [["steps/s", count(s.steps_per_second)], ["examples/s", count(s.examples_per_second)],
      ["ETA", running ? secs(s.eta_seconds) : "—"], ["compile", secs(s.compile_seconds)]];
    for (const [k, v] of Object.entries(s.last || {})) items.push([k, fmt(v)]);
    stats.replaceChildren(...items.map(([k, v]) => { const sp = document.createElement("span");
      sp.append(k + " "); const b = document.createElement("b"); b.textContent = v; sp.appendChild(b); return sp; }));
    chartBox.replaceChildren(chart(model.get("curves"), s.target));
    const t = model.get("table") || {};
    if (t.headers && t.rows && t.rows.length) {
      const tb = document.createElement("table"); tb.className = "jm-metrics";
      const hr = document.createElement("tr");
      t.headers.forEach(h => { const th = document.createElement("th"); th.textContent = h; hr.appendChild(th); });
      tb.appendChild(hr);
      t.rows.slice(-12).forEach(r => { const tr = document.createElement("tr");
        r.forEach(v => { const td = document.createElement("td"); td.textContent = fmt(v); tr.appendChild(td); }); tb.appendChild(tr); });
      table.replaceChildren(tb);
    }
    const c = model.get("checkpoints") || [];
    ckpts.textContent = c.length ? `checkpoints: ${c.length} saved, last at step ${c[c.length - 1].step} (${c[c.length - 1].reason})` : "";
  }
  for (const k of ["state", "curves", "table", "checkpoints"]) model.on(`change:${k}`, update);
  update();
}
export default { render };
