// Line charts as inline SVG, with TensorBoard's smoothing; no library, nothing fetched.
"use strict";
const SPARSE = 40;
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"];

// TensorBoard's debiased exponential moving average: weight 0 leaves the values as they are.
function genlabSmooth(values, weight) {
  const out = [];
  let last = 0;
  for (let i = 0; i < values.length; i++) {
    last = last * weight + (1 - weight) * values[i];
    out.push(weight === 0 ? values[i] : last / (1 - Math.pow(weight, i + 1)));
  }
  return out;
}

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
  // Ticks counted by index, never by adding the step: a step below the values' rounding (a flat series
  // smoothed to 4 +- 1 ulp) would never move t, and the page would hang building ticks.
  const first = Math.ceil(lo / step), count = Math.min(Math.floor(hi / step + 1e-9) - first + 1, 4 * n + 1);
  const ticks = [];
  for (let i = 0; i < count; i++) ticks.push(+((first + i) * step).toPrecision(12));
  return ticks;
}

// The y range of a chart: its values' span, padded 5%; a span within rounding of flat (a constant series
// after smoothing) is drawn as flat, padded by 5% of its level.
function yRange(y0, y1) {
  const flat = !(y1 - y0 > 1e-9 * Math.max(Math.abs(y0), Math.abs(y1)));
  const pad = flat ? Math.abs(y0) * 0.05 || 1 : (y1 - y0) * 0.05;
  return [y0 - pad, (flat ? y0 : y1) + pad];
}

function fmt(v) {
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e5 || a < 1e-3) ? v.toExponential(1) : +v.toPrecision(4) + "";
}

function svgEl(name, attrs, parent) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

// chart: {title, series: {name: [[step, value], ...]}, reference}; opts: {smoothing, log}
function drawChart(box, chart, opts) {
  box.innerHTML = "";
  const W = 460, H = 250, L = 56, R = 10, T = 22, B = 30;
  const names = Object.keys(chart.series);
  const logOk = opts.log && names.every(n => chart.series[n].every(p => p[1] > 0)) && !(chart.reference <= 0);
  const ty = v => (logOk ? Math.log10(v) : v);
  const lines = names.map(n => {
    const pts = chart.series[n];
    return { name: n, xs: pts.map(p => p[0]), raw: pts.map(p => p[1]), ys: genlabSmooth(pts.map(p => p[1]), opts.smoothing) };
  });
  const xs = lines.flatMap(l => l.xs), ys = lines.flatMap(l => l.ys.concat(l.raw)).map(ty);
  if (chart.reference !== null && chart.reference !== undefined) ys.push(ty(chart.reference));
  const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
  const [ylo, yhi] = yRange(y0, y1), xlo = x0, xhi = x1 > x0 ? x1 : x0 + 1;
  const px = x => L + ((x - xlo) / (xhi - xlo)) * (W - L - R), py = y => T + (1 - (ty(y) - ylo) / (yhi - ylo)) * (H - T - B);
  const svg = svgEl("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": chart.title }, box);
  svgEl("text", { x: L, y: 14, "font-weight": "bold" }, svg).textContent = chart.title + (logOk ? " (log scale)" : "");
  for (const t of niceTicks(ylo, yhi, 5)) {
    const y = T + (1 - (t - ylo) / (yhi - ylo)) * (H - T - B);
    svgEl("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#eee" }, svg);
    svgEl("text", { x: L - 4, y: y + 3, "text-anchor": "end" }, svg).textContent = fmt(logOk ? Math.pow(10, t) : t);
  }
  for (const t of niceTicks(xlo, xhi, 5)) {
    svgEl("text", { x: px(t), y: H - 12, "text-anchor": "middle" }, svg).textContent = fmt(t);
  }
  svgEl("text", { x: W - R, y: H - 2, "text-anchor": "end" }, svg).textContent = "step";
  svgEl("rect", { x: L, y: T, width: W - L - R, height: H - T - B, fill: "none", stroke: "#bbb" }, svg);
  if (chart.reference !== null && chart.reference !== undefined) {
    const y = py(chart.reference);
    svgEl("line", { x1: L, x2: W - R, y1: y, y2: y, stroke: "#555", "stroke-dasharray": "4 3" }, svg);
    svgEl("text", { x: W - R - 2, y: y - 3, "text-anchor": "end" }, svg).textContent = "equilibrium " + fmt(chart.reference);
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  lines.forEach((l, i) => {
    const color = PALETTE[i % PALETTE.length];
    const path = (vals) => vals.map((v, j) => `${j ? "L" : "M"}${px(l.xs[j]).toFixed(1)},${py(v).toFixed(1)}`).join("");
    if (opts.smoothing > 0) svgEl("path", { d: path(l.raw), fill: "none", stroke: color, "stroke-opacity": 0.2 }, svg);
    svgEl("path", { d: path(l.ys), fill: "none", stroke: color, "stroke-width": 1.5, "data-series": l.name }, svg);
    // A sparse series (validation once an epoch) is a line of one or a few points: mark each one, or it is invisible.
    if (l.xs.length <= SPARSE) {
      l.ys.forEach((v, j) => svgEl("circle", { cx: px(l.xs[j]).toFixed(1), cy: py(v).toFixed(1), r: 2.5, fill: color, "data-series": l.name }, svg));
    }
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${color}"></i>`;
    item.appendChild(document.createTextNode(`${l.name}: ${fmt(l.raw[l.raw.length - 1])}`));
    legend.appendChild(item);
  });
  box.appendChild(legend);
}
