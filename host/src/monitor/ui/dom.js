// Small helpers shared by the page's scripts: building elements (text always goes in as text
// nodes, never as markup) and formatting numbers, durations, bytes and times for people.
"use strict";

/// An element `tag` with attributes `attrs` (`class`, `id`, `href`, `data-*`, …) and children:
/// strings become text nodes, so nothing from the API is ever parsed as HTML.
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

/// An SVG element `tag` with attributes `attrs` and children.
export function svg(tag, attrs, ...children) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(e, attrs);
  append(e, children);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "onclick") e.addEventListener("click", v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(e, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/// Replaces the children of the element with id `id` by `children`.
export function fill(id, ...children) {
  const e = typeof id === "string" ? document.getElementById(id) : id;
  if (!e) return;
  e.replaceChildren();
  append(e, children);
}

/// A table cell: text, a node, or `{v, cls, title}`.
function cell(c) {
  return (c && typeof c === "object" && !(c instanceof Node))
    ? el("td", { class: c.cls, title: c.title }, c.v)
    : el("td", {}, c);
}

/// Brings the body of the table with id `id` to `rows`, each `{key, cells}` (or an array of
/// cells, keyed by its place). A row whose key stays keeps its element, and a cell that reads
/// the same is left alone, so a row being clicked or hovered is not pulled away every second.
/// `empty` is said in one row when there are no rows.
export function fillTable(id, rows, empty) {
  const t = document.getElementById(id);
  if (!t) return;
  let body = t.querySelector("tbody");
  if (!body) body = t.appendChild(el("tbody", {}));
  if (!rows.length) {
    const cols = t.querySelectorAll("thead th").length || 1;
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: cols }, empty)));
    return;
  }
  const old = new Map();
  for (const tr of Array.from(body.children)) {
    if (tr.dataset.key !== undefined) old.set(tr.dataset.key, tr); else tr.remove();
  }
  let at = body.firstChild;
  rows.forEach((row, i) => {
    const key = String(Array.isArray(row) ? i : row.key);
    const cells = (Array.isArray(row) ? row : row.cells).map(cell);
    let tr = old.get(key);
    old.delete(key);
    if (!tr) tr = el("tr", { "data-key": key });
    cells.forEach((td, j) => {
      const have = tr.children[j];
      if (!have) tr.appendChild(td);
      else if (have.outerHTML !== td.outerHTML) have.replaceWith(td);
    });
    while (tr.children.length > cells.length) tr.lastChild.remove();
    if (tr !== at) body.insertBefore(tr, at); else at = at.nextSibling;
  });
  for (const tr of old.values()) tr.remove();
}

const int = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

/// An integer with thousands separators; "—" for none.
export function n(v) {
  return v === null || v === undefined || Number.isNaN(v) ? "—" : int.format(v);
}

/// A number with at most `digits` significant decimals.
export function num(v, digits = 1) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits });
}

/// Milliseconds as a person reads them: "0.4 ms", "12 ms", "1.25 s", "2 min 5 s".
export function ms(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  if (v < 10) return num(v, 1) + " ms";
  if (v < 1000) return num(v, 0) + " ms";
  if (v < 60000) return num(v / 1000, 2) + " s";
  return Math.floor(v / 60000) + " min " + Math.round((v % 60000) / 1000) + " s";
}

/// Seconds of uptime as "1 h 02 min", "3 min 04 s", "12 s".
export function uptime(s) {
  s = Math.floor(s || 0);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const two = (x) => String(x).padStart(2, "0");
  if (h > 0) return `${h} h ${two(m)} min`;
  if (m > 0) return `${m} min ${two(sec)} s`;
  return `${sec} s`;
}

/// Bytes as "512 B", "1.5 KiB", "64 MiB".
export function bytes(v) {
  if (v === null || v === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return num(v, i === 0 ? 0 : 1) + " " + units[i];
}

/// A time (ms since the epoch) as local "HH:MM:SS.mmm".
export function clock(t) {
  if (!t) return "—";
  const d = new Date(t);
  const two = (x) => String(x).padStart(2, "0");
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.` +
    String(d.getMilliseconds()).padStart(3, "0");
}

/// A time as local date and time.
export function datetime(t) {
  if (!t) return "—";
  return new Date(t).toLocaleString("en-GB", { hour12: false });
}

/// The first 12 hex digits of a sha256 (the digests the API gives are full or already short).
export function short(digest) {
  return digest ? String(digest).slice(0, 12) : "—";
}

/// `name digest` pairs of a batch's plugins.
export function digests(plugins) {
  const names = Object.keys(plugins || {});
  if (!names.length) return "—";
  return el("span", { class: "digests" }, names.map((k) =>
    el("span", { class: "digest", title: `${k} sha256 ${plugins[k]}…` }, k + " ", el("code", {}, short(plugins[k])))));
}
