-- depends: 0010_ws_tickets
-- Pictures used everywhere and checked by WeChat (issue 12, parts 4 and 5; docs/MEDIA.md).
--
-- media.check_trace_id: the trace_id WeChat's mediaCheckAsync answered for the picture; its
-- result arrives later on the message push endpoint (wxa_media_check) and names only the
-- trace_id, so it maps back to the picture here. check_status: NULL (not submitted: no
-- WeChat, or the local checker), 'pending', 'pass', 'review', 'risky' or 'failed' (the
-- submission itself failed; the picture stays).
-- media.removed_at / removed_reason: the picture was taken down ('risky'); its files are
-- deleted, its id answers 410 for good (an upload of the same bytes is refused), and the
-- read models show a placeholder (Media.Removed in the Library log).
ALTER TABLE media
    ADD COLUMN check_trace_id text UNIQUE,
    ADD COLUMN check_status text
        CHECK (check_status IN ('pending', 'pass', 'review', 'risky', 'failed')),
    ADD COLUMN checked_at timestamptz,
    ADD COLUMN removed_at timestamptz,
    ADD COLUMN removed_reason text;

-- Messages carry a picture: the inbox's and the rooms' messages tables get a media column
-- (projections.media). New versions create it from the projections' DDL; versions that exist
-- already get it here, and the views of the active ones are made again so that they show it
-- (a view's SELECT * is fixed when it is made). Old rows have no picture (NULL). The inbox
-- also gets removed_media (the pictures taken down, which messages projected later check).
DO $$
DECLARE
    v record;
BEGIN
    FOR v IN
        SELECT pv.projection, pv.schema_name, pv.active
        FROM projection_versions pv
        WHERE pv.projection IN ('inbox', 'rooms')
          AND EXISTS (SELECT 1 FROM information_schema.tables t
                      WHERE t.table_schema = pv.schema_name AND t.table_name = 'messages')
    LOOP
        EXECUTE format('ALTER TABLE %I.messages ADD COLUMN IF NOT EXISTS media jsonb',
                       v.schema_name);
        IF v.projection = 'inbox' THEN
            EXECUTE format('CREATE INDEX IF NOT EXISTS messages_media_idx ON %I.messages '
                           '((media->>''id'')) WHERE media IS NOT NULL', v.schema_name);
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I.removed_media '
                           '(media_id text PRIMARY KEY, reason text NOT NULL)', v.schema_name);
            IF v.active THEN
                EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I', v.projection);
                EXECUTE format('CREATE OR REPLACE VIEW %I.removed_media AS '
                               'SELECT * FROM %I.removed_media', v.projection, v.schema_name);
            END IF;
        END IF;
        IF v.active AND EXISTS (SELECT 1 FROM information_schema.views w
                                WHERE w.table_schema = v.projection
                                  AND w.table_name = 'messages') THEN
            EXECUTE format('CREATE OR REPLACE VIEW %I.messages AS SELECT * FROM %I.messages',
                           v.projection, v.schema_name);
        END IF;
    END LOOP;
END
$$;
