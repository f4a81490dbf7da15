// 流动图书馆 H5: the screens of the mini-program, in the browser. Hash routes:
//   #/login  #/drift (图书漂流)  #/shelf (借阅书架)  #/mine (我的图书)  #/publish
//   #/book/<id>  #/loans (借阅请求)  #/chats  #/chat/<id>  #/rooms  #/room/<name>
// Every text that came from a reader is put in the page as text (textContent), never as HTML.

import { api } from "./client.js";

const $ = (sel) => document.querySelector(sel);
const view = $("#view");

// -- tiny DOM builder ---------------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const STATUS = {
  available: "可借", on_loan: "借出中", withdrawn: "已下架",
  requested: "待同意", approved: "已同意", declined: "已拒绝", cancelled: "已取消",
  returning: "归还中", returned: "已归还",
};
const KIND = {
  "loan.requested": "收到借阅请求", "loan.approved": "借阅已同意", "loan.declined": "借阅被拒绝",
  "loan.cancelled": "借阅已取消", "loan.returning": "对方已归还，请确认", "loan.returned": "已确认归还",
  "chat.message": "新消息",
};
const HISTORY = {
  Published: "发布", DetailsRevised: "修改信息", Withdrawn: "下架", Relisted: "重新上架",
  Lent: "借出", Returned: "归还", RequestReceived: "收到借阅请求", RequestClosed: "请求关闭",
};
const statusChip = (s) => h("span", { class: `status ${s}`, dataset: { status: s } }, STATUS[s] || s);
const when = (iso) => new Date(iso).toLocaleString("zh-CN", { hour12: false });

function toast(text) { // stacked: a loan request and its chat message arrive together
  const box = $("#toast");
  const item = h("div", { class: "toast-item" }, text);
  box.append(item);
  box.hidden = false;
  setTimeout(() => { item.remove(); box.hidden = !box.childElementCount; }, 4000);
}

function errorText(e) {
  const known = {
    cannot_borrow_own_book: "不能借自己的书", book_not_available: "这本书现在不可借",
    content_rejected: "内容未通过审核", rate_limited: "操作太频繁，请稍后再试",
    invalid_code: "登录失败", network_error: "网络不可用",
  };
  return known[e.code] || e.detail || e.message || String(e);
}

function cover(book) {
  return book.cover_url
    ? h("img", { class: "cover", src: book.cover_url, alt: "" })
    : h("div", { class: "cover" }, (book.title || "书").slice(0, 1));
}

function bookCard(book, extra) {
  return h("a", { class: "card book", href: `#/book/${book.id}`, dataset: { bookId: book.id } },
    cover(book),
    h("div", { class: "meta" },
      h("div", { class: "title" }, book.title),
      h("div", { class: "sub" }, [book.author, book.publisher].filter(Boolean).join(" · ") || book.isbn),
      h("div", { class: "sub" }, "书主 ", book.owner?.nickname || "", " ", statusChip(book.status)),
      h("div", {}, (book.tags || []).map((t) => h("span", { class: "tag" }, t))),
      extra || null));
}

function empty(text) { return h("div", { class: "empty" }, text); }

// -- router ---------------------------------------------------------------------------------------
const routes = {
  login: showLogin, drift: showDrift, shelf: showShelf, mine: showMine, publish: showPublish,
  book: showBook, loans: showLoans, chats: showChats, chat: showChat, rooms: showRooms, room: showRoom,
};
let leaving = null; // cleanup of the current screen
let current = "";

