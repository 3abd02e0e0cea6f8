// Hand-drawn SVG charts: a usage bar and a multi-series line chart. No library.

import { h } from "./dom.js";

export const PALETTE = ["#2452c8", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285"];

/** A labelled horizontal bar for a fraction 0..1 (GPU utilization or memory). */
export function meter(label, fraction, text) {
  const pct = Math.max(0, Math.min(1, fraction || 0)) * 100;
  const bar = h("div", {
    className: "meter",
    role: "meter",
    "aria-label": label,
    "aria-valuemin": 0,
    "aria-valuemax": 100,
    "aria-valuenow": Math.round(pct),
    "aria-valuetext": text,
  }, h("div", { className: `meter-fill${pct > 90 ? " hot" : ""}` }));
  bar.firstChild.style.width = `${pct}%`;
  return h("div", { className: "meter-row" },
    h("span", { className: "meter-label" }, label), bar, h("span", { className: "meter-text" }, text));
}

/**
 * Lines over a shared x axis. `series`: [{name, values: [number|null]}], `labels`: x labels.
 * `max` fixes the y range (e.g. 100 for percentages); otherwise it fits the data.
 */
export function lineChart({ title, series, labels = [], max, unit = "" }) {
  const width = 600;
  const height = 200;
  const pad = { left: 48, right: 12, top: 12, bottom: 28 };
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const top = max ?? Math.max(1, ...all) * 1.1;
  const count = Math.max(2, ...series.map((s) => s.values.length));
  const x = (i) => pad.left + (i * (width - pad.left - pad.right)) / (count - 1);
  const y = (v) => height - pad.bottom - (v / top) * (height - pad.top - pad.bottom);
  const svg = h("svg:svg", {
    viewBox: `0 0 ${width} ${height}`, className: "chart", role: "img", "aria-label": title,
  });
  for (const tick of [0, 0.5, 1]) {
    const value = top * tick;
    svg.append(
      h("svg:line", { x1: pad.left, x2: width - pad.right, y1: y(value), y2: y(value), className: "grid" }),
      h("svg:text", { x: pad.left - 6, y: y(value) + 4, "text-anchor": "end", className: "axis" },
        `${formatNumber(value)}${unit}`));
  }
  const step = Math.ceil(labels.length / 6) || 1;
  labels.forEach((label, i) => {
    if (i % step === 0) {
      svg.append(h("svg:text", { x: x(i), y: height - 8, "text-anchor": "middle", className: "axis" }, label));
    }
  });
  series.forEach((s, index) => {
    const points = s.values
      .map((v, i) => (v === null || v === undefined ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`))
      .filter(Boolean);
    const color = PALETTE[index % PALETTE.length];
    svg.append(h("svg:polyline", { points: points.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    if (points.length === 1) {
      const [px, py] = points[0].split(",");
      svg.append(h("svg:circle", { cx: px, cy: py, r: 3, fill: color }));
    }
  });
  const legend = h("ul", { className: "legend" }, series.map((s, i) => {
    const swatch = h("span", { className: "swatch" });
    swatch.style.background = PALETTE[i % PALETTE.length];
    return h("li", {}, swatch, s.name);
  }));
  return h("figure", { className: "chart-box" }, h("figcaption", {}, title), svg, legend);
}

export function formatNumber(value) {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`;
  if (value >= 1e4) return `${(value / 1e3).toFixed(0)}k`;
  return Number.isInteger(value) ? String(value) : value.toFixed(1);
}
