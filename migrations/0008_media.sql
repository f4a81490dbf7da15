-- depends: 0007_projection_skip_reason
-- Uploaded pictures (POST /v1/media; api.adapters.media, docs/MEDIA.md). A picture's id is
-- the SHA-256 (hex) of its cleaned bytes: the same picture uploaded twice is one row. Its
-- files live in the media storage (disk or S3), not here.
--
-- media: one row per stored picture. last_uploaded_at starts the grace period after which
-- a picture nobody attached is swept; a swept picture keeps its row with deleted_at (its id
-- answers 404; uploading the same picture again stores it anew).
-- media_uploads: who uploaded it (ownership is per reader: any of them may attach it), for
-- what, and whether that reader attached it.

CREATE TABLE media (
    id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{64}$'),
    content_type text NOT NULL
        CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp', 'image/gif')),
    width integer NOT NULL CHECK (width > 0),
    height integer NOT NULL CHECK (height > 0),
    bytes bigint NOT NULL CHECK (bytes > 0),
    thumb_width integer NOT NULL CHECK (thumb_width > 0),
    thumb_height integer NOT NULL CHECK (thumb_height > 0),
    thumb_bytes bigint NOT NULL CHECK (thumb_bytes > 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    last_uploaded_at timestamptz NOT NULL DEFAULT now(),
    attached_at timestamptz,
    deleted_at timestamptz
);
-- the sweep's candidates
CREATE INDEX media_unattached ON media (last_uploaded_at)
    WHERE attached_at IS NULL AND deleted_at IS NULL;

CREATE TABLE media_uploads (
    media_id text NOT NULL REFERENCES media (id) ON DELETE CASCADE,
    reader_id uuid NOT NULL,
    purpose text CHECK (purpose IN ('cover', 'avatar', 'chat', 'room')),
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    attached_at timestamptz,
    PRIMARY KEY (media_id, reader_id)
);
CREATE INDEX media_uploads_reader_id ON media_uploads (reader_id);
