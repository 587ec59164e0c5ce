// A batch's own page (`#/batch/ID`): its times and counts, the offsets it took per partition,
// the plugin versions it ran, its swap events and its latency markers.
"use strict";

import { el, fill, n, ms, clock, datetime, digests, short } from "./dom.js";

let asked = 0;

/// Shows batch `id`: at once from `known` (the page's own copy) when it has one, then as
/// `/api/v1/batches/{id}` answers.
export async function showBatch(id, known) {
  const ticket = ++asked;
  fill("batch-title", `Batch ${id}`);
  const detail = document.getElementById("batch-detail");
  detail.removeAttribute("data-batch");
  if (known) draw(known);
  else fill(detail, el("p", { class: "note" }, "loading…"));
  try {
    const r = await fetch(`/api/v1/batches/${id}`, { cache: "no-store" });
    const body = await r.json();
    if (ticket !== asked) return;
    if (!r.ok) {
      if (!known) fill(detail, el("p", { class: "bad" }, body.error || `HTTP ${r.status}`));
      return;
    }
    draw(body);
  } catch (e) {
    if (ticket === asked && !known) fill(detail, el("p", { class: "bad" }, `the pipeline cannot be reached: ${e}`));
  }
}

function draw(b) {
  const detail = document.getElementById("batch-detail");
  const kv = [
    ["Batch time", `${datetime(b.time_ms)} (${clock(b.time_ms)})`],
    ["Committed", clock(b.done_ms)],
    ["Outcome", b.outcome],
    ["Records in", n(b.records_in)],
    ["Records out", n(b.records_out)],
    ["Dead letters", n(b.dead_letters)],
    ["Scheduling delay", ms(b.scheduling_delay_ms)],
    ["Processing", ms(b.processing_ms)],
    ["Total delay", ms(b.total_delay_ms)],
    ["Checkpoint write", ms(b.checkpoint_ms)],
    ["Redeliveries", n(b.redeliveries)],
    ["Duplicates dropped", n(b.duplicates_dropped)],
    ["Plugins", digests(b.plugins)],
  ];
  const parts = b.partitions.map(([s, e], p) => el("tr", {},
    el("td", {}, String(p)), el("td", { class: "r" }, n(s)), el("td", { class: "r" }, n(e)),
    el("td", { class: "r" }, n(e - s))));
  const plugins = Object.entries(b.plugins || {}).map(([k, v]) =>
    el("tr", {}, el("td", {}, k), el("td", {}, el("code", {}, v))));
  const events = (b.events || []).map((e) => el("tr", {},
    el("td", {}, e.event), el("td", {}, e.plugin), el("td", {}, el("code", { title: e.digest }, short(e.digest))),
    el("td", {}, Object.entries(e).filter(([k]) => !["event", "plugin", "digest"].includes(k))
      .map(([k, v]) => `${k} = ${v}`).join(" · "))));
  const lat = b.marker_latency_ms || [];
  const latText = lat.length
    ? `${lat.length} markers: min ${ms(Math.min(...lat))}, mean ${ms(lat.reduce((a, c) => a + c, 0) / lat.length)}, max ${ms(Math.max(...lat))}`
    : "No latency marker came through this batch.";
  fill(detail,
    el("dl", { class: "kv" }, kv.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, v)))),
    el("h3", {}, "Per partition"),
    el("table", { id: "batch-partitions" },
      el("thead", {}, el("tr", {}, el("th", {}, "Partition"), el("th", { class: "r" }, "Start offset"),
        el("th", { class: "r" }, "End offset"), el("th", { class: "r" }, "Records"))),
      el("tbody", {}, parts.length ? parts : el("tr", {}, el("td", { colspan: 4 }, "none")))),
    el("h3", {}, "Plugin versions"),
    el("table", { id: "batch-plugins" },
      el("thead", {}, el("tr", {}, el("th", {}, "Plugin"), el("th", {}, "sha256 (first 12 hex digits)"))),
      el("tbody", {}, plugins.length ? plugins : el("tr", {}, el("td", { colspan: 2 }, "none")))),
    el("h3", {}, "Swap events"),
    events.length
      ? el("table", { id: "batch-events" }, el("thead", {}, el("tr", {}, el("th", {}, "Event"), el("th", {}, "Plugin"),
        el("th", {}, "Version"), el("th", {}, "Detail"))), el("tbody", {}, events))
      : el("p", { class: "note" }, "None in this batch."),
    el("h3", {}, "Latency markers"),
    el("p", {}, latText),
    lat.length ? el("p", { class: "note" }, lat.slice(0, 50).map((v) => ms(v)).join(", ") + (lat.length > 50 ? ", …" : "")) : null);
  detail.setAttribute("data-batch", String(b.batch));
}
