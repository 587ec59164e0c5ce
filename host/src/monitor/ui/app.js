// The sluice UI: reads /api/v1/ every second (paused while the tab is hidden) and draws the
// page: the header, the charts, the batches, receivers, plugins, swaps, dead letters,
// checkpoints and ownership; `#/batch/ID` is a batch's own page (batch.js). The page keeps a
// bounded history of the batches it has seen, so its charts outlast one answer.
"use strict";

import { el, fill, fillTable, n, num, ms, uptime, bytes, clock, datetime, short, digests } from "./dom.js";
import { drawChart } from "./chart.js";
import { initControls, setPlugins } from "./controls.js";
import { showBatch } from "./batch.js";

/// How often the page asks, ms.
const POLL_MS = 1000;
/// How many batches the page keeps, and how many its charts and table show.
const KEEP = 600, CHART = 300, TABLE = 100;

const state = {
  run: null,          // "pid/started_ms" of the run the history belongs to
  batches: new Map(), // batch id → row, at most KEEP
  interval: 1000,     // batch-interval, ms
  timer: null,
  polling: false,
};

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path} answered HTTP ${r.status}`);
  return r.json();
}

/// One round: every document, each drawn as it comes; a failure is said, the rest drawn.
async function poll() {
  if (document.hidden) { fill("conn", "paused while the tab is hidden"); return; }
  const parts = {
    overview: "/api/v1/overview",
    batches: `/api/v1/batches?limit=${CHART}`,
    receivers: "/api/v1/receivers",
    plugins: "/api/v1/plugins",
    swaps: "/api/v1/swaps",
    deadLetters: "/api/v1/dead-letters",
    checkpoints: "/api/v1/checkpoints?limit=30",
  };
  const keys = Object.keys(parts);
  const got = await Promise.allSettled(keys.map((k) => get(parts[k])));
  const failed = [];
  const doc = {};
  got.forEach((g, i) => g.status === "fulfilled" ? (doc[keys[i]] = g.value) : failed.push(g.reason.message));
  const draw = [
    ["overview", drawOverview], ["batches", drawBatches], ["receivers", drawReceivers],
    ["plugins", drawPlugins], ["swaps", drawSwaps], ["deadLetters", drawDeadLetters],
    ["checkpoints", drawCheckpoints],
  ];
  for (const [k, f] of draw) {
    if (!doc[k]) continue;
    try { f(doc[k]); } catch (e) { failed.push(`drawing ${k}: ${e.message}`); }
  }
  const conn = document.getElementById("conn");
  conn.className = "conn" + (failed.length ? " bad" : "");
  fill(conn, failed.length ? `cannot read ${failed.join("; ")}` : `updated ${clock(Date.now()).slice(0, 8)}`);
}

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(loop, POLL_MS);
}

async function loop() {
  if (state.polling) return;
  state.polling = true;
  try { await poll(); } finally { state.polling = false; schedule(); }
}

function drawOverview(o) {
  const info = o.info;
  const run = `${info.pid}/${info.started_ms}`;
  if (state.run !== run) { state.run = run; state.batches.clear(); }
  state.interval = info.batch_interval_ms || 1000;
  state.ownership = o.ownership;
  document.title = `${info.pipeline} · sluice`;
  fill("pipeline", info.pipeline);
  fill("pipeline-sub", `stream ${info.stream} · ${info.source} → ${info.sinks.join(", ")} · ` +
    `${info.partitions} partitions · batch every ${ms(info.batch_interval_ms)}` + (info.wal ? " · WAL on" : ""));
  const ready = document.getElementById("ready");
  ready.className = "badge " + (o.ready === true ? "ok" : "warn");
  fill(ready, o.ready === true ? "ready" : "not ready");
  ready.title = o.ready === true ? "" : String(o.ready);
  const t = o.totals, m = o.memory;
  const items = [
    ["Uptime", uptime(o.uptime_s)],
    ["Batches", n(t.batches)],
    ["Records in", n(t.records_in)],
    ["Records out", n(t.records_out)],
    ["Input rate", num(o.input_rate, 1) + " /s"],
    ["Output rate", num(o.output_rate, 1) + " /s"],
    ["Scheduling delay", ms(o.mean_scheduling_delay_ms)],
    ["Processing", ms(o.mean_processing_ms)],
    ["Total delay", ms(o.mean_total_delay_ms)],
    ["Memory", `${bytes(m.used)} of ${bytes(m.budget)}`],
    ["Dead letters", n(t.dead_letters)],
    ["Recomputed", n(t.recomputed)],
  ];
  if (o.ready !== true) items.splice(1, 0, ["Not ready", String(o.ready)]);
  fill("summary", items.map(([k, v]) => el("div", { class: "item" }, el("dt", {}, k), el("dd", {}, v))));
  fill("footer", `sluice ${info.version} · pid ${info.pid} · ${info.workers} workers · started ${datetime(info.started_ms)} · rates and means over the last 10 batches`);
  drawOwnership(o.ownership, info);
}

function drawOwnership(own, info) {
  if (!own) {
    fill("ownership-text", `One host: this process owns all ${info.partitions} partitions ([ha] is off).`);
    return;
  }
  fill("ownership-text", `This member is `, el("code", {}, own.member), `; it owns ` +
    (own.owned.length ? `partitions ${own.owned.join(", ")}` : "no partition now") +
    ` of ${info.partitions}.`);
}

function drawBatches(doc) {
  for (const b of doc.batches) state.batches.set(b.batch, b);
  const ids = Array.from(state.batches.keys()).sort((a, b) => a - b);
  for (const id of ids.slice(0, Math.max(0, ids.length - KEEP))) state.batches.delete(id);
  const rows = ids.slice(-KEEP).map((id) => state.batches.get(id));
  const shown = rows.slice(-CHART);
  const per = state.interval / 1000;
  const series = (f) => shown.map((b) => ({ x: b.time_ms, y: f(b), batch: b.batch }));
  const charts = [
    ["input-rate", series((b) => b.records_in / per), (v) => num(v, 0) + " /s"],
    ["scheduling-delay", series((b) => b.scheduling_delay_ms), ms],
    ["processing-time", series((b) => b.processing_ms), ms],
    ["total-delay", series((b) => b.total_delay_ms), ms],
  ];
  for (const [id, pts, f] of charts) {
    drawChart("chart-" + id, pts, f);
    const ys = pts.map((p) => p.y);
    fill("stat-" + id, ys.length ? `avg ${f(ys.reduce((a, b) => a + b, 0) / ys.length)} · max ${f(Math.max(...ys))} · last ${f(ys[ys.length - 1])}` : "");
  }
  fill("chart-note", shown.length ? `last ${shown.length} batches` : "");
  fill("batches-note", `newest first · ${Math.min(TABLE, rows.length)} shown, ${rows.length} kept in this page, ${doc.kept} on the server`);
  const table = rows.slice(-TABLE).reverse().map((b) => ({ key: b.batch, cells: [
    el("a", { href: `#/batch/${b.batch}`, class: "batch-link" }, String(b.batch)),
    clock(b.time_ms),
    { v: n(b.records_in), cls: "r" },
    { v: n(b.records_out), cls: "r" },
    { v: ms(b.scheduling_delay_ms), cls: "r" },
    { v: ms(b.processing_ms), cls: "r" },
    { v: ms(b.total_delay_ms), cls: "r" },
    digests(b.plugins),
    { v: n(b.dead_letters), cls: "r" + (b.dead_letters > 0 ? " bad" : "") },
    { v: b.outcome, cls: "outcome " + b.outcome.replace(/\s+/g, "-") },
  ] }));
  fillTable("batches-table", table, "No batch has committed yet.");
}

