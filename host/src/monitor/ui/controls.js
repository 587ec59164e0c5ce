// The swap, shadow, promote and roll-back controls (S7). They call the admin routes, which need the
// pipeline's token: the user types it, it is kept in this tab's sessionStorage only (never in
// localStorage, a cookie or the URL) and sent as `Authorization: Bearer`. Without it the
// controls are disabled and say why; whatever the server answers (401 included) is shown.
"use strict";

import { el, fill } from "./dom.js";

const KEY = "sluice-admin-token";
let onChange = () => {};

function token() {
  try { return sessionStorage.getItem(KEY) || ""; } catch { return ""; }
}

function $(id) { return document.getElementById(id); }

/// Wires the controls; `changed` is called after a control changed something (to refresh).
export function initControls(changed) {
  onChange = changed;
  $("token").value = token();
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    try {
      if (t) sessionStorage.setItem(KEY, t); else sessionStorage.removeItem(KEY);
    } catch { /* storage off: the token lives in the field only */ }
    update();
  });
  $("token-forget").addEventListener("click", () => {
    try { sessionStorage.removeItem(KEY); } catch { /* nothing kept */ }
    $("token").value = "";
    update();
  });
  $("control-file").addEventListener("change", update);
  $("control-plugin").addEventListener("change", update);
  $("swap-button").addEventListener("click", () => offer("swap"));
  $("shadow-button").addEventListener("click", () => offer("shadow"));
  $("promote-button").addEventListener("click", () =>
    call("POST", "promote", null, `promote the shadowed candidate of ${plugin()}`));
  $("rollback-button").addEventListener("click", () =>
    call("POST", "rollback", null, `roll ${plugin()} back to the version live before`));
  $("shadow-report-button").addEventListener("click", () =>
    call("GET", "shadow", null, `the shadow report of ${plugin()}`));
  update();
}

/// Keeps the plugin choice in step with the plugins the run calls now.
export function setPlugins(names) {
  const select = $("control-plugin");
  const current = select.value;
  const have = Array.from(select.options).map((o) => o.value);
  if (have.join("\n") === names.join("\n")) return;
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  if (names.includes(current)) select.value = current;
  update();
}

function plugin() { return $("control-plugin").value; }

/// Enables what can be used now and says why the rest cannot.
function update() {
  const has = token() !== "";
  const file = $("control-file").files.length > 0;
  const named = plugin() !== "";
  $("token-state").textContent = has ? "a token is set for this tab" : "no token";
  for (const id of ["promote-button", "rollback-button", "shadow-report-button"]) $(id).disabled = !has || !named;
  for (const id of ["swap-button", "shadow-button"]) $(id).disabled = !has || !file || !named;
  let why = "";
  if (!has) why = "Disabled: these controls need the pipeline's admin token (the `token` of " +
    "<checkpoint dir>/admin.json, or the `[admin] token-file`). Type it above; it is kept in this tab only.";
  else if (!named) why = "Disabled: the run has no plugin to swap.";
  else if (!file) why = "Choose a .wasm component to swap or shadow; promote, roll back and the shadow report need none.";
  $("control-reason").textContent = why;
}

async function offer(kind) {
  const file = $("control-file").files[0];
  const manifestFile = $("control-manifest").files[0];
  if (!file) return;
  const body = {
    wasm_base64: base64(new Uint8Array(await file.arrayBuffer())),
    manifest: manifestFile ? await manifestFile.text() : null,
    params: null,
  };
  if (kind === "shadow") body.batches = Math.max(1, parseInt($("shadow-batches").value, 10) || 5);
  const what = kind === "swap" ? `swap ${plugin()} to ${file.name}` : `shadow ${file.name} beside ${plugin()}`;
  await call("POST", kind, body, what);
}

/// Calls `method /v1/plugins/{plugin}/{action}` with the token and shows the answer.
async function call(method, action, body, what) {
  const name = plugin();
  const out = $("control-result");
  out.className = "result pending";
  fill(out, `${what}: waiting for the pipeline…`);
  const headers = { Authorization: "Bearer " + token() };
  if (body) headers["Content-Type"] = "application/json";
  try {
    const r = await fetch(`/v1/plugins/${encodeURIComponent(name)}/${action}`, {
      method, headers, body: body ? JSON.stringify(body) : undefined, cache: "no-store",
    });
    const text = await r.text();
    let shown = text;
    try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON: as is */ }
    const said = r.status === 401 ? "the pipeline refused the token" : r.statusText;
    out.className = "result " + (r.ok ? "ok" : "failed");
    out.setAttribute("data-status", String(r.status));
    fill(out, `${what}: HTTP ${r.status} ${said}\n${shown}`);
    onChange();
  } catch (e) {
    out.className = "result failed";
    out.setAttribute("data-status", "0");
    fill(out, `${what}: the pipeline cannot be reached: ${e}`);
  }
}

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
