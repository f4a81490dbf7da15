// The H5's client: the mini-program SDK's core (/sdk = clients/miniprogram/src) on its web
// adapter — fetch for REST and uploads, the browser's WebSocket with single-use tickets
// (POST /v1/ws/tickets → /v1/ws?ticket=; a token never goes in a URL), page visibility as
// the app's show/hide, online/offline as the network — and localStorage for the session and
// the last inbox seq. The SDK does the rest: Idempotency-Key per call, re-login on 401,
// Retry-After, resume from the last seq, reconnect with back-off, sends retried until ack.
//
// Login is the dev login (`dev:<name>`, refused in production): the name is kept so that the
// SDK can log in again by itself when the session ends (its `wx.login`).

import { createClient, webAdapter, LiudongError } from "/sdk/index.js";

export { LiudongError };

const NAME = "liudong.h5.name";
const NICKNAME = "liudong.h5.nickname";

export function makeClient({ baseURL }) {
  const wx = webAdapter({
    login: () => {
      const name = localStorage.getItem(NAME);
      if (!name) throw new LiudongError(401, "not_logged_in", "请先登录");
      return `dev:${name}`;
    },
    document,
    window,
  });
  const client = createClient({ baseURL, wx, storage: localStorage, prefix: "liudong.h5." });
  const realtime = client.realtime;
  const STATES = { connected: "live", connecting: "connecting", disconnected: "offline", stopped: "offline" };

  return {
    sdk: client,
    ready: () => client.ready(),
    get reader() {
      const reader = client.reader;
      const nickname = localStorage.getItem(NICKNAME);
      return reader && nickname ? { ...reader, nickname } : reader;
    },
    on(kind, fn) {
      if (kind === "event") return realtime.on("*", fn);
      if (kind === "state") {
        const offs = [
          realtime.on("state", (change) => fn(STATES[change.state] || change.state)),
          client.on("logout", () => fn("logged_out")),
        ];
        return () => offs.forEach((off) => off());
      }
      return realtime.on(kind, fn);
    },
    get: (path, query) => client.request("GET", path, { query }),
    post: (path, body) => client.request("POST", path, { body }),
    patch: (path, body) => client.request("PATCH", path, { body }),
    del: (path) => client.request("DELETE", path),
    publish: (body) => client.books.publish(body),
    requestLoan: (bookId, body) => client.books.requestLoan(bookId, body),
    loanStep(loanId, step) {
      const steps = {
        approve: client.loans.approve, decline: client.loans.decline, cancel: client.loans.cancel,
        return: client.loans.startReturn, "confirm-return": client.loans.confirmReturn,
      };
      return steps[step](loanId, step === "decline" ? { reason: "" } : undefined);
    },
    openConversation: (peerId) => client.conversations.open(peerId),
    upload: (file, purpose) => client.upload(file, { purpose }),
    async login(name, nickname) {
      localStorage.setItem(NAME, name);
      localStorage.removeItem(NICKNAME);
      await client.login({ code: `dev:${name}` });
      if (nickname && nickname !== client.reader.nickname) {
        await client.me.update({ nickname });
        localStorage.setItem(NICKNAME, nickname); // the stored session still has the old one
      }
      realtime.connect().catch(() => {}); // the state events tell the page
      return this.reader;
    },
    async logout() {
      localStorage.removeItem(NAME);
      localStorage.removeItem(NICKNAME);
      await client.logout();
    },
    async start() {
      await client.ready();
      if (client.reader) realtime.connect().catch(() => {});
    },
    send(frame) {
      const { type, text, ...extra } = frame;
      if (type === "chat.send") {
        const { conversation_id: id, ...rest } = extra;
        return realtime.sendChat(id, text, rest);
      }
      if (type === "room.send") {
        const { room, ...rest } = extra;
        return realtime.sendRoom(room, text, rest);
      }
      return realtime.send(frame);
    },
    joinRoom: (name) => realtime.joinRoom(name),
    leaveRoom: (name) => realtime.leaveRoom(name),
  };
}