function drawReceivers(doc) {
  fill("receivers-note", `source: ${doc.source}`);
  const rows = doc.receivers.map((r) => {
    const i = r.intake || {};
    const err = i.last_error ? `${i.last_error}` + (i.last_error_ms ? ` (at ${clock(i.last_error_ms)})` : "") : "—";
    return { key: r.partition, cells: [
      String(r.partition),
      r.owner === null ? "another member" : String(r.owner),
      { v: n(i.records), cls: "r" },
      { v: bytes(i.bytes), cls: "r" },
      { v: r.rate === null ? "—" : num(r.rate, 0) + " /s", cls: "r" },
      { v: r.lag === null ? "—" : n(r.lag), cls: "r", title: r.lag === null ? "this source does not say how far behind it is" : "" },
      { v: err, cls: i.failing ? "bad" : "" },
      r.wal ? "on" : "off",
      { v: num(i.backpressure_seconds, 2) + " s", cls: "r" },
      { v: i.held_now ? "yes" : "no", cls: i.held_now ? "warn" : "" },
    ] };
  });
  fillTable("receivers-table", rows, "No receiver in this run.");
}

function drawPlugins(doc) {
  setPlugins(doc.plugins.map((p) => p.name));
  const rows = doc.plugins.map((p) => {
    const l = p.limits || {};
    const limits = [`memory ${bytes(l.memory)}`, `time ${ms(l.time_ms)}`, l.fuel ? `fuel ${n(l.fuel)}` : null].filter(Boolean).join(" · ");
    return { key: p.name, cells: [
      el("strong", {}, p.name),
      p.kind,
      p.version || "—",
      el("code", { title: p.digest }, short(p.digest)),
      { v: n(p.calls), cls: "r" },
      { v: n(p.traps), cls: "r" + (p.traps > 0 ? " bad" : "") },
      { v: n(p.records), cls: "r" },
      { v: p.ns_per_record === null ? "—" : num(p.ns_per_record, 0), cls: "r" },
      { v: bytes(p.memory_peak_bytes), cls: "r" },
      limits,
      metrics(p.counters, p.gauges),
    ] };
  });
  fillTable("plugins-table", rows, "The run calls no plugin.");
}

