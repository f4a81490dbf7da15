-- depends: 0009_wechat
-- What an operator decided about a flagged text (the console's approve / remove, or
-- `liudong moderation resolve`): 'approved' (it may stay), 'removed' (it must go), or NULL
-- (handled without a decision, as before this migration).

ALTER TABLE moderation_flags ADD COLUMN resolution text
    CHECK (resolution IS NULL OR resolution IN ('approved', 'removed'));
