-- depends: 0003_idempotency
-- Idempotency survives a crash for every command: the event store's recorder marks the
-- request's key in the same transaction as the command's events (api.adapters.eventstore), so
-- a retry after a crash between the commit and the stored response knows the command
-- happened, and where in which log, and answers from that instead of running it again.

ALTER TABLE idempotency_keys
    ADD COLUMN committed_log text,          -- 'library' or 'chat': the log the events went to
    ADD COLUMN committed_position bigint;   -- the position of the last of those events
