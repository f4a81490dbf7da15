-- depends: 0002_projection_registry
-- Responses of POSTs sent with an Idempotency-Key, replayed on a retry with the same key.

CREATE TABLE idempotency_keys (
    reader_id uuid NOT NULL,
    key text NOT NULL,
    method text NOT NULL,
    path text NOT NULL,
    request_hash text NOT NULL,
    status integer,                 -- NULL while the first request is in progress
    body bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (reader_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
