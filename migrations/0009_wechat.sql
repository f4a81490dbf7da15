-- depends: 0004_sessions
-- The WeChat platform (api/adapters/wechat_api.py, api/adapters/openids.py,
-- api/adapters/moderation/flags.py).

-- The server API's stable access token (getStableAccessToken), one row per AppID, shared by
-- every node: a node refreshes it inside a transaction holding an advisory lock
-- (pg_advisory_xact_lock), so one node at a time calls WeChat and the others read its row.
-- refresh_after: when a node should fetch the next one (expires_at minus the margin).
CREATE TABLE wechat_access_token (
    appid text PRIMARY KEY,
    access_token text NOT NULL,
    expires_at timestamptz NOT NULL,
    refresh_after timestamptz NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    refreshed_by text NOT NULL DEFAULT ''
);

-- The openId of each reader who logged in with WeChat (reader_id = uuid5(openId) cannot be
-- reversed): msgSecCheck needs the writer's openId, subscribe messages the recipient's.
CREATE TABLE wechat_openids (
    reader_id uuid PRIMARY KEY,
    open_id text NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- Texts the content check accepted with a "review" verdict (ContentFlagged): recorded with
-- the command, marked here for an operator (`liudong moderation list`, `... resolve ID`).
CREATE TABLE moderation_flags (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flagged_at timestamptz NOT NULL DEFAULT now(),
    reader_id uuid NOT NULL,
    scene smallint NOT NULL,            -- msgSecCheck v2 scene: 1 profile, 2 comment, 3 forum, 4 social log
    field text NOT NULL,                -- e.g. text, nickname, title, summary, note, reason
    subject text,                       -- what it belongs to, e.g. conversation:<id>, book:<id>
    label text NOT NULL DEFAULT '',     -- why (the checker's label: ad, abuse, …)
    provider text NOT NULL,             -- local | wechat
    text text NOT NULL,
    resolved_at timestamptz,
    resolved_by text
);
CREATE INDEX moderation_flags_open ON moderation_flags (flagged_at) WHERE resolved_at IS NULL;
