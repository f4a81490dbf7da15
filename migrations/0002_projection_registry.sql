-- depends: 0001_event_store
-- Which version (PostgreSQL schema) of each read model serves reads, and how far each
-- version has processed its log (its tracking position, written in the same transaction
-- as the read-model rows).

CREATE TABLE projection_versions (
    projection text NOT NULL,
    version integer NOT NULL,
    schema_name text NOT NULL UNIQUE,
    active boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, version)
);
-- at most one active version per projection
CREATE UNIQUE INDEX projection_versions_one_active ON projection_versions (projection) WHERE active;

CREATE TABLE projection_tracking (
    schema_name text NOT NULL,
    source text NOT NULL,           -- 'library' | 'chat': the notification log followed
    position bigint NOT NULL DEFAULT 0,
    last_event_at timestamptz,      -- timestamp of the last processed event (lag in seconds)
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, source)
);

-- A projection that failed on an event stops and says so here; never skipped silently.
CREATE TABLE projection_failures (
    schema_name text NOT NULL,
    source text NOT NULL,
    position bigint NOT NULL,
    error text NOT NULL,
    failed_at timestamptz NOT NULL DEFAULT now(),
    skipped_at timestamptz,         -- set when an operator skipped it explicitly
    skipped_by text,
    PRIMARY KEY (schema_name, source, position)
);
