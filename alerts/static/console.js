// logiwatch CS console: one page over the JSON API (see /api/openapi.json), no build step,
// nothing loaded from outside the service. Alert text is always set with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
// At most one refresh per MIN_REFRESH_MS however fast alerts arrive (the rest are coalesced).
const MIN_REFRESH_MS = 1500;
const TYPES = ["late_dispatch", "pickup_timeout", "stall", "abnormal_segment", "misroute", "contradiction",
  "likely_lost", "suspicious_delivery", "predicted_late"];
const state = { page: "queue", offset: 0, limit: 50, total: 0, items: [], focus: 0, selected: new Set(),
  filters: null, focusId: null, wb: null, incident: null, incidentOffset: 0, faAlert: null, queueSeq: 0,
  live: { source: null, events: 0, lastRefresh: 0, pending: null } };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function td(text, cls) { return el("td", text, cls); }
function yuan(v) { return (v == null ? 0 : Number(v)).toFixed(2); }
function iso(ms) { return ms == null ? "" : new Date(ms).toISOString().replace(".000Z", "Z"); }
function say(text) { $("status").textContent = text; }
function fail(text) { $("error").textContent = text || ""; }

async function getJSON(url) {
  const resp = await fetch(url);
  const data = await resp.json();
  if (!resp.ok) throw new Error(data.error || resp.status);
  return data;
}

async function post(url, body) {
  const resp = await fetch(url, {
    method: "POST",
    headers: { "Authorization": "Bearer " + $("token").value, "Content-Type": "application/json" },
    body: JSON.stringify({ by: $("agent").value || "console", ...body }),
  });
  const data = await resp.json();
  fail(resp.ok ? "" : data.error);
  return resp.ok ? data : null;
}

// ------------------------------------------------------------------ routing

function route() {
  const parts = (location.hash || "#/queue").slice(2).split("/");
  const page = ["queue", "parcel", "incidents", "incident", "liability"].includes(parts[0]) ? parts[0] : "queue";
  state.page = page === "incident" ? "incidents" : page;
  for (const p of ["queue", "parcel", "incidents", "liability"]) {
    $("page-" + p).hidden = p !== state.page;
    const nav = $("nav-" + p);
    if (nav && p === state.page) nav.setAttribute("aria-current", "page");
    else if (nav) nav.removeAttribute("aria-current");
  }
  if (page === "parcel") { state.wb = decodeURIComponent(parts.slice(1).join("/")); return loadParcel(); }
  if (page === "incident") { state.incident = decodeURIComponent(parts[1] || ""); state.incidentOffset = 0; return loadIncidents(); }
  if (page === "incidents") { state.incident = null; return loadIncidents(); }
  if (page === "liability") return loadLiability();
  return loadQueue();
}

async function refresh() {
  try {
    await route();
    say("updated " + new Date().toISOString().slice(11, 19) + " UTC");
    document.body.dataset.loaded = "true";
  } catch (e) {
    say("cannot reach the alert service: " + e.message);
  }
}

// ------------------------------------------------------------------ queue

// The filters as last applied (submit, a select change, a chip): polling reuses them, so a
// half-typed search does not change the page under the agent.
function applyFilters() {
  state.filters = readFilters();
  state.offset = 0;
  state.focus = 0;
  state.focusId = null;
  return refresh();
}

function queueParams() {
  const p = new URLSearchParams(state.filters || readFilters());
  p.set("offset", String(state.offset));
  p.set("limit", String(state.limit));
  return p;
}

function readFilters() {
  const p = new URLSearchParams();
  for (const name of ["q", "type", "severity", "state", "merchant", "carrier", "region", "hub", "sort"]) {
    const v = $("f-" + name).value.trim();
    if (v) p.set(name, v);
  }
  const h = parseFloat($("f-min-age").value);
  if (h > 0) p.set("min_age_s", String(Math.round(h * 3600)));
  return p.toString();
}

