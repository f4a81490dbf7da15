// Bench peer (bench/scenarios/fanout.py): a Node `ws` broadcast server speaking just enough
// of the gateway's protocol for the fanout client, like bench/ws_baseline.py:
//
//   PORT=8002 node server.js
//
// Every connection gets a `hello`; `room.join` is answered with `room.joined` (every
// connection is in the one room); `room.send` is broadcast to every open connection (the
// sender included) as a `room.message` of the gateway's shape, encoded once; `ping` gets
// `pong`. No permessage-deflate (ws's server default), no database, no queues.
"use strict";
const crypto = require("node:crypto");
const { WebSocketServer, WebSocket } = require("ws");

const wss = new WebSocketServer({ host: "127.0.0.1", port: Number(process.env.PORT), backlog: 4096 });
let seq = 0;

wss.on("connection", (ws) => {
  const reader = { id: crypto.randomUUID(), nickname: "bench" };
  ws.send(JSON.stringify({ type: "hello", reader, head: 0, heartbeat: 25.0 }));
  ws.on("message", (data) => {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (frame.type === "room.send") {
      seq += 1;
      const out = Buffer.from(
        JSON.stringify({
          type: "room.message",
          room: frame.room,
          message_id: crypto.randomUUID(),
          sender: reader,
          text: frame.text,
          at: new Date().toISOString(),
          seq,
        }),
      );
      for (const client of wss.clients) {
        if (client.readyState === WebSocket.OPEN) client.send(out, { binary: false });
      }
    } else if (frame.type === "room.join") {
      ws.send(
        JSON.stringify({ type: "room.joined", room: frame.room, title: "Bench", members: wss.clients.size }),
      );
    } else if (frame.type === "ping") {
      ws.send('{"type":"pong"}');
    }
  });
});
wss.on("listening", () => process.stdout.write("ready\n"));
process.on("SIGTERM", () => {
  for (const client of wss.clients) client.terminate();
  wss.close(() => process.exit(0));
});