/// A plugin's own counters and gauges, each as `name = value`.
function metrics(counters, gauges) {
  const items = [];
  for (const [k, v] of Object.entries(counters || {})) items.push(["counter", k, v]);
  for (const [k, v] of Object.entries(gauges || {})) items.push(["gauge", k, v]);
  if (!items.length) return el("span", { class: "note" }, "none recorded");
  return el("ul", { class: "metrics" }, items.map(([kind, k, v]) =>
    el("li", { class: "metric " + kind, "data-name": k, "data-value": String(v), title: kind },
      `${k} = ${typeof v === "number" && !Number.isInteger(v) ? num(v, 3) : String(v)}`)));
}

function drawSwaps(doc) {
  const rows = doc.swaps.map((s) => {
    const detail = {
      "rolled-back": () => `restored ${short(s.restored)}: ${s.error}`,
      "passed": () => `passed ${s.batches} trial batches`,
      "shadowed": () => `beside ${short(s.live)}: ${s.differing} of ${s.batches} batches differed` + (s.failed ? `; failed: ${s.failed}` : ""),
    }[s.event];
    return [
      el("a", { href: `#/batch/${s.batch}` }, String(s.batch)),
      clock(s.at_ms),
      { v: s.event, cls: "event " + s.event },
      s.plugin,
      el("code", { title: s.digest }, short(s.digest)),
      detail ? detail() : JSON.stringify(s),
    ];
  });
  fillTable("swaps-table", rows, "No swap in this run yet.");
}

function drawDeadLetters(doc) {
  fill("dead-letters-note", `${n(doc.total)} in this run`);
  fillTable("dead-letters-table", doc.batches.map((b) => ({ key: b.batch,
    cells: [el("a", { href: `#/batch/${b.batch}` }, String(b.batch)), { v: n(b.count), cls: "r" }] })),
  "No batch of the history has dead letters.");
  const samples = doc.samples.slice(0, 20);
  fill("dead-letter-samples", samples.length
    ? samples.map((s) => el("li", {}, el("pre", {}, typeof s === "string" ? s : JSON.stringify(s, null, 1))))
    : el("li", { class: "note" }, "none kept"));
}

function drawCheckpoints(doc) {
  fill("checkpoints-note", doc.location ? `${n(doc.written)} written to ${doc.location}` : "this run keeps no checkpoint");
  fillTable("checkpoints-table", doc.entries.map((c) => ({ key: c.batch, cells: [
    el("a", { href: `#/batch/${c.batch}` }, String(c.batch)),
    clock(c.written_ms),
    { v: ms(c.write_ms), cls: "r" },
    { v: c.outcome, cls: "outcome " + c.outcome.replace(/\s+/g, "-") },
    digests(c.plugins),
  ] })), "No checkpoint entry yet.");
}

/// Shows the view the hash names: `#/batch/ID` or the main page.
function route() {
  const m = location.hash.match(/^#\/batch\/(\d+)$/);
  document.getElementById("view-main").hidden = !!m;
  document.getElementById("view-batch").hidden = !m;
  if (m) {
    window.scrollTo(0, 0);
    showBatch(Number(m[1]), state.batches.get(Number(m[1])));
  }
}

function init() {
  for (const b of document.querySelectorAll("#nav button")) {
    b.addEventListener("click", () => {
      if (location.hash.startsWith("#/batch/")) location.hash = "#/";
      document.getElementById(b.dataset.target).scrollIntoView({ behavior: "smooth" });
    });
  }
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => { if (!document.hidden) loop(); });
  initControls(() => loop());
  route();
  loop();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
