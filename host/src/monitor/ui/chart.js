// Line charts over time, drawn as SVG by hand: one series per chart, an axis of values on the
// left with three grid lines, times below, and a marker that follows the pointer and names the
// batch under it (a click opens that batch).
"use strict";

import { svg, clock } from "./dom.js";

const W = 560, H = 170;
const M = { left: 64, right: 12, top: 10, bottom: 24 };

/// Draws `points` (`[{x: ms since the epoch, y, batch}]`, oldest first) into the `<svg>` with
/// id `id`, values formatted by `format`. Sets `data-points` to the number of points drawn.
export function drawChart(id, points, format) {
  const root = document.getElementById(id);
  if (!root) return;
  root.setAttribute("viewBox", `0 0 ${W} ${H}`);
  root.setAttribute("data-points", String(points.length));
  root._points = points;
  root._format = format;
  const pw = W - M.left - M.right, ph = H - M.top - M.bottom;
  const children = [svg("rect", { class: "plot", x: M.left, y: M.top, width: pw, height: ph })];
  if (points.length === 0) {
    children.push(svg("text", { class: "nodata", x: M.left + pw / 2, y: M.top + ph / 2,
      "text-anchor": "middle" }, "waiting for batches…"));
    children.push(svg("path", { class: "series", d: "" }));
    root.replaceChildren(...children);
    return;
  }
  const x0 = points[0].x, x1 = Math.max(points[points.length - 1].x, x0 + 1);
  const ymax = niceMax(Math.max(...points.map((p) => p.y)));
  const sx = (x) => M.left + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y) => M.top + ph - (y / ymax) * ph;
  root._scale = { sx, sy };
  for (const f of [0, 0.5, 1]) {
    const y = sy(ymax * f);
    children.push(svg("line", { class: "grid", x1: M.left, x2: M.left + pw, y1: y, y2: y }));
    children.push(svg("text", { class: "tick", x: M.left - 6, y: y + 4, "text-anchor": "end" },
      format(ymax * f)));
  }
  children.push(svg("text", { class: "tick", x: M.left, y: H - 6, "text-anchor": "start" }, clock(x0).slice(0, 8)));
  children.push(svg("text", { class: "tick", x: M.left + pw, y: H - 6, "text-anchor": "end" }, clock(x1).slice(0, 8)));
  const d = points.map((p, i) => `${i ? "L" : "M"}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ");
  if (points.length > 1) {
    const area = `${d} L${sx(points[points.length - 1].x).toFixed(1)},${M.top + ph} L${sx(x0).toFixed(1)},${M.top + ph} Z`;
    children.push(svg("path", { class: "area", d: area }));
  }
  children.push(svg("path", { class: "series", d }));
  const last = points[points.length - 1];
  children.push(svg("circle", { class: "last", cx: sx(last.x), cy: sy(last.y), r: 2.5 }));
  root._hover = svg("g", { class: "hover", visibility: "hidden" },
    svg("line", { class: "cursor", y1: M.top, y2: M.top + ph }),
    svg("circle", { r: 3.5 }),
    svg("text", { class: "hover-label", y: M.top + 12 }));
  children.push(root._hover);
  root.replaceChildren(...children);
  if (!root._wired) wire(root);
}

/// The number of points in the path `d` of a series (what a test compares with `data-points`).
export function pathPoints(d) {
  return (d.match(/[ML]/g) || []).length;
}

function wire(root) {
  root._wired = true;
  const nearest = (ev) => {
    const pts = root._points;
    if (!pts || !pts.length || !root._scale) return null;
    const ctm = root.getScreenCTM();
    if (!ctm) return null;
    const x = (ev.clientX - ctm.e) / ctm.a;
    let best = pts[0], dist = Infinity;
    for (const p of pts) {
      const d = Math.abs(root._scale.sx(p.x) - x);
      if (d < dist) { dist = d; best = p; }
    }
    return best;
  };
  root.addEventListener("mousemove", (ev) => {
    const p = nearest(ev);
    const g = root._hover;
    if (!p || !g) return;
    const { sx, sy } = root._scale;
    const [line, dot, label] = g.children;
    line.setAttribute("x1", sx(p.x)); line.setAttribute("x2", sx(p.x));
    dot.setAttribute("cx", sx(p.x)); dot.setAttribute("cy", sy(p.y));
    const right = sx(p.x) > W / 2;
    label.setAttribute("x", sx(p.x) + (right ? -6 : 6));
    label.setAttribute("text-anchor", right ? "end" : "start");
    label.textContent = `batch ${p.batch} · ${clock(p.x)} · ${root._format(p.y)}`;
    g.setAttribute("visibility", "visible");
  });
  root.addEventListener("mouseleave", () => root._hover && root._hover.setAttribute("visibility", "hidden"));
  root.addEventListener("click", (ev) => {
    const p = nearest(ev);
    if (p) location.hash = `#/batch/${p.batch}`;
  });
}

/// A round upper bound at or above `v` (1, 2, 2.5, 5 times a power of ten).
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}