async function loadQueue() {
  // only the newest request renders: an older one answered late (say the reload after a
  // selection, overtaken by the reload after a bulk acknowledge) would show stale states
  const seq = ++state.queueSeq;
  const data = await getJSON("/api/queue?" + queueParams());
  if (seq !== state.queueSeq) return;
  state.items = data.items;
  state.total = data.total;
  if (state.offset > 0 && state.offset >= data.total) { state.offset = Math.max(0, data.total - state.limit); return loadQueue(); }
  // the focused alert keeps the focus when an update moves it (else the same row number)
  const kept = data.items.findIndex((r) => r.alert.alert_id === state.focusId);
  state.focus = kept >= 0 ? kept : Math.min(state.focus, Math.max(0, data.items.length - 1));
  $("queue-total").textContent = data.total;
  const chips = [];
  for (const [group, counts] of [["severity", data.counts.severity], ["type", data.counts.type]]) {
    for (const [k, n] of Object.entries(counts)) if (n) {
      const b = el("button", `${k}: ${n}`, "chip");
      b.type = "button";
      b.dataset.filter = group; b.dataset.value = k;
      b.setAttribute("aria-label", `show only ${k} (${n} open)`);
      b.addEventListener("click", () => { $("f-" + group).value = k; applyFilters(); });
      chips.push(b);
    }
  }
  $("counts").replaceChildren(...chips);
  const rows = data.items.map((rec, i) => queueRow(rec, i));
  $("queue").querySelector("tbody").replaceChildren(...rows);
  const first = data.total ? state.offset + 1 : 0;
  $("page-info").textContent = `rows ${first}–${state.offset + data.items.length} of ${data.total}`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + state.limit >= data.total;
  updateSelected();
  paintFocus();
}

function queueRow(rec, i) {
  const a = rec.alert;
  const tr = el("tr", null, rec.state);
  tr.dataset.alertId = a.alert_id;
  tr.dataset.index = String(i);
  const sel = el("td");
  const box = el("input");
  box.type = "checkbox";
  box.checked = state.selected.has(a.alert_id);
  box.setAttribute("aria-label", `select ${a.alert_type} alert for ${a.waybill_id || a.alert_id}`);
  box.addEventListener("change", () => { toggle(a.alert_id, box.checked); });
  sel.appendChild(box);
  tr.appendChild(sel);
  tr.appendChild(td(a.severity, a.severity));
  tr.appendChild(td(a.alert_type));
  const wb = el("td");
  const link = el("a", a.waybill_id || "");
  link.href = "#/parcel/" + encodeURIComponent(a.waybill_id || "");
  wb.appendChild(link);
  tr.appendChild(wb);
  tr.appendChild(td(rec.evidence_words || a.summary));
  tr.appendChild(td(`${a.merchant_id || ""} / ${a.carrier_id || ""}`));
  tr.appendChild(td(a.node_id || ""));
  tr.appendChild(td(a.order_amount == null ? "" : yuan(a.order_amount), "num"));
  tr.appendChild(td(rec.state, "state"));
  tr.appendChild(actionCell(a, rec));
  tr.addEventListener("click", (ev) => { if (ev.target.tagName === "TD") { state.focus = i; paintFocus(); } });
  return tr;
}

function actionCell(a, rec) {
  const cell = el("td");
  for (const [label, action] of [["Acknowledge", "ack"], ["Resolve", "resolve"]]) {
    const b = el("button", label);
    b.type = "button";
    b.dataset.action = action;
    b.setAttribute("aria-label", `${label} ${a.alert_type} alert for ${a.waybill_id || a.alert_id}`);
    if (action === "ack" && rec.state !== "open") b.disabled = true;
    b.addEventListener("click", () => act(a.alert_id, action));
    cell.appendChild(b);
  }
  return cell;
}

function toggle(id, on) {
  if (on) state.selected.add(id); else state.selected.delete(id);
  updateSelected();
}
function updateSelected() {
  $("selected-count").textContent = state.selected.size;
  $("bulk-ack").disabled = state.selected.size === 0;
}
function paintFocus() {
  const rec = state.items[state.focus];
  state.focusId = rec ? rec.alert.alert_id : null;
  for (const tr of $("queue").querySelectorAll("tbody tr")) tr.classList.toggle("focused", Number(tr.dataset.index) === state.focus);
}

