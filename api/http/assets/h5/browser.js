// Browser client of Liudong (REST + realtime) for the H5.
// Token and last inbox seq in localStorage; the socket opened with a single-use ticket
// (POST /v1/ws/tickets → /v1/ws?ticket=), never the token in the URL (docs/REALTIME.md §1).

export class LiudongError extends Error {
  constructor(status, code, detail) {
    super(detail || code);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

const KEY = "liudong.h5.";

export const localStore = {
  get: (k) => {
    const v = localStorage.getItem(KEY + k);
    return v === null ? null : JSON.parse(v);
  },
  set: (k, v) => localStorage.setItem(KEY + k, JSON.stringify(v)),
  remove: (k) => localStorage.removeItem(KEY + k),
};

function newId(prefix) {
  const r = crypto.getRandomValues(new Uint32Array(2));
  return `${prefix}-${Date.now().toString(36)}-${r[0].toString(36)}${r[1].toString(36)}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function makeClient({ baseURL, storage = localStore }) {
  const listeners = new Map();
  const emit = (kind, payload) => {
    for (const fn of listeners.get(kind) || []) {
      try { fn(payload); } catch (e) { console.error(e); }
    }
    for (const fn of listeners.get("*") || []) {
      try { fn(kind, payload); } catch (e) { console.error(e); }
    }
  };
  let socket = null;
  let state = "offline";
  let attempt = 0;
  let wanted = false;
  let timer = null;
  const pending = new Map(); // client_msg_id → {frame, resolve, reject}
  const rooms = new Set();

  async function request(method, path, { body, query, idempotencyKey, raw } = {}) {
    const url = new URL(path, baseURL);
    for (const [k, v] of Object.entries(query || {})) {
      if (v !== undefined && v !== null && v !== "") url.searchParams.set(k, String(v));
    }
    const headers = {};
    const token = storage.get("token");
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined && !raw) headers["Content-Type"] = "application/json";
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    for (let tries = 0; ; tries++) {
      let response;
      try {
        response = await fetch(url, {
          method, headers, body: raw ? body : body === undefined ? undefined : JSON.stringify(body),
        });
      } catch (e) {
        if (tries < 2) { await sleep(500 * (tries + 1)); continue; }
        throw new LiudongError(0, "network_error", "网络不可用");
      }
      if ((response.status === 429 || response.status === 503) && tries < 2) {
        const after = Number(response.headers.get("Retry-After") || "1");
        await sleep(Math.min(after, 5) * 1000);
        continue;
      }
      if (response.status === 204) return null;
      const type = response.headers.get("Content-Type") || "";
      const data = type.includes("json") ? await response.json() : await response.text();
      if (!response.ok) {
        const err = new LiudongError(response.status, data.code || "http_error", data.detail || "");
        if (response.status === 401 && ["token_expired", "token_revoked", "invalid_token"].includes(err.code)) {
          storage.remove("token");
          emit("state", "logged_out");
        }
        throw err;
      }
      return data;
    }
  }

  const api = {
    get reader() { return storage.get("reader"); },
    get state() { return state; },
    on(kind, fn) {
      if (!listeners.has(kind)) listeners.set(kind, new Set());
      listeners.get(kind).add(fn);
      return () => listeners.get(kind).delete(fn);
    },
    get: (path, query) => request("GET", path, { query }),
    post: (path, body, key) =>
      request("POST", path, { body, idempotencyKey: key || (path.includes("/loans") || path === "/v1/books" ? newId("k") : undefined) }),
    patch: (path, body) => request("PATCH", path, { body }),
    del: (path) => request("DELETE", path),
    async upload(file, purpose) {
      const form = new FormData();
      form.append("purpose", purpose);
      form.append("file", file, file.name || "picture");
      return request("POST", "/v1/media", { body: form, raw: true });
    },
    async login(name, nickname) {
      const out = await request("POST", "/v1/auth/login", { body: { code: `dev:${name}` } });
      storage.set("token", out.token);
      storage.set("reader", out.reader);
      if (nickname && nickname !== out.reader.nickname) {
        const me = await request("PATCH", "/v1/me", { body: { nickname } });
        storage.set("reader", me && me.nickname ? me : { ...out.reader, nickname });
      }
      if (storage.get("readerId") !== out.reader.id) {
        storage.set("lastSeq", 0); // another reader: another inbox
        storage.set("readerId", out.reader.id);
      }
      connect();
      return out.reader;
    },
    async logout() {
      try { await request("POST", "/v1/auth/logout"); } catch { /* gone anyway */ }
      storage.remove("token");
      storage.remove("reader");
      disconnect();
    },
    start() { if (storage.get("token")) connect(); },
    send(frame) {
      const id = frame.client_msg_id || newId(frame.type === "room.send" ? "r" : "c");
      const full = { ...frame, client_msg_id: id };
      return new Promise((resolve, reject) => {
        pending.set(id, { frame: full, resolve, reject });
        transmit(full);
      });
    },
    joinRoom(name) { rooms.add(name); transmit({ type: "room.join", room: name }); },
    leaveRoom(name) { rooms.delete(name); transmit({ type: "room.leave", room: name }); },
  };

  function setState(s) {
    state = s;
    emit("state", s);
  }

  function transmit(frame) {
    if (socket && socket.readyState === WebSocket.OPEN && state === "live") {
      socket.send(JSON.stringify(frame));
    }
  }

  async function connect() {
    wanted = true;
    if (socket || !storage.get("token")) return;
    setState("connecting");
    let ticket;
    try {
      ticket = (await request("POST", "/v1/ws/tickets")).ticket;
    } catch (e) {
      if (e.status === 401) { wanted = false; setState("offline"); return; }
      return retry();
    }
    const url = new URL("/v1/ws", baseURL.replace(/^http/, "ws"));
    url.searchParams.set("ticket", ticket);
    url.searchParams.set("after", String(storage.get("lastSeq") || 0));
    const ws = new WebSocket(url);
    socket = ws;
    ws.onmessage = (m) => onFrame(JSON.parse(m.data));
    ws.onclose = (e) => {
      if (socket === ws) socket = null;
      setState("offline");
      if (e.code === 4401) { storage.remove("token"); emit("state", "logged_out"); return; }
      if (e.code === 4409) return; // replaced by another connection: stay quiet
      if (wanted) retry();
    };
  }

  function retry() {
    clearTimeout(timer);
    const cap = 15000;
    const delay = Math.random() * Math.min(cap, 500 * 2 ** attempt++); // full jitter
    timer = setTimeout(connect, delay);
  }

  function disconnect() {
    wanted = false;
    clearTimeout(timer);
    if (socket) socket.close(1000);
    socket = null;
    setState("offline");
  }

  function onFrame(f) {
    switch (f.type) {
      case "hello":
        attempt = 0;
        setState("live");
        for (const room of rooms) socket.send(JSON.stringify({ type: "room.join", room }));
        for (const { frame } of pending.values()) socket.send(JSON.stringify(frame));
        emit("hello", f);
        break;
      case "event": {
        const last = storage.get("lastSeq") || 0;
        if (f.seq <= last) return; // seen
        storage.set("lastSeq", f.seq);
        emit(f.kind, f);
        emit("event", f);
        break;
      }
      case "ping":
        socket.send(JSON.stringify({ type: "pong" }));
        break;
      case "ack": {
        const p = pending.get(f.client_msg_id);
        if (p) { pending.delete(f.client_msg_id); p.resolve(f); }
        break;
      }
      case "error": {
        const p = f.client_msg_id && pending.get(f.client_msg_id);
        if (p) { pending.delete(f.client_msg_id); p.reject(new LiudongError(0, f.code, f.message)); }
        else emit("error", f);
        break;
      }
      default:
        emit(f.type, f);
    }
  }

  window.addEventListener("online", () => { if (wanted && !socket) { attempt = 0; connect(); } });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && wanted && !socket) { attempt = 0; connect(); }
  });
  return api;
}
