-- depends: 0005_catalog
-- The inbox → NATS relay's own tracking: how far (per notification log) the items of the
-- inbox read model have been published to JetStream (stream LIUDONG_INBOX) and acknowledged.
-- Advanced only after JetStream acked; on start / NATS reconnect the relay re-publishes every
-- item after it (JetStream drops repeats by their Nats-Msg-Id "<reader_id>:<seq>").
-- The inbox table stays the source of truth; this only bounds what must be re-published.

CREATE TABLE relay_tracking (
    source text PRIMARY KEY,            -- 'library' | 'chat': the notification log
    position bigint NOT NULL DEFAULT 0, -- last log position whose inbox items JetStream acked
    updated_at timestamptz NOT NULL DEFAULT now()
);
