"""Realtime: the WebSocket gateway, the inbox → NATS relay, rooms, room and reader presence.

Imports ``domain`` (commands, errors) and third-party libraries only: never ``api`` nor
``projections``. What it needs from the read models (the inbox feed, room lookups) it takes as
small protocols (``realtime.gateway.InboxFeed``, ``realtime.relay.InboxPages``) that the
composition root (``api``) satisfies.

::

    inbox projection ─(after commit)─▶ Relay ─▶ JetStream LIUDONG_INBOX, liudong.inbox.<reader>
                                                       │ (core subscription on every node)
                     Gateway sessions of that reader ◀─┘   gaps and resumes: from the inbox table
    room.send ─▶ Chat ─▶ liudong.room.<room id> ─▶ every node's members of that room
    join/leave ─▶ Presence ─▶ liudong.presence.<room> (state + heartbeats) ─▶ member counts
    socket open/close ─▶ ReaderPresence ─▶ liudong.readers.presence (changes + heartbeats)
                     ─▶ every node: ``presence`` frames to the reader's conversation peers
"""
