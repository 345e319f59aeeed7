// The query page: an expression box, a table of an instant query and a
// graph of a range query, over Athens' own /api/v1 endpoints. No build step.
"use strict";

const COLORS = ["#1565c0", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#4e342e"];
const $ = (id) => document.getElementById(id);
let tab = "table";

function parseDuration(text) {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)/g;
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 };
  let total = 0, seen = "", m;
  while ((m = re.exec(text)) !== null) { total += parseFloat(m[1]) * unit[m[2]]; seen += m[0]; }
  if (seen !== text.trim() || total <= 0) {
    const n = parseFloat(text);
    return Number.isFinite(n) && n > 0 ? n : null;
  }
  return total;
}

function seriesName(metric) {
  const name = metric.__name__ || "";
  const rest = Object.keys(metric).filter((k) => k !== "__name__").sort()
    .map((k) => `${k}=${JSON.stringify(metric[k])}`);
  return rest.length ? `${name}{${rest.join(", ")}}` : (name || "{}");
}

function setStatus(text, error) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(path, params) {
  const resp = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(params).toString(),
  });
  const body = await resp.json();
  if (body.status !== "success") throw new Error(`${body.errorType}: ${body.error}`);
  return body;
}

function endTime() {
  const text = $("end").value.trim();
  if (!text) return Date.now() / 1000;
  const n = Number(text);
  return Number.isFinite(n) ? n : Date.parse(text) / 1000;
}

function showTable(data) {
  const tbody = $("table").querySelector("tbody");
  tbody.innerHTML = "";
  const rows = [];
  if (data.resultType === "vector") {
    for (const r of data.result) rows.push([seriesName(r.metric), r.value[1]]);
  } else if (data.resultType === "matrix") {
    for (const r of data.result) rows.push([seriesName(r.metric), r.values.map((v) => `${v[1]} @${v[0]}`).join("\n")]);
  } else {
    rows.push(["scalar" === data.resultType ? "scalar" : "string", String(data.result[1])]);
  }
  for (const [k, v] of rows) {
    const tr = document.createElement("tr");
    const a = document.createElement("td"), b = document.createElement("td");
    a.textContent = k; b.textContent = v; b.style.whiteSpace = "pre";
    tr.append(a, b); tbody.append(tr);
  }
  if (!rows.length) tbody.innerHTML = "<tr><td colspan=2>Empty query result</td></tr>";
}

function niceTicks(lo, hi, n) {
  const span = hi - lo || 1;
  const raw = span / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

function timeTicks(start, end, n) {
  // Steps a clock reader expects: 1s .. 1d.
  const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const step = steps.find((s) => (end - start) / s <= n) || 86400 * Math.ceil((end - start) / n / 86400);
  const out = [];
  for (let t = Math.ceil(start / step) * step; t <= end; t += step) out.push(t);
  return out;
}

function drawGraph(data, start, end) {
  const canvas = $("graph"), ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height, L = 70, R = 10, T = 10, B = 30;
  ctx.clearRect(0, 0, W, H);
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, H);
  const series = data.result.map((r) => ({
    name: seriesName(r.metric),
    pts: r.values.map((v) => [v[0], parseFloat(v[1])]).filter((p) => Number.isFinite(p[1])),
  }));
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const p of s.pts) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
  if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
  if (lo === hi) { lo -= 1; hi += 1; }
  const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
  const x = (t) => L + (t - start) / (end - start || 1) * (W - L - R);
  const y = (v) => T + (hi - v) / (hi - lo) * (H - T - B);
  ctx.strokeStyle = "#eceff1"; ctx.fillStyle = "#555"; ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
  for (const v of niceTicks(lo, hi, 6)) {
    ctx.beginPath(); ctx.moveTo(L, y(v)); ctx.lineTo(W - R, y(v)); ctx.stroke();
    ctx.fillText(String(+v.toPrecision(6)), 4, y(v) + 4);
  }
  for (const t of timeTicks(start, end, 6)) {
    ctx.beginPath(); ctx.moveTo(x(t), T); ctx.lineTo(x(t), H - B); ctx.stroke();
    ctx.fillText(new Date(t * 1000).toISOString().substr(11, 8), x(t) - 22, H - 10);
  }
  ctx.strokeStyle = "#90a4ae"; ctx.strokeRect(L, T, W - L - R, H - T - B);
  const legend = $("legend");
  legend.innerHTML = "";
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    ctx.strokeStyle = color; ctx.lineWidth = 2; ctx.beginPath();
    let prev = null;
    for (const [t, v] of s.pts) {
      if (prev !== null && t - prev > data.step * 1.5) ctx.moveTo(x(t), y(v));
      else if (prev === null) ctx.moveTo(x(t), y(v));
      else ctx.lineTo(x(t), y(v));
      prev = t;
    }
    ctx.stroke();
    const li = document.createElement("li"), sw = document.createElement("span");
    sw.style.background = color; li.append(sw, document.createTextNode(s.name)); legend.append(li);
  });
}

async function execute() {
  const expr = $("expr").value.trim();
  const params = new URLSearchParams({ expr, tab, range: $("range").value });
  if ($("end").value.trim()) params.set("end", $("end").value.trim());
  history.replaceState(null, "", "?" + params.toString());
  if (!expr) { setStatus(""); return; }
  setStatus("Loading...");
  const t0 = performance.now();
  try {
    if (tab === "table") {
      const body = await api("/api/v1/query", { query: expr, time: endTime() });
      showTable(body.data);
      setStatus(`Load time: ${Math.round(performance.now() - t0)}ms, result series: ${body.data.result.length}`);
    } else {
      const range = parseDuration($("range").value) || 3600;
      const end = endTime(), start = end - range;
      const step = parseDuration($("step").value) || Math.max(1, Math.round(range / 250));
      const body = await api("/api/v1/query_range", { query: expr, start, end, step });
      body.data.step = step;
      drawGraph(body.data, start, end);
      setStatus(`Load time: ${Math.round(performance.now() - t0)}ms, resolution: ${step}s, result series: ${body.data.result.length}`);
    }
    document.body.dataset.state = "done";
  } catch (e) {
    setStatus(e.message, true);
    document.body.dataset.state = "error";
  }
}

function selectTab(name) {
  tab = name;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  $("table-panel").classList.toggle("hidden", name !== "table");
  $("graph-panel").classList.toggle("hidden", name !== "graph");
  $("range-controls").classList.toggle("hidden", name !== "graph");
}

$("form").addEventListener("submit", (e) => { e.preventDefault(); execute(); });
$("expr").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); execute(); }
});
for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => { selectTab(b.dataset.tab); execute(); });

const q = new URLSearchParams(location.search);
$("expr").value = q.get("expr") || q.get("g0.expr") || "";
if (q.get("range")) $("range").value = q.get("range");
if (q.get("end")) $("end").value = q.get("end");
selectTab(q.get("tab") === "graph" || q.get("g0.tab") === "0" ? "graph" : "table");
if ($("expr").value) execute();
