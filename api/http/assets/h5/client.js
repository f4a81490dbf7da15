// The H5's connection to Liudong: REST + the realtime socket, through the mini-program SDK's
// core (/sdk, clients/miniprogram/src) when it is there, with the browser adapter of
// browser.js (fetch, WebSocket with single-use tickets, localStorage).
//
// What the screens use:
//   api.start() / api.ready()       load the stored session, connect the socket
//   api.login(name, nickname) → reader   dev login (`dev:<name>`; refused in production)
//   api.reader / api.logout()
//   api.get(path, query) · api.post(path, body) · api.patch(path, body) · api.del(path)
//   api.publish(body) · api.requestLoan(bookId, body) · api.loanStep(loanId, step)
//   api.openConversation(peerId)    the SDK's typed helpers (they follow a 202 Accepted)
//   api.upload(file, purpose) → media {id, url, thumb_url}
//   api.on(kind, handler)           inbox events (`loan.requested`…), `room.*`, `state`
//   api.send(frame) → Promise(ack)  chat.send / room.send, retried until acked
//   api.joinRoom(name) / api.leaveRoom(name)
// Errors: the SDK's LiudongError {status, code, detail}.

import { makeClient } from "./browser.js";

export const api = makeClient({ baseURL: location.origin });
