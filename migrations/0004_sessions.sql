-- depends: 0003_idempotency
-- Session tokens of logged-in readers (POST /v1/auth/login). Only the SHA-256 of a token is
-- stored: a leak of this table does not let anyone act as a reader. Tokens expire
-- (expires_at) and are revocable one by one (logout) or all at once (revoked_at).

CREATE TABLE sessions (
    token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),   -- sha256(token)
    reader_id uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sessions_reader_id ON sessions (reader_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
