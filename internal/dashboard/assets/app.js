// torpor dashboard: plain JavaScript and SVG, no library. Every read and
// every button is an API call through /ui/api/v1/... (the daemon forwards
// it to the API as this session's caller); /ui/api/stream pushes every
// machine change as a server-sent event.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const STATES = ["created", "starting", "started", "stopping", "stopped", "suspending", "suspended", "destroying", "destroyed"];
const SVGNS = "http://www.w3.org/2000/svg";
const MAX_POINTS = 500;   // latency points kept per app
const MAX_LOG_LINES = 1000;

const view = {
  apps: [],                 // [{name, ...}]
  app: null,                // the app shown
  machines: new Map(),      // id → machine, of view.app
  points: [],               // latency points of view.app: {t, ms, kind, machine}
  machine: null,            // id of the machine shown, or null
  events: [],               // its events, newest first
  logAbort: null,
};

// --- API ---------------------------------------------------------------

class APIError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(method, path, body) {
  const opts = { method, headers: { "X-Torpor-CSRF": csrf } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch("/ui/api" + path, opts);
  if (resp.status === 401) {
    location.href = "/ui/login";
    throw new APIError(401, "logged out");
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!resp.ok) {
    throw new APIError(resp.status, (data && data.error) || resp.status + " " + resp.statusText);
  }
  return data;
}

const enc = encodeURIComponent;
const appPath = (app) => "/v1/apps/" + enc(app);
const machinePath = (app, id) => appPath(app) + "/machines/" + enc(id);

// --- small DOM helpers -------------------------------------------------

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else if (k === "text") e.textContent = v;
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function dot(state) { return el("span", { class: "dot", "data-state": state, title: state }); }

let toastTimer = null;
function toast(msg, isError) {
  const t = document.getElementById("toast");
  t.textContent = msg;
  t.className = isError ? "error" : "";
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { t.hidden = true; }, isError ? 8000 : 3000);
}

function ago(iso) {
  if (!iso) return "–";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return s + "s ago";
  if (s < 3600) return Math.round(s / 60) + "m ago";
  if (s < 86400) return Math.round(s / 3600) + "h ago";
  return new Date(iso).toISOString().slice(0, 16).replace("T", " ");
}

function clock(ms) { return new Date(ms).toISOString().slice(11, 23); }

function fmtMS(ms) { return ms >= 1000 ? (ms / 1000).toFixed(2) + " s" : Math.round(ms) + " ms"; }

function fmtBytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}

// --- routing -----------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "apps" && parts[1]) return { app: parts[1], machine: parts[2] === "machines" ? parts[3] : null };
  return { app: null, machine: null };
}

async function navigate() {
  const r = route();
  let app = r.app;
  if (!app || !view.apps.some((a) => a.name === app)) app = view.apps.length ? view.apps[0].name : null;
  document.getElementById("empty").hidden = !!app;
  if (!app) {
    document.getElementById("app-view").hidden = true;
    document.getElementById("machine-view").hidden = true;
    return;
  }
  if (app !== view.app) await loadApp(app);
  renderAppList();
  if (r.machine && view.machines.has(r.machine)) {
    await showMachine(r.machine);
  } else {
    hideMachine();
  }
}

// --- apps and machines -------------------------------------------------

async function loadApps() {
  const data = await api("GET", "/v1/apps");
  view.apps = (data.apps || []).sort((a, b) => a.name.localeCompare(b.name));
  renderAppList();
}

function renderAppList() {
  const ul = document.getElementById("app-list");
  ul.replaceChildren(...view.apps.map((a) => {
    const count = a.name === view.app ? el("small", { text: String(liveMachines().length) }) : null;
    return el("li", {}, el("a", { href: "#/apps/" + enc(a.name), class: a.name === view.app ? "current" : "", "data-app": a.name }, a.name, count));
  }));
}

function liveMachines() {
  return [...view.machines.values()].filter((m) => m.state !== "destroyed");
}