async function route() {
  const [name, arg] = location.hash.replace(/^#\/?/, "").split("/");
  if (!api.reader) {
    if (name !== "login") { location.hash = "#/login"; return; }
  }
  const screen = routes[name] || (api.reader ? showDrift : showLogin);
  if (leaving) { try { leaving(); } catch { /* ignore */ } leaving = null; }
  current = name || "drift";
  for (const a of document.querySelectorAll(".tabs a")) {
    a.classList.toggle("active", a.dataset.tab === current || (current === "book" && a.dataset.tab === "drift")
      || (current === "chat" && a.dataset.tab === "chats") || (current === "room" && a.dataset.tab === "rooms"));
  }
  $("#tabs").hidden = !api.reader;
  $("#whoami").textContent = api.reader ? api.reader.nickname : "";
  view.replaceChildren(h("p", { class: "muted" }, "加载中…"));
  try {
    await screen(arg && decodeURIComponent(arg));
  } catch (e) {
    view.replaceChildren(h("div", { class: "card error" }, "出错了：", errorText(e)));
  }
  window.scrollTo(0, 0);
}

// -- login --------------------------------------------------------------------------------------
async function showLogin() {
  const name = h("input", { id: "login-name", placeholder: "登录名：字母、数字、_ . -", maxlength: 64,
    autocomplete: "username" });
  const nick = h("input", { id: "login-nickname", placeholder: "昵称（可选），如 小林", maxlength: 32, autocomplete: "nickname" });
  const err = h("div", { class: "error" });
  const go = async (e) => {
    e.preventDefault();
    if (!name.value.trim()) { err.textContent = "请输入登录名"; return; }
    try {
      await api.login(name.value.trim(), nick.value.trim());
      location.hash = "#/drift";
    } catch (x) {
      err.textContent = x.code !== "invalid_code" ? errorText(x)
        : /characters/.test(x.detail || "") ? "登录名只能用字母、数字、_ . -（最多 64 个）"
        : "这台服务器不支持名字登录（生产环境），请在微信小程序中使用";
    }
  };
  view.replaceChildren(h("form", { class: "login card", onsubmit: go },
    h("div", { class: "logo-big" }, "流动图书馆"),
    h("p", { class: "muted" }, "把闲置的书借给邻居，让书流动起来"),
    h("label", { for: "login-name" }, "开发模式：用名字登录（同一名字即同一读者）"),
    name, h("label", { for: "login-nickname" }, "昵称"), nick, err,
    h("div", { class: "actions" }, h("button", { type: "submit", id: "login-go" }, "进入"))));
  name.focus();
}

// -- 图书漂流: new books, search, tags ----------------------------------------------------------------
async function showDrift() {
  const q = h("input", { id: "search", type: "search", placeholder: "搜索书名、作者或 ISBN" });
  const tags = h("div", { class: "row wrap" });
  const list = h("div", { id: "book-list" });
  let tag = "";
  const load = async () => {
    const page = await api.get("/v1/books", { q: q.value.trim(), tag, limit: 30 });
    list.replaceChildren(...(page.items.length ? page.items.map((b) => bookCard(b)) : [empty("还没有书")]));
    if (!tags.childElementCount) {
      const seen = [...new Set(page.items.flatMap((b) => b.tags || []))].slice(0, 12);
      tags.replaceChildren(...seen.map((t) => h("button", {
        class: "tag", type: "button",
        onclick: (e) => {
          tag = tag === t ? "" : t;
          for (const b of tags.children) b.classList.toggle("on", b.textContent === tag);
          load();
          e.preventDefault();
        },
      }, t)));
    }
  };
  view.replaceChildren(
    h("div", { class: "row" }, h("h2", { class: "grow" }, "图书漂流"),
      h("a", { href: "#/publish" }, h("button", { type: "button", id: "publish-open" }, "发布图书"))),
    h("form", { onsubmit: (e) => { e.preventDefault(); load(); } }, q),
    tags, h("h3", {}, "新书上架"), list);
  await load();
}

// -- 借阅书架: what can be borrowed now, with per-ISBN availability ---------------------------------------
async function showShelf() {
  const list = h("div", { id: "shelf-list" });
  view.replaceChildren(h("h2", {}, "借阅书架"), h("p", { class: "muted" }, "现在可以借的书（同一 ISBN 的可借/总册数）"), list);
  const page = await api.get("/v1/books", { available: "true", limit: 30 });
  const isbns = [...new Set(page.items.map((b) => b.isbn))];
  const avail = {};
  await Promise.all(isbns.map(async (isbn) => { // every copy of that ISBN on the shelf
    const copies = (await api.get("/v1/books", { isbn, limit: 100 })).items.filter((b) => b.status !== "withdrawn");
    avail[isbn] = { free: copies.filter((b) => b.status === "available").length, total: copies.length };
  }));
  list.replaceChildren(...(page.items.length ? page.items.map((b) => {
    const a = avail[b.isbn];
    return bookCard(b, h("div", { class: "sub availability" }, a ? `可借 ${a.free} / 共 ${a.total} 本` : "可借"));
  }) : [empty("书架上暂时没有可借的书")]));
}

// -- 我的图书: published / borrowed / lent ---------------------------------------------------------
async function showMine(tab = "published") {
  const seg = h("div", { class: "segment" });
  const list = h("div", { id: "mine-list" });
  const tabs = { published: "我发布的", borrowed: "我借的", lent: "借出的" };
  const load = async (which) => {
    for (const b of seg.children) b.classList.toggle("on", b.dataset.which === which);
    if (which === "published") {
      const page = await api.get("/v1/me/books", { limit: 50 });
      list.replaceChildren(...(page.items.length ? page.items.map((b) => bookCard(b)) : [empty("还没有发布图书")]));
    } else {
      const role = which === "borrowed" ? "borrower" : "lender";
      const page = await api.get("/v1/me/loans", { role, limit: 50 });
      list.replaceChildren(...(page.items.length ? page.items.map((l) => loanCard(l, role, () => load(which))) : [empty("暂无记录")]));
    }
  };
  for (const [k, v] of Object.entries(tabs)) {
    seg.append(h("button", { type: "button", dataset: { which: k }, onclick: () => load(k) }, v));
  }
  view.replaceChildren(h("h2", {}, "我的图书"), seg, list);
  await load(tab);
}

// -- publish -------------------------------------------------------------------------------------
async function showPublish() {
  const f = (id, label, attrs = {}) => [h("label", { for: id }, label), h("input", { id, ...attrs })];
  const err = h("div", { class: "error" });
  const coverInput = h("input", { id: "pub-cover", type: "file", accept: "image/*" });
  const submit = async (e) => {
    e.preventDefault();
    err.textContent = "";
    const v = (id) => document.getElementById(id).value.trim();
    const body = { isbn: v("pub-isbn") };
    for (const [k, id] of [["title", "pub-title"], ["author", "pub-author"], ["publisher", "pub-publisher"], ["summary", "pub-summary"]]) {
      if (v(id)) body[k] = v(id);
    }
    const tags = v("pub-tags").split(/[,，\s]+/).filter(Boolean);
    if (tags.length) body.tags = tags;
    try {
      if (coverInput.files[0]) body.cover_url = (await api.upload(coverInput.files[0], "cover")).url;
      const book = await api.publish(body); // follows a 202 to the book
      toast("发布成功");
      location.hash = `#/book/${book.id}`;
    } catch (x) { err.textContent = errorText(x); }
  };
  view.replaceChildren(h("h2", {}, "发布图书"), h("form", { class: "card", onsubmit: submit },
    ...f("pub-isbn", "ISBN", { required: true, placeholder: "978…" }),
    ...f("pub-title", "书名（书目库中有则可不填）"),
    ...f("pub-author", "作者"), ...f("pub-publisher", "出版社"),
    ...f("pub-tags", "标签（逗号分隔）", { placeholder: "科幻, 小说" }),
    h("label", { for: "pub-summary" }, "简介"), h("textarea", { id: "pub-summary" }),
    h("label", { for: "pub-cover" }, "封面"), coverInput, err,
    h("div", { class: "actions" }, h("button", { type: "submit", id: "pub-go" }, "发布"))));
}

// -- a book: borrow, and its history for the owner ---------------------------------------------------
async function showBook(id) {
  const book = await api.get(`/v1/books/${id}`);
  const me = api.reader;
  const mine = book.owner.id === me.id;
  const box = h("div", {});
  if (!mine && book.status === "available") {
    const note = h("textarea", { id: "borrow-note", placeholder: "想对书主说的话", maxlength: 200 });
    const wx = h("input", { id: "borrow-wechat", placeholder: "微信号（只给书主看）" });
    const err = h("div", { class: "error" });
    box.append(h("form", { class: "card", onsubmit: async (e) => {
      e.preventDefault();
      try {
        const body = { note: note.value.trim() };
        if (wx.value.trim()) body.contact = { wechat_id: wx.value.trim() };
        await api.requestLoan(id, body);
        toast("已发送借阅请求");
        location.hash = "#/loans";
      } catch (x) { err.textContent = errorText(x); }
    } }, h("h3", {}, "借这本书"), h("label", { for: "borrow-note" }, "留言"), note,
    h("label", { for: "borrow-wechat" }, "联系方式"), wx, err,
    h("div", { class: "actions" }, h("button", { type: "submit", id: "borrow-go" }, "借阅"))));
  } else if (!mine) {
    box.append(h("div", { class: "card muted" }, "这本书现在", STATUS[book.status] || book.status, "，暂不可借"));
  }
  if (!mine) {
    box.append(h("div", { class: "actions" }, h("button", {
      type: "button", class: "secondary", onclick: async () => {
        const c = await api.openConversation(book.owner.id);
        location.hash = `#/chat/${c.id}`;
      },
    }, "联系书主")));
  }
  if (mine) {
    const hist = await api.get(`/v1/books/${id}/history`);
    const items = hist.items || hist;
    const names = {}; // borrower ids → nicknames, from the loans of this book the owner sees
    for (const l of (await api.get("/v1/me/loans", { role: "lender", limit: 100 })).items) {
      if (l.book.id === id) names[l.borrower.id] = l.borrower.nickname;
    }
    box.append(h("div", { class: "card" }, h("h3", {}, "流转记录（仅书主可见）"),
      h("ol", { class: "history", id: "book-history" }, items.map((ev) =>
        h("li", { dataset: { type: ev.type } }, when(ev.at), " · ", HISTORY[ev.type] || ev.type,
          (ev.type === "Lent" || ev.type === "RequestReceived") && ev.data?.borrower_id ? ` · ${names[ev.data.borrower_id] || "借阅人"}` : "")))));
  }
  view.replaceChildren(h("h2", {}, book.title), h("div", { class: "card book" }, cover(book),
    h("div", { class: "meta" },
      h("div", { class: "sub" }, "作者：", book.author || "—"),
      h("div", { class: "sub" }, "出版社：", book.publisher || "—"),
      h("div", { class: "sub" }, "ISBN：", book.isbn),
      h("div", { class: "sub" }, "书主：", book.owner.nickname, " ", statusChip(book.status)),
      h("div", {}, (book.tags || []).map((t) => h("span", { class: "tag" }, t))),
      book.summary ? h("p", {}, book.summary) : null,
      mine && book.borrower ? h("div", { class: "sub" }, "借阅人：", book.borrower.nickname) : null)), box);
}

// -- loans: approve / decline / cancel / return / confirm -----------------------------------------------
function loanCard(loan, role, reload) {
  const act = (label, verb, cls) => h("button", {
    type: "button", class: cls || "", dataset: { action: verb },
    onclick: async (e) => {
      e.target.disabled = true;
      try { await api.loanStep(loan.id, verb); toast(`已${label}`); }
      catch (x) { toast(errorText(x)); }
      reload();
    },
  }, label);
  const actions = [];
  if (role === "lender" && loan.status === "requested") actions.push(act("同意", "approve"), act("拒绝", "decline", "danger"));
  if (role === "lender" && loan.status === "returning") actions.push(act("确认收到", "confirm-return"));
  if (role === "borrower" && loan.status === "requested") actions.push(act("取消", "cancel", "secondary"));
  if (role === "borrower" && loan.status === "approved") actions.push(act("归还", "return"));
  const peer = role === "lender" ? loan.borrower : loan.lender;
  return h("div", { class: "card loan", dataset: { loanId: loan.id, status: loan.status } },
    h("div", { class: "row" }, h("a", { class: "title grow", href: `#/book/${loan.book.id}` }, loan.book.title), statusChip(loan.status)),
    h("div", { class: "sub" }, role === "lender" ? "借阅人：" : "书主：", peer.nickname, " · ", when(loan.requested_at)),
    loan.note ? h("div", { class: "sub" }, "留言：", loan.note) : null,
    loan.contact && Object.keys(loan.contact).length
      ? h("div", { class: "sub" }, "联系方式：", Object.values(loan.contact).join(" / ")) : null,
    actions.length ? h("div", { class: "actions" }, actions) : null);
}

async function showLoans() {
  const lent = h("div", { id: "loans-lender" });
  const borrowed = h("div", { id: "loans-borrower" });
  const load = async () => {
    const [a, b] = await Promise.all([
      api.get("/v1/me/loans", { role: "lender", limit: 50 }),
      api.get("/v1/me/loans", { role: "borrower", limit: 50 }),
    ]);
    lent.replaceChildren(...(a.items.length ? a.items.map((l) => loanCard(l, "lender", load)) : [empty("没有人向你借书")]));
    borrowed.replaceChildren(...(b.items.length ? b.items.map((l) => loanCard(l, "borrower", load)) : [empty("你还没有借书")]));
    return [...a.items, ...b.items];
  };
  // The inbox (which pushes the event) and the shelf (which the list reads) are two read
  // models: the list may not show the change yet when the event arrives, so look again.
  const until = async (loanId, status) => {
    for (let i = 0; i < 20; i++) {
      const loans = await load();
      if (loans.some((l) => l.id === loanId && l.status === status)) return;
      await new Promise((r) => setTimeout(r, 250));
    }
  };
  view.replaceChildren(h("h2", {}, "借阅请求"), h("h3", {}, "别人向我借的"), lent, h("h3", {}, "我借的"), borrowed);
  await load();
  leaving = api.on("event", (f) => {
    if (f.kind.startsWith("loan.")) until(f.data.loan_id, f.data.status || f.kind.slice(5));
  });
  setBadge("loans", 0);
}

// -- chat ------------------------------------------------------------------------------------------
async function showChats() {
  const page = await api.get("/v1/conversations", { limit: 50 });
  view.replaceChildren(h("h2", {}, "消息"), ...(page.items.length ? page.items.map((c) =>
    h("a", { class: "card row", href: `#/chat/${c.id}`, style: "color:inherit" },
      h("div", { class: "grow" },
        h("div", { class: "title" }, c.peer.nickname, c.peer_online ? h("span", { class: "online" }, " ·在线") : null),
        h("div", { class: "sub" }, c.last_message ? (c.last_message.text || "[图片]") : "还没有消息")),
      c.unread ? h("b", { class: "badge", style: "position:static" }, c.unread) : null))
    : [empty("还没有对话：在书的页面点「联系书主」")]));
  setBadge("chats", 0);
}

function messageBubble(m, meId) {
  const media = m.media || m.image;
  return h("div", { class: `msg${m.sender.id === meId ? " mine" : ""}`, dataset: { seq: m.seq } },
    h("div", { class: "who" }, m.sender.nickname),
    m.text ? h("div", {}, m.text) : null,
    media && (media.thumb_url || media.url) ? h("img", { src: media.thumb_url || media.url, alt: "图片" }) : null);
}

async function showChat(id) {
  const me = api.reader;
  const list = h("div", { class: "chat", id: "chat-list" });
  const seen = new Set();
  const add = (m) => {
    if (seen.has(m.id || m.message_id)) return;
    seen.add(m.id || m.message_id);
    list.append(messageBubble(m, me.id));
    window.scrollTo(0, document.body.scrollHeight);
  };
  const [page, conversations] = await Promise.all([
    api.get(`/v1/conversations/${id}/messages`, { limit: 50 }),
    api.get("/v1/conversations", { limit: 100 }),
  ]);
  const peer = conversations.items.find((c) => c.id === id)?.peer;
  const text = h("input", { type: "text", id: "chat-text", placeholder: "说点什么…", maxlength: 2000 });
  const file = h("input", { type: "file", accept: "image/*", hidden: true, id: "chat-file" });
  const send = async (extra) => {
    const body = { type: "chat.send", conversation_id: id, text: text.value.trim(), ...extra };
    if (!body.text && !body.media_id) return;
    text.value = "";
    try { await api.send(body); } catch (x) { toast(errorText(x)); }
  };
  file.addEventListener("change", async () => {
    if (!file.files[0]) return;
    try {
      const media = await api.upload(file.files[0], "chat");
      await send({ media_id: media.id });
    } catch (x) { toast(errorText(x)); }
    file.value = "";
  });
  view.replaceChildren(h("h2", {}, peer ? `与 ${peer.nickname} 的对话` : "对话"), list, h("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); send(); } },
    h("button", { type: "button", class: "pick", onclick: () => file.click(), title: "发图片" }, "图片"), file, text,
    h("button", { type: "submit", id: "chat-send" }, "发送")));
  page.items.slice().reverse().forEach(add);
  const last = page.items[0];
  if (last) api.post(`/v1/conversations/${id}/read`, { up_to: last.seq }).catch(() => {});
  leaving = api.on("chat.message", (f) => {
    if (f.data.conversation_id !== id) return;
    const d = f.data;
    add({ id: d.message_id || d.id, seq: d.seq, text: d.text, sender: d.sender, media: d.media, at: d.at });
    api.post(`/v1/conversations/${id}/read`, { up_to: d.seq }).catch(() => {});
  });
}

// -- rooms ----------------------------------------------------------------------------------------
async function showRooms() {
  const page = await api.get("/v1/rooms", { limit: 50 });
  view.replaceChildren(h("h2", {}, "聊天室"), ...(page.items.length ? page.items.map((r) =>
    h("a", { class: "card row", href: `#/room/${r.name}`, style: "color:inherit" },
      h("div", { class: "grow" }, h("div", { class: "title" }, r.title), h("div", { class: "sub" }, `${r.messages} 条消息`)),
      h("span", { class: "online" }, `${r.members} 人在线`)))
    : [empty("还没有聊天室")]));
}

async function showRoom(name) {
  const me = api.reader;
  const count = h("span", { class: "online", id: "room-online" }, "…");
  const list = h("div", { class: "chat", id: "room-list" });
  const seen = new Set();
  const add = (m) => {
    if (seen.has(m.id)) return;
    seen.add(m.id);
    list.append(messageBubble(m, me.id));
    window.scrollTo(0, document.body.scrollHeight);
  };
  const [history, rooms] = await Promise.all([
    api.get(`/v1/rooms/${encodeURIComponent(name)}/messages`, { limit: 50 }),
    api.get("/v1/rooms", { limit: 100 }),
  ]);
  const room = rooms.items.find((r) => r.name === name);
  const text = h("input", { type: "text", id: "room-text", placeholder: "和大家聊聊…", maxlength: 2000 });
  view.replaceChildren(h("div", { class: "row" }, h("h2", { class: "grow" }, room ? room.title : name), count), list,
    h("form", { class: "composer", onsubmit: async (e) => {
      e.preventDefault();
      const t = text.value.trim();
      if (!t) return;
      text.value = "";
      try { await api.send({ type: "room.send", room: name, text: t }); } catch (x) { toast(errorText(x)); }
    } }, text, h("button", { type: "submit", id: "room-send" }, "发送")));
  history.items.slice().reverse().forEach(add);
  const offs = [
    api.on("room.joined", (f) => { if (f.room === name) count.textContent = `${f.members} 人在线`; }),
    api.on("room.presence", (f) => { if (f.room === name) count.textContent = `${f.members} 人在线`; }),
    api.on("room.message", (f) => { if (f.room === name) add({ id: f.message_id, seq: f.seq, text: f.text, sender: f.sender, media: f.media }); }),
  ];
  api.joinRoom(name).then((joined) => { count.textContent = `${joined.members} 人在线`; }, () => {});
  leaving = () => { offs.forEach((off) => off()); api.leaveRoom(name); };
}

// -- live: badges, toasts, connection state ----------------------------------------------------------
const badges = { loans: 0, chats: 0 };
function setBadge(which, n) {
  badges[which] = n;
  const b = $(`#badge-${which}`);
  b.textContent = n;
  b.hidden = !n;
}

api.on("event", (f) => {
  if (f.kind.startsWith("loan.")) {
    if (current !== "loans") setBadge("loans", badges.loans + 1);
    toast(`${KIND[f.kind] || f.kind}：《${f.data.book?.title || ""}》`);
  } else if (f.kind === "chat.message" && f.data.sender?.id !== api.reader?.id) {
    if (current !== "chat") { setBadge("chats", badges.chats + 1); toast(`${f.data.sender?.nickname}：${f.data.text || "[图片]"}`); }
  }
});
api.on("state", (s) => {
  $("#conn").classList.toggle("live", s === "live");
  $("#conn").dataset.state = s;
  if (s === "logged_out") location.hash = "#/login";
});

window.addEventListener("hashchange", route);
api.start().then(route, route);