async function act(alertId, action) {
  // POST /api/alerts/{id}/{ack|resolve} with the bearer token
  if (await post(`/api/alerts/${encodeURIComponent(alertId)}/${action}`, {})) await refresh();
}

async function bulkAck() {
  const ids = [...state.selected];
  const done = await post("/api/queue/ack", { alert_ids: ids });
  if (done) { state.selected.clear(); say(`acknowledged ${done.acknowledged.length}`); await refresh(); }
}

// ------------------------------------------------------------------ parcel

async function loadParcel() {
  const wb = state.wb;
  const data = await getJSON("/api/parcels/" + encodeURIComponent(wb));
  if (state.wb !== wb) return;
  $("parcel-wb").textContent = wb;
  const pr = data.promise;
  $("parcel-promise").textContent = pr.promised
    ? `Promised by ${pr.promised}` + (pr.predicted_arrival ? `; predicted ${pr.predicted_arrival} (${(pr.predicted_lateness_s / 3600).toFixed(1)} h late)` : "")
    : "No delivery promise on record.";
  $("parcel-alerts").querySelector("tbody").replaceChildren(...data.alerts.map((rec) => {
    const a = rec.alert;
    const tr = el("tr", null, rec.state);
    tr.dataset.alertId = a.alert_id;
    tr.append(td(a.alert_type), td(a.severity, a.severity), td(rec.evidence_words), td(rec.state + (rec.false_alarm ? " (false alarm)" : "")));
    const cell = actionCell(a, rec);
    const fa = el("button", "False alarm…");
    fa.type = "button";
    fa.dataset.action = "false-alarm";
    fa.disabled = rec.false_alarm;
    fa.setAttribute("aria-label", `mark the ${a.alert_type} alert a false alarm`);
    fa.addEventListener("click", () => openFalseAlarm(a.alert_id));
    cell.appendChild(fa);
    tr.appendChild(cell);
    return tr;
  }));
  const sc = data.scans;
  $("parcel-scans-note").textContent = sc.in_state ? `${sc.scans.length} scan(s), from the worker's state.` + (sc.note ? " " + sc.note : "") : sc.note;
  $("parcel-scans").hidden = !sc.in_state;
  $("parcel-scans").querySelector("tbody").replaceChildren(...sc.scans.map((s) => {
    const tr = el("tr");
    tr.append(td(s.at), td(s.node_id), td(s.region), td(s.detail));
    return tr;
  }));
  $("parcel-timeline").querySelector("tbody").replaceChildren(...data.timeline.map((t) => {
    const tr = el("tr", null, "t-" + t.kind);
    tr.append(td(t.at), td(t.what), td(t.detail));
    return tr;
  }));
  $("parcel-deliveries").querySelector("tbody").replaceChildren(...data.deliveries.map((n) => {
    const tr = el("tr");
    const kind = n.kind.event + (n.kind.severity ? " " + n.kind.severity : "") + (n.kind.revision != null ? " (revision " + n.kind.revision + ")" : "");
    tr.append(td(n.receiver), td(kind), td(n.delivered_ms ? "delivered " + iso(n.delivered_ms) : (n.last_error || "pending")), td(n.attempts, "num"), td(n.nid));
    return tr;
  }));
  $("parcel-ledger").querySelector("tbody").replaceChildren(...data.liability_lines.map((l) => {
    const tr = el("tr", null, l.kind);
    tr.dataset.entryId = l.entry_id;
    tr.append(td(l.at), td(l.kind), td(l.party), td(yuan(l.amount_yuan), "num amount"), td(`${l.rule_id} (${l.rule_version})`), td(l.reason), td(yuan(l.balance_yuan), "num balance"));
    return tr;
  }));
}

function openFalseAlarm(alertId) {
  state.faAlert = alertId;
  $("fa-alert").textContent = alertId;
  $("false-alarm-form").hidden = false;
  $("fa-reason").focus();
}

async function submitFalseAlarm(ev) {
  ev.preventDefault();
  const reason = $("fa-reason").value.trim();
  if (!reason) { fail("say why it is a false alarm"); return; }
  const done = await post(`/api/alerts/${encodeURIComponent(state.faAlert)}/false-alarm`, { note: reason });
  if (done) {
    $("false-alarm-form").hidden = true;
    $("fa-reason").value = "";
    say(done.recorded ? `marked; ${done.reversals.length} reversal(s) booked` : "already marked");
    await refresh();
  }
}