async function loadApp(app) {
  view.app = app;
  view.machines = new Map();
  view.points = [];
  document.getElementById("app-title").textContent = app;
  const list = await api("GET", appPath(app) + "/machines");
  for (const m of list) view.machines.set(m.id, m);
  renderMachines();
  // The latency chart: the start and resume events of every machine.
  const evs = await Promise.all(list.map((m) =>
    api("GET", machinePath(app, m.id) + "/events?limit=200").then((e) => [m.id, e]).catch(() => [m.id, []])));
  if (view.app !== app) return;
  for (const [id, events] of evs) for (const ev of events) addPoint(id, ev);
  renderLatency();
}

function checksCell(m) {
  const checks = m.checks || [];
  if (!checks.length) return el("td", { class: "checks" }, "–");
  return el("td", { class: "checks" }, ...checks.map((c) =>
    el("span", { class: c.status, title: (c.output || "") + (c.updated_at ? " (" + ago(c.updated_at) + ")" : "") }, c.name + ": " + c.status)));
}

function machineRow(m) {
  return el("tr", { "data-machine": m.id, onclick: () => { location.hash = "#/apps/" + enc(m.app_name) + "/machines/" + enc(m.id); } },
    el("td", {}, dot(m.state)),
    el("td", { class: "mono" }, m.id, m.name && m.name !== m.id ? el("div", { class: "none", text: m.name }) : null),
    el("td", { class: "state", "data-state-text": m.state, text: m.state }),
    el("td", { class: "mono", text: m.config && m.config.image ? shortImage(m.config.image) : "–", title: m.config ? m.config.image : "" }),
    el("td", { class: "mono", text: m.version || "–" }),
    checksCell(m),
    el("td", { class: "mono", text: m.private_ip || "–" }),
    el("td", { text: ago(m.updated_at) }));
}

function shortImage(img) { return img.length > 40 ? "…" + img.slice(-39) : img; }

function renderMachines() {
  const list = liveMachines().sort((a, b) => (a.created_at || "").localeCompare(b.created_at || ""));
  document.querySelector("#machines tbody").replaceChildren(...list.map(machineRow));
  document.getElementById("no-machines").hidden = list.length > 0;
  document.getElementById("app-view").hidden = view.machine !== null;
  renderStates();
  renderAppList();
}

// --- charts ------------------------------------------------------------

// addPoint adds a start or resume event of machine id to the latency chart.
function addPoint(id, ev) {
  if (ev.status !== "started" || (ev.type !== "start" && ev.type !== "resume")) return;
  const d = ev.request || {};
  if (typeof d.duration_ms !== "number") return;
  let kind = "cold";
  if (ev.type === "resume") kind = d.from_snapshot ? "resume" : "fallback";
  if (view.points.some((p) => p.id === ev.id)) return;
  view.points.push({ id: ev.id, t: ev.timestamp, ms: d.duration_ms, kind, machine: id });
  view.points.sort((a, b) => a.t - b.t);
  if (view.points.length > MAX_POINTS) view.points.splice(0, view.points.length - MAX_POINTS);
}

function renderLatency() {
  const s = document.getElementById("latency-chart");
  const W = 600, H = 220, L = 46, R = 10, T = 10, B = 24;
  s.replaceChildren();
  const pts = view.points;
  if (!pts.length) {
    s.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no starts or resumes yet"));
    return;
  }
  // y: log scale from 10 ms to the grid line above the largest value
  // (at least 1 s).
  const grid = [10, 30, 100, 300, 1000, 3000, 10000, 30000, 100000];
  const top = grid.find((g) => g >= Math.max(1000, ...pts.map((p) => p.ms))) || grid[grid.length - 1];
  const lo = Math.log10(10), hi = Math.log10(top);
  const y = (ms) => T + (H - T - B) * (1 - (Math.log10(Math.max(ms, 10)) - lo) / (hi - lo));
  const t0 = pts[0].t, t1 = Math.max(pts[pts.length - 1].t, t0 + 1000);
  const x = (t) => L + (W - L - R) * (t - t0) / (t1 - t0);
  for (const ms of grid) {
    if (ms > top) break;
    s.append(svg("line", { x1: L, x2: W - R, y1: y(ms), y2: y(ms), class: "grid" }));
    s.append(svg("text", { x: L - 4, y: y(ms) + 3, "text-anchor": "end" }, ms >= 1000 ? ms / 1000 + " s" : ms + " ms"));
  }
  s.append(svg("text", { x: L, y: H - 6 }, clock(t0)));
  s.append(svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, clock(t1)));
  for (const p of pts) {
    const c = svg("circle", { cx: x(p.t), cy: y(p.ms), r: 4, class: "pt-" + p.kind, "data-kind": p.kind });
    c.append(svg("title", {}, `${p.kind === "resume" ? "resume" : p.kind === "fallback" ? "cold start (resume fallback)" : "cold start"} of ${p.machine}: ${fmtMS(p.ms)} at ${clock(p.t)}`));
    s.append(c);
  }
}

