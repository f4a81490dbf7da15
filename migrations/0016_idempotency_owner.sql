-- depends: 0010_ws_tickets
-- Which database session took an Idempotency-Key (the request's pooled connection: its
-- backend pid and start time, as pg_stat_activity shows them). A retry that finds the key
-- still "in progress" asks whether that session still exists: when it does not, the process
-- that ran the first request died (kill -9, crash) and a command that did not commit is run
-- by the retry at once, instead of answering 409 idempotency_in_progress until the key
-- goes stale (api/http/idempotency.py).

ALTER TABLE idempotency_keys
    ADD COLUMN owner_pid integer,
    ADD COLUMN owner_start timestamptz;