// ------------------------------------------------------------------ incidents

async function loadIncidents() {
  const data = await getJSON("/api/incidents?include=recent");
  $("incident-count").textContent = data.incidents.filter((r) => r.state !== "resolved").length;
  $("incidents").querySelector("tbody").replaceChildren(...data.incidents.map((rec) => {
    const a = rec.alert;
    const tr = el("tr", null, rec.state);
    tr.dataset.alertId = a.alert_id;
    const hub = el("td");
    const link = el("a", a.node_id || a.alert_id);
    link.href = "#/incident/" + encodeURIComponent(a.alert_id);
    hub.appendChild(link);
    tr.append(hub, td(`${iso(a.window_start || a.onset_at)} – ${a.status === "resolved" ? iso(a.window_end || a.detected_at) : "now"}`),
      td(a.severity, a.severity), td(rec.parcel_count, "num"), td(rec.evidence_words), td(rec.state, "state"));
    return tr;
  }));
  $("incident-detail").hidden = !state.incident;
  if (!state.incident) return;
  const id = state.incident;
  const inc = await getJSON(`/api/incidents/${encodeURIComponent(id)}?offset=${state.incidentOffset}&limit=100`);
  $("incident-title").textContent = `${inc.alert.node_id}: ${inc.alert.summary}`;
  $("incident-summary").textContent = `${inc.evidence_words}. ${inc.inhibited_count} stall alert(s) inhibited.`;
  const chart = $("incident-chart");
  const src = `/api/incidents/${encodeURIComponent(id)}/chart.svg?n=${inc.series.length}`;
  if (chart.getAttribute("src") !== src) chart.src = src;
  chart.alt = `backlog at ${inc.alert.node_id} over ${inc.series.length} revision(s)`;
  $("incident-money").textContent = `Liability moved to the platform because of it: ${yuan(inc.liability_to_platform_yuan)} yuan.`;
  $("incident-parcel-total").textContent = inc.parcels.total;
  $("incident-parcels").replaceChildren(...inc.parcels.waybills.map((wb) => {
    const li = el("li");
    const a = el("a", wb);
    a.href = "#/parcel/" + encodeURIComponent(wb);
    li.appendChild(a);
    return li;
  }));
  $("incident-prev").disabled = state.incidentOffset === 0;
  $("incident-next").disabled = state.incidentOffset + 100 >= inc.parcels.total;
}

// ------------------------------------------------------------------ liability

function period() {
  const p = new URLSearchParams();
  if ($("l-since").value.trim()) p.set("since", $("l-since").value.trim());
  if ($("l-until").value.trim()) p.set("until", $("l-until").value.trim());
  return p;
}

function totalsRows(rows) {
  return rows.map((r) => {
    const tr = el("tr");
    tr.dataset.name = r.name;
    tr.append(td(r.name), td(yuan(r.charged), "num"), td(yuan(r.reattributed), "num"), td(yuan(r.reversed), "num"), td(yuan(r.net), "num net"));
    return tr;
  });
}

async function loadLiability() {
  const p = period();
  const rep = await getJSON("/api/liability/report?" + p);
  $("l-net").textContent = yuan(rep.net_yuan);
  $("l-entries").textContent = rep.entries;
  $("l-party").querySelector("tbody").replaceChildren(...totalsRows(rep.by_party));
  $("l-rule").querySelector("tbody").replaceChildren(...totalsRows(rep.by_rule));
  const stamp = `&n=${rep.entries}`;
  for (const [img, by] of [["l-chart-party", "party"], ["l-chart-rule", "rule"]]) {
    const src = `/api/liability/chart.svg?by=${by}&${p}${stamp}`;
    if ($(img).getAttribute("src") !== src) $(img).src = src;
  }
  $("l-csv").href = "/api/liability/entries.csv?" + p;
  const fb = await getJSON("/api/feedback");
  $("feedback").textContent = Object.entries(fb.false_alarms_by_detector).map(([k, n]) => `${k} ${n}`).join(", ") || "none";
}