function renderStates() {
  const s = document.getElementById("state-chart");
  const W = 300, H = 220, L = 78, R = 30, T = 6;
  s.replaceChildren();
  const counts = {};
  for (const m of liveMachines()) counts[m.state] = (counts[m.state] || 0) + 1;
  const shown = STATES.filter((st) => st !== "destroyed");
  const max = Math.max(1, ...Object.values(counts));
  const row = (H - T) / shown.length;
  shown.forEach((st, i) => {
    const n = counts[st] || 0;
    const yy = T + i * row;
    s.append(svg("text", { x: L - 6, y: yy + row / 2 + 3, "text-anchor": "end" }, st));
    const bar = svg("rect", { x: L, y: yy + 3, height: row - 6, width: Math.max(n ? 3 : 0, (W - L - R) * n / max),
      rx: 3, class: "bar bar-" + st, "data-state": st, "data-count": n });
    s.append(bar);
    s.append(svg("text", { x: L + (W - L - R) * n / max + 4, y: yy + row / 2 + 3 }, String(n)));
  });
}

// --- one machine -------------------------------------------------------

async function showMachine(id) {
  const first = view.machine !== id;
  view.machine = id;
  document.getElementById("app-view").hidden = true;
  document.getElementById("machine-view").hidden = false;
  document.getElementById("back").href = "#/apps/" + enc(view.app);
  renderMachine();
  if (!first) return;
  view.events = [];
  document.getElementById("timeline").replaceChildren();
  try {
    view.events = await api("GET", machinePath(view.app, id) + "/events?limit=200");
  } catch (e) {
    toast("events: " + e.message, true);
  }
  renderTimeline();
  tailLogs(view.app, id);
}

function hideMachine() {
  if (view.logAbort) view.logAbort.abort();
  view.logAbort = null;
  view.machine = null;
  document.getElementById("machine-view").hidden = true;
  document.getElementById("app-view").hidden = false;
}

// allowed is which buttons make sense in each state (the API decides).
const allowed = {
  start: ["created", "stopped", "suspended"],
  stop: ["started", "suspended"],
  suspend: ["started"],
  destroy: ["created", "started", "stopped", "suspended"],
};

function renderMachine() {
  const m = view.machines.get(view.machine);
  if (!m) return;
  document.getElementById("m-dot").dataset.state = m.state;
  document.getElementById("m-dot").title = m.state;
  document.getElementById("m-title").textContent = m.name && m.name !== m.id ? `${m.name} (${m.id})` : m.id;
  const st = document.getElementById("m-state");
  st.textContent = m.state;
  st.dataset.state = m.state;
  for (const b of document.querySelectorAll("#actions button")) {
    b.disabled = busy || !allowed[b.dataset.action].includes(m.state);
  }
  const info = document.getElementById("m-info");
  const cfg = m.config || {};
  const guest = cfg.guest || {};
  const rows = [
    ["App", m.app_name], ["Region", m.region],
    ["Image", cfg.image || "–"], ["Version", m.version || "–"],
    ["Private IP", m.private_ip || "–"], ["Boot generation", String(m.boot_generation)],
    ["Guest", `${guest.cpus || 1} cpu, ${guest.memory_mb || 256} MB`], ["Instance", m.instance_id || "–"],
    ["Created", ago(m.created_at)], ["Updated", ago(m.updated_at)],
  ];
  const dl = [];
  for (const [k, v] of rows) dl.push(el("dt", { text: k }), el("dd", { text: v }));
  const checks = m.checks || [];
  dl.push(el("dt", { text: "Checks" }), el("dd", { class: "checks" }, ...(checks.length ? checks.map((c) =>
    el("span", { class: c.status, title: c.output || "" }, c.name + ": " + c.status)) : ["–"])));
  info.replaceChildren(...dl);
}

