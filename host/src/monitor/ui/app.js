// The sluice UI: reads /api/v1/ and draws the page. (A first version; see README "Web UI".)
"use strict";
async function refresh() {
  const r = await fetch("/api/v1/overview");
  const o = await r.json();
  document.getElementById("pipeline").textContent = o.info.pipeline;
  document.getElementById("main").textContent = o.totals.batches + " batches";
}
refresh();
setInterval(refresh, 1000);