// ------------------------------------------------------------------ keys and wiring

function onKey(ev) {
  const t = ev.target;
  if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) {
    if (ev.key === "Escape") t.blur();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  if (ev.key === "/") { ev.preventDefault(); location.hash = "#/queue"; $("f-q").focus(); return; }
  if (ev.key === "g") { location.hash = "#/queue"; return; }
  if (state.page !== "queue") return;
  const rec = state.items[state.focus];
  const k = ev.key;
  if (k === "j" || k === "ArrowDown") { state.focus = Math.min(state.focus + 1, state.items.length - 1); paintFocus(); ev.preventDefault(); }
  else if (k === "k" || k === "ArrowUp") { state.focus = Math.max(state.focus - 1, 0); paintFocus(); ev.preventDefault(); }
  else if (k === "x" && rec) { toggle(rec.alert.alert_id, !state.selected.has(rec.alert.alert_id)); loadQueue(); }
  else if (k === "a" && rec) { state.selected.size ? bulkAck() : act(rec.alert.alert_id, "ack"); }
  else if (k === "r" && rec) { act(rec.alert.alert_id, "resolve"); }
  else if ((k === "o" || k === "Enter") && rec && rec.alert.waybill_id) { location.hash = "#/parcel/" + encodeURIComponent(rec.alert.waybill_id); }
  else if (k === "n" && !$("next").disabled) { state.offset += state.limit; refresh(); }
  else if (k === "p" && !$("prev").disabled) { state.offset = Math.max(0, state.offset - state.limit); refresh(); }
}

function init() {
  const typeSel = $("f-type");
  for (const t of TYPES) typeSel.appendChild(el("option", t));
  $("token").value = localStorage.getItem("logiwatch-token") || "";
  $("agent").value = localStorage.getItem("logiwatch-agent") || "";
  $("token").addEventListener("change", () => localStorage.setItem("logiwatch-token", $("token").value));
  $("agent").addEventListener("change", () => localStorage.setItem("logiwatch-agent", $("agent").value));
  $("filters").addEventListener("submit", (ev) => { ev.preventDefault(); applyFilters(); });
  $("filters").addEventListener("change", (ev) => { if (ev.target.tagName === "SELECT") applyFilters(); });
  $("f-clear").addEventListener("click", () => { setTimeout(applyFilters, 0); });
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - state.limit); refresh(); });
  $("next").addEventListener("click", () => { state.offset += state.limit; refresh(); });
  $("bulk-ack").addEventListener("click", bulkAck);
  $("false-alarm-form").addEventListener("submit", submitFalseAlarm);
  $("fa-cancel").addEventListener("click", () => { $("false-alarm-form").hidden = true; });
  $("period").addEventListener("submit", (ev) => { ev.preventDefault(); refresh(); });
  $("incident-prev").addEventListener("click", () => { state.incidentOffset = Math.max(0, state.incidentOffset - 100); refresh(); });
  $("incident-next").addEventListener("click", () => { state.incidentOffset += 100; refresh(); });
  document.addEventListener("keydown", onKey);
  window.addEventListener("hashchange", () => { state.focus = 0; refresh(); });
  refresh();
  listen();
}

// Live updates by server-sent events (/api/events): on "changed" the page the agent is on is
// read again with the filters as last applied, the page, the selection and the focused row.
function listen() {
  const live = state.live;
  const source = new EventSource("/api/events");
  live.source = source;
  source.addEventListener("hello", () => { $("live").textContent = "live"; document.body.dataset.live = "true"; });
  source.addEventListener("changed", () => {
    live.events += 1;
    document.body.dataset.liveEvents = String(live.events);
    liveRefresh();
  });
  source.addEventListener("error", () => { $("live").textContent = "reconnecting…"; document.body.dataset.live = "false"; });
}

function liveRefresh() {
  const live = state.live;
  if (live.pending) return;
  const wait = Math.max(0, live.lastRefresh + MIN_REFRESH_MS - Date.now());
  live.pending = setTimeout(async () => {
    live.pending = null;
    live.lastRefresh = Date.now();
    await refresh();
  }, wait);
}

document.addEventListener("DOMContentLoaded", init);
