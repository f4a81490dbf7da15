// Liudong operator console (/ops): the /v1/ops API with the operator token
// (Authorization: Bearer <LIUDONG_OPERATOR_TOKEN>, kept in this tab's sessionStorage only).
// Projections (position, lag, state; rebuild with a live progress bar, retry, skip), a live
// event tail with filters, readers online and rooms, flagged texts (approve / remove), a
// reader's sessions (revoke). Texts from readers are put in the page as text, never as HTML.

const $ = (s) => document.querySelector(s);
const KEY = "liudong.ops.token";

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style") el.setAttribute("style", v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function toast(text) {
  const t = $("#toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 3500);
}

class OpsError extends Error {
  constructor(status, code, detail) { super(detail || code); this.status = status; this.code = code; }
}

async function call(method, path, { query, body } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, v);
  const headers = { Authorization: `Bearer ${sessionStorage.getItem(KEY) || ""}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (r.status === 204) return null;
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    if (r.status === 401) { showLogin(data.detail); }
    throw new OpsError(r.status, data.code, data.detail);
  }
  return data;
}

const fmtTime = (iso) => new Date(iso).toLocaleTimeString("zh-CN", { hour12: false });
const fmtDate = (iso) => (iso ? new Date(iso).toLocaleString("zh-CN", { hour12: false }) : "—");

// -- login --------------------------------------------------------------------------------------
let timers = [];
function showLogin(message) {
  timers.forEach(clearInterval);
  timers = [];
  sessionStorage.removeItem(KEY);
  $("#console").hidden = true;
  $("#logout").hidden = true;
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
}

$("#login").addEventListener("submit", async (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("#token").value.trim());
  try {
    await call("GET", "/v1/ops/projections");
    start();
  } catch (x) {
    if (x.status !== 401) $("#login-error").textContent = x.message;
  }
});
$("#logout").addEventListener("click", () => showLogin());

// -- projections ------------------------------------------------------------------------------------
function progressBar(p) {
  const pct = Math.round((p.rebuild?.progress || 0) * 100);
  return h("span", {}, h("span", { class: "progress", title: `${pct}%` }, h("i", { style: `width:${pct}%` })), ` ${pct}%`);
}

function rebuildCell(p) {
  const r = p.rebuild;
  if (!r) return "—";
  if (r.running) {
    return h("span", { class: "rebuild running", dataset: { projection: p.name } }, progressBar(p),
      r.total ? h("span", { class: "muted" }, ` ${r.done?.toLocaleString()} / ${r.total.toLocaleString()} 事件`) : "");
  }
  if (r.state === "done") {
    return h("span", { class: "rebuild done", dataset: { projection: p.name } }, "✓ 完成 ",
      h("span", { class: "muted" }, `${r.result.events.toLocaleString()} 事件，${r.result.seconds} 秒 → ${r.result.new_schema}`));
  }
  if (r.state === "failed") return h("span", { class: "error rebuild failed" }, "失败：", r.error);
  return h("span", { class: "muted" }, `未完成的 v${r.version}（${Math.round(r.progress * 100)}%）`);
}

async function act(label, fn) {
  try { await fn(); toast(`${label}：已提交`); }
  catch (x) { toast(`${label}失败：${x.message}`); }
  loadProjections();
}

async function loadProjections() {
  const { items } = await call("GET", "/v1/ops/projections");
  $("#projections tbody").replaceChildren(...items.map((p) => h("tr", { dataset: { projection: p.name } },
    h("td", {}, h("b", {}, p.name)),
    h("td", {}, h("span", { class: `state ${p.state}` }, p.state), p.holder ? h("div", { class: "muted mono" }, p.holder) : null),
    h("td", {}, p.version ? `v${p.version}` : "—", h("div", { class: "muted mono" }, p.schema || "")),
    h("td", { class: "mono" }, p.sources.map((s) => h("div", {}, `${s.source} ${s.position.toLocaleString()} / ${s.head.toLocaleString()}`))),
    h("td", { class: "lag" }, `${p.lag_events.toLocaleString()} 事件`, h("div", { class: "muted" }, `${p.lag_seconds.toFixed(1)} 秒`)),
    h("td", {}, rebuildCell(p)),
    h("td", {},
      h("button", { dataset: { action: "rebuild" }, disabled: p.rebuild?.running || undefined,
        onclick: () => confirm(`重建 ${p.name}？（新版本建好后原子切换，旧版本一直可用）`) && act("重建", () => call("POST", `/v1/ops/projections/${p.name}/rebuild`, { query: { page_size: $("#page-size").value } })) }, "重建"),
      p.failures.length ? h("button", { class: "ghost", dataset: { action: "retry" },
        onclick: () => act("重试", () => call("POST", `/v1/ops/projections/${p.name}/retry`)) }, "重试") : null))));
  const failures = items.flatMap((p) => p.failures.map((f) => ({ p: p.name, ...f })));
  $("#failures").replaceChildren(...failures.map((f) => h("div", { class: "error" },
    `${f.p} 在 ${f.source} 位置 ${f.position} 失败（${fmtDate(f.failed_at)}）：${f.error} `,
    h("button", { class: "danger", onclick: () => {
      const reason = prompt("跳过这个事件的理由（会记录）");
      if (reason) act("跳过", () => call("POST", `/v1/ops/projections/${f.p}/skip`, { body: { source: f.source, position: f.position, reason } }));
    } }, "跳过此事件"))));
}

// -- event tail ----------------------------------------------------------------------------------
const tail = { after_library: null, after_chat: null, paused: false, filters: {} };
async function loadEvents(reset) {
  if (tail.paused && !reset) return;
  if (reset) { tail.after_library = tail.after_chat = null; $("#events tbody").replaceChildren(); }
  const out = await call("GET", "/v1/ops/events", { query: {
    after_library: tail.after_library, after_chat: tail.after_chat, limit: 50, ...tail.filters,
  } });
  const fresh = tail.after_library !== null;
  tail.after_library = out.after_library;
  tail.after_chat = out.after_chat;
  const body = $("#events tbody");
  for (const e of out.items) {
    body.prepend(h("tr", { class: fresh ? "new" : "", dataset: { type: e.event_type } },
      h("td", { class: "mono" }, fmtTime(e.recorded_at)), h("td", {}, e.context), h("td", { class: "mono" }, e.position),
      h("td", {}, h("b", {}, e.event_type)), h("td", { class: "mono", title: e.aggregate_id }, e.aggregate_id.slice(0, 8)),
      h("td", { class: "data", title: JSON.stringify(e.data) }, JSON.stringify(e.data))));
  }
  while (body.children.length > 200) body.lastChild.remove();
}
$("#event-filters").addEventListener("submit", (e) => {
  e.preventDefault();
  tail.filters = { context: $("#f-context").value, type: $("#f-type").value.trim(), aggregate_id: $("#f-aggregate").value.trim() };
  loadEvents(true).catch((x) => toast(x.message));
});
$("#f-pause").addEventListener("click", (e) => {
  tail.paused = !tail.paused;
  e.target.textContent = tail.paused ? "继续" : "暂停";
});

// -- realtime -------------------------------------------------------------------------------------
async function loadRealtime() {
  const rt = await call("GET", "/v1/ops/realtime");
  $("#rt-summary").textContent = `${rt.readers_online} 位读者在线 · 本节点 ${rt.sockets_here} 个连接`;
  $("#rooms").replaceChildren(...(rt.rooms.length ? rt.rooms.map((r) => h("li", { dataset: { room: r.name } }, `${r.title}（${r.name}）：`, h("b", {}, r.members), " 人"))
    : [h("li", { class: "muted" }, "没有聊天室")]));
  $("#online").replaceChildren(...(rt.readers.length ? rt.readers.map((o) => h("li", {},
    h("a", { href: "#", onclick: (e) => { e.preventDefault(); loadSessions(o.reader.id); } }, o.reader.nickname || o.reader.id),
    o.here ? h("span", { class: "muted" }, "（本节点）") : null))
    : [h("li", { class: "muted" }, "没有人在线")]));
}

// -- sessions -------------------------------------------------------------------------------------
$("#reader-search").addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = $("#reader-q").value.trim();
  if (!q) return;
  const { items } = await call("GET", "/v1/ops/readers", { query: { q } });
  $("#reader-results").replaceChildren(...(items.length ? items.map((r) => h("li", {},
    h("a", { href: "#", dataset: { reader: r.id }, onclick: (ev) => { ev.preventDefault(); loadSessions(r.id); } }, r.nickname), " ",
    h("span", { class: "muted mono" }, r.id.slice(0, 8))))
    : [h("li", { class: "muted" }, "没有找到")]));
});

async function loadSessions(readerId) {
  const out = await call("GET", `/v1/ops/readers/${readerId}/sessions`);
  $("#sessions").replaceChildren(h("h3", {}, `${out.reader.nickname} 的会话`), h("table", { id: "session-table" },
    h("thead", {}, h("tr", {}, ["会话", "登录", "最近", "到期", "状态", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, out.items.map((s) => h("tr", { dataset: { session: s.session_id, live: s.live } },
      h("td", { class: "mono" }, s.session_id.slice(0, 12)), h("td", {}, fmtDate(s.created_at)),
      h("td", {}, fmtDate(s.last_seen_at)), h("td", {}, fmtDate(s.expires_at)),
      h("td", { class: "session-state" }, s.live ? "有效" : s.revoked_at ? "已撤销" : "已过期"),
      h("td", {}, s.live ? h("button", { class: "danger", dataset: { action: "revoke" }, onclick: async () => {
        try { await call("POST", `/v1/ops/readers/${readerId}/sessions/${s.session_id}/revoke`); toast("会话已撤销"); }
        catch (x) { toast(x.message); }
        loadSessions(readerId);
      } }, "撤销") : null))))));
}

// -- moderation -----------------------------------------------------------------------------------
async function loadFlags() {
  const { items } = await call("GET", "/v1/ops/moderation");
  $("#flags tbody").replaceChildren(...(items.length ? items.map((f) => h("tr", { dataset: { flag: f.id } },
    h("td", {}, fmtDate(f.flagged_at)), h("td", {}, f.reader.nickname || f.reader.id.slice(0, 8)),
    h("td", { class: "mono" }, `${f.scene}/${f.field}`, h("div", { class: "muted" }, f.subject || "")),
    h("td", {}, `${f.provider}: ${f.label || "—"}`), h("td", { class: "flag-text" }, f.text),
    h("td", {},
      h("button", { dataset: { action: "approve" }, onclick: () => decide(f.id, "approve") }, "通过"),
      h("button", { class: "danger", dataset: { action: "remove" }, onclick: () => decide(f.id, "remove") }, "删除"))))
    : [h("tr", {}, h("td", { colspan: 6, class: "muted" }, "没有待审内容"))]));
}
async function decide(id, what) {
  try { await call("POST", `/v1/ops/moderation/${id}/${what}`); toast(what === "approve" ? "已通过" : "已标记删除"); }
  catch (x) { toast(x.message); }
  loadFlags();
}

// -- start ----------------------------------------------------------------------------------------
function every(ms, fn) {
  const run = () => fn().catch((x) => { if (x.status !== 401) console.warn(x); });
  run();
  timers.push(setInterval(run, ms));
}

function start() {
  $("#login").hidden = true;
  $("#console").hidden = false;
  $("#logout").hidden = false;
  $("#who").textContent = location.host;
  every(1000, loadProjections);
  every(1000, () => loadEvents(false));
  every(3000, loadRealtime);
  every(5000, loadFlags);
}

if (sessionStorage.getItem(KEY)) start(); else showLogin();