// eventSummary says what an event means, with its reason and durations.
function eventSummary(ev) {
  const d = ev.request || {};
  const out = { what: ev.type + " " + ev.status, why: "", phases: "" };
  if (ev.type === "resume" && ev.status === "started") {
    if (d.from_snapshot) {
      out.what = `resumed from snapshot in ${fmtMS(d.duration_ms)}`;
      const p = [["claim", d.claim_ms], ["prepare", d.prepare_ms], ["restore", d.runtime_restore_ms],
        ["verify", d.verify_ms], ["verify wait", d.verify_wait_ms]].filter(([, v]) => typeof v === "number");
      out.phases = p.map(([k, v]) => `${k} ${v} ms`).join(" · ");
      if (typeof d.restore_ms === "number") out.phases += ` · app told ${d.duration_ms - d.restore_ms} ms`;
      if (d.resume_count) out.phases += ` · resume #${d.resume_count}`;
    } else {
      out.what = `cold start (resume fell back) in ${fmtMS(d.duration_ms)}`;
      out.why = (d.fallback ? d.fallback + ": " : "") + (d.reason || "");
    }
  } else if (ev.type === "start" && ev.status === "started") {
    out.what = `cold start in ${fmtMS(d.duration_ms)}`;
    out.phases = `boot generation ${d.boot_generation}`;
  } else if (ev.type === "suspend" && ev.status === "suspended") {
    out.what = `suspended in ${fmtMS(d.duration_ms)}, snapshot ${fmtBytes(d.size_bytes)}`;
    out.phases = [["checkpoint", d.checkpoint_ms], ["seal", d.seal_ms]].filter(([, v]) => typeof v === "number")
      .map(([k, v]) => `${k} ${v} ms`).join(" · ");
    if (d.pre_suspend) out.phases += ` · pre_suspend ${d.pre_suspend.duration_ms} ms (${d.pre_suspend.status})`;
  } else if (d.error) {
    out.why = d.error;
  } else if (d.reason) {
    out.why = d.reason;
  }
  if (d.exit_code !== undefined && ev.type === "exit") out.phases = `exit code ${d.exit_code}` + (d.oom_killed ? " (out of memory)" : "");
  return out;
}

function renderTimeline() {
  const ol = document.getElementById("timeline");
  ol.replaceChildren(...view.events.map((ev) => {
    const s = eventSummary(ev);
    return el("li", { class: "t-" + ev.type + (ev.status === "failed" ? " failed" : ""), "data-type": ev.type, "data-status": ev.status },
      el("div", { class: "when" }, new Date(ev.timestamp).toISOString().replace("T", " ").slice(0, 23) + " · " + (ev.source || "")),
      el("div", { class: "what", text: s.what }),
      s.why ? el("div", { class: "why", text: s.why }) : null,
      s.phases ? el("div", { class: "phases", text: s.phases }) : null);
  }));
}

