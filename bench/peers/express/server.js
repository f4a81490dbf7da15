// Bench peer (bench/scenarios/commands.py): Express 5 + pg, one INSERT per request.
//
//   PORT=8001 PEER_POOL_SIZE=16 PGHOST=... PGDATABASE=... node server.js
//
// POST /insert (any JSON body, parsed) inserts one 300-byte row into bench_peer_insert
// with a pooled connection (autocommit) and answers {"id": <bigserial>} as JSON.
// GET /ready answers "ok". Prints "ready" once listening. No access log, one process (Node's default).
"use strict";
const crypto = require("node:crypto");
const express = require("express");
const { Pool } = require("pg");

const pool = new Pool({ max: Number(process.env.PEER_POOL_SIZE || 16) });
const payload = crypto.randomBytes(300);
const app = express();
app.use(express.json());

app.post("/insert", async (req, res, next) => {
  try {
    const result = await pool.query(
      "INSERT INTO bench_peer_insert (originator_id, payload) VALUES ($1, $2) RETURNING id",
      [crypto.randomUUID(), payload],
    );
    res.json({ id: result.rows[0].id, note: req.body ? req.body.note : null });
  } catch (err) {
    next(err);
  }
});

app.get("/ready", (req, res) => res.send("ok"));

const server = app.listen(Number(process.env.PORT), "127.0.0.1", () => {
  process.stdout.write("ready\n");
});
process.on("SIGTERM", () => {
  server.close();
  pool.end().finally(() => process.exit(0));
});
