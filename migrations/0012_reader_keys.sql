-- depends: 0010_ws_tickets
-- Crypto-shredding (docs/SECURITY.md): one data key per reader, never in an event.
-- The personal fields of a reader's events (domain/personal.py) are sealed with AES-256-GCM
-- under this key (api/adapters/shredding.py). DELETE /v1/me sets data_key to NULL and
-- destroyed_at: the tombstone stays so that no new key is ever made for that reader.

CREATE TABLE IF NOT EXISTS reader_keys (
    reader_id uuid PRIMARY KEY,
    data_key bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    destroyed_at timestamptz,
    CHECK ((data_key IS NULL) = (destroyed_at IS NOT NULL)),
    CHECK (data_key IS NULL OR octet_length(data_key) = 32)
);