// tailLogs follows the machine's console log (NDJSON) until another
// machine is shown.
async function tailLogs(app, id) {
  if (view.logAbort) view.logAbort.abort();
  const ctl = new AbortController();
  view.logAbort = ctl;
  const pre = document.getElementById("logs");
  const state = document.getElementById("log-state");
  pre.replaceChildren();
  let from = 0;
  while (!ctl.signal.aborted) {
    state.textContent = "following";
    try {
      const q = from ? `from_seq=${from}` : "tail=200";
      const resp = await fetch("/ui/api" + machinePath(app, id) + `/logs?${q}&follow=true`, { signal: ctl.signal });
      if (!resp.ok) throw new Error((await resp.json().catch(() => ({}))).error || resp.statusText);
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const rec = JSON.parse(line);
          from = rec.seq + 1;
          appendLog(pre, rec);
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      state.textContent = "reconnecting: " + e.message;
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function appendLog(pre, rec) {
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  if (rec.dropped) pre.append(el("span", { class: "ts", text: `[${rec.dropped} lines dropped]\n` }));
  pre.append(el("span", { class: "ts", text: rec.timestamp.slice(11, 23) + " " }), rec.message + (rec.partial ? "" : "\n"));
  while (pre.childNodes.length > MAX_LOG_LINES * 2) pre.firstChild.remove();
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

// --- buttons -----------------------------------------------------------

let busy = false;

async function act(action) {
  const m = view.machines.get(view.machine);
  if (!m) return;
  if (action === "destroy" && !(await confirmDestroy(m))) return;
  busy = true;
  renderMachine();
  try {
    const p = machinePath(m.app_name, m.id);
    if (action === "destroy") {
      await api("DELETE", p + (m.state === "started" ? "?force=true" : ""));
      toast(`Machine ${m.id} destroyed`);
      location.hash = "#/apps/" + enc(m.app_name);
    } else {
      const resp = await api("POST", p + "/" + action);
      let msg = `Machine ${m.id}: ${action} ok`;
      if (action === "start" && resp) msg += resp.from_snapshot ? " (resumed from snapshot)" : " (cold start)";
      toast(msg);
    }
  } catch (e) {
    toast(`${action} ${m.id}: ${e.message}`, true);
  } finally {
    busy = false;
    renderMachine();
  }
}

function confirmDestroy(m) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent =
    `Destroy machine ${m.id}${m.state === "started" ? " (it is running: it will be killed)" : ""}? ` +
    "Its snapshot and its logs go with it. This cannot be undone.";
  // The buttons' own handlers answer (replaced at each opening): the
  // dialog's "close" event comes later, as a task of its own, and one still
  // pending from the last opening would answer this one.
  const ok = document.getElementById("confirm-ok"), cancel = document.getElementById("confirm-cancel");
  return new Promise((resolve) => {
    const answer = (yes) => (e) => {
      e.preventDefault();
      ok.onclick = cancel.onclick = dlg.oncancel = null;
      dlg.close();
      resolve(yes);
    };
    ok.onclick = answer(true);
    cancel.onclick = answer(false);
    dlg.oncancel = answer(false); // Escape
    dlg.showModal();
  });
}

// --- live updates ------------------------------------------------------

function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/ui/api/stream");
  es.onopen = () => { live.dataset.live = "open"; live.textContent = "live"; };
  es.onerror = () => { live.dataset.live = "error"; live.textContent = "reconnecting…"; };
  es.addEventListener("change", (e) => onChange(JSON.parse(e.data)));
  es.addEventListener("resync", () => { view.app = null; refresh(); });
  es.addEventListener("logout", () => { location.href = "/ui/login"; });
}

async function onChange(u) {
  if (!view.apps.some((a) => a.name === u.app)) {
    await loadApps();
    if (!view.app) navigate();
    return;
  }
  if (u.app !== view.app) return;
  const m = u.machine;
  m.checks = m.checks || (view.machines.get(m.id) || {}).checks;
  view.machines.set(m.id, m);
  for (const ev of u.events) addPoint(m.id, ev);
  renderMachines();
  if (u.events.some((ev) => ev.type === "start" || ev.type === "resume")) renderLatency();
  if (view.machine === m.id) {
    if (m.state === "destroyed") {
      location.hash = "#/apps/" + enc(u.app);
      return;
    }
    renderMachine();
    const known = new Set(view.events.map((ev) => ev.id));
    const fresh = u.events.filter((ev) => !known.has(ev.id)).reverse();
    if (fresh.length) {
      view.events = fresh.concat(view.events);
      renderTimeline();
    }
  }
}

async function refresh() {
  try {
    await loadApps();
    await navigate();
  } catch (e) {
    toast(e.message, true);
  }
}

document.getElementById("actions").addEventListener("click", (e) => {
  const b = e.target.closest("button[data-action]");
  if (b && !b.disabled) act(b.dataset.action);
});
window.addEventListener("hashchange", () => navigate().catch((e) => toast(e.message, true)));
// Every 15 s the app's machines are read again: health check results
// change without a machine change, and the "ago" column ages.
setInterval(async () => {
  if (!view.app) return;
  const app = view.app;
  try {
    const list = await api("GET", appPath(app) + "/machines");
    if (view.app !== app) return;
    for (const m of list) view.machines.set(m.id, m);
    renderMachines();
    if (view.machine) renderMachine();
  } catch (e) { /* the live indicator says when the daemon is gone */ }
}, 15000);
connect();
refresh();
