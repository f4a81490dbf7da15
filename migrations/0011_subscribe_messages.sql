-- depends: 0010_ws_tickets
-- Subscribe messages (订阅消息) for readers who are away (api.adapters.subscribe).
--
-- subscribe_grants: the one-time grants a reader gave per template (wx.requestSubscribeMessage,
-- reported by POST /v1/me/subscriptions); each message sent uses one.
-- notify_tracking: how far the notifier has followed each inbox source (library, chat), in
-- log positions, moved in the same transaction as the notifications it recorded.
-- subscribe_notifications: one row per inbox item of a configured kind, keyed like the item's
-- origin (source, position, reader_id): inserted once (the intent), then its outcome.

CREATE TABLE subscribe_grants (
    reader_id uuid NOT NULL,
    template_id text NOT NULL,
    remaining integer NOT NULL CHECK (remaining >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (reader_id, template_id)
);

CREATE TABLE notify_tracking (
    source text PRIMARY KEY,
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE subscribe_notifications (
    source text NOT NULL,
    position bigint NOT NULL,
    reader_id uuid NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    template_id text NOT NULL,
    page text NOT NULL DEFAULT '',
    data jsonb NOT NULL,
    status text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sending', 'sent', 'refused', 'skipped', 'failed')),
    reason text,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    item_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    PRIMARY KEY (source, position, reader_id)
);
CREATE INDEX subscribe_notifications_due ON subscribe_notifications (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX subscribe_notifications_reader ON subscribe_notifications (reader_id);
CREATE INDEX subscribe_notifications_status ON subscribe_notifications (status);
