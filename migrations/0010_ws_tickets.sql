-- depends: 0008_media
-- Single-use WebSocket tickets (POST /v1/ws/tickets → GET /v1/ws?ticket=): a browser cannot
-- set an Authorization header on a WebSocket, and a session token in a URL ends up in logs
-- and histories. A ticket lives at most 60 s and is deleted when used; only its SHA-256 is
-- stored, with the session (token_hash) it stands for.

CREATE TABLE ws_tickets (
    ticket_hash bytea PRIMARY KEY CHECK (octet_length(ticket_hash) = 32),   -- sha256(ticket)
    token_hash bytea NOT NULL REFERENCES sessions (token_hash) ON DELETE CASCADE,
    expires_at timestamptz NOT NULL
);
CREATE INDEX ws_tickets_expires_at ON ws_tickets (expires_at);
CREATE INDEX sessions_reader_live ON sessions (reader_id, created_at) WHERE revoked_at IS NULL;
