"""The inbox read model: each reader's ordered feed, conversations and message history.

Written only by ``InboxProjection`` (from the Library **and** the Chat logs); read only through
``InboxQueries`` (views in schema ``inbox``, or the schema named after a test projection).
This module defines it for both ways of writing it, event by event (``projection``) and a
page at a time (``page``): the tables (``DDL``, and the same as ``projections.batch.Table``s),
the item kinds of loan events (``LOAN_KINDS``) and what follows.

Tables (in each version's schema, exposed as views ``inbox.<table>``)::

    heads(reader_id pk, seq)                 the last seq given to each reader
    items(reader_id, seq, kind, at, data jsonb, source, position)
        PRIMARY KEY (reader_id, seq), UNIQUE (source, position, reader_id)
    conversations(reader_id, conversation_id, peer_id, loan_id, last_message jsonb,
                  last_seq, read_up_to, unread, opened_at, updated_at, activity)
        PRIMARY KEY (reader_id, conversation_id): one row per member
    messages(conversation_id, seq, message_id unique, sender_id, text, client_msg_id, at,
             hidden_for uuid[], media jsonb)  PRIMARY KEY (conversation_id, seq)
                                              media: the event's {id, width, height}
                                              (+ removed: true), projections.media
    removed_media(media_id pk, reason)       pictures taken down (Media.Removed): a
                                              message sent with one, projected after it
                                              (a rebuild replays the Library log first),
                                              is stored removed too
    readers(id, nickname, avatar_url), books(id, owner_id, title),
    loans(id, book_id, borrower_id, lender_id)
                                              lookups fed by Library events, so this
                                              projection needs no other read model

Per-reader ``seq``
    1, 2, 3… without gaps: every item takes ``heads.seq + 1`` of its reader in the same
    statement that inserts it (``INSERT … ON CONFLICT DO UPDATE … RETURNING``), inside the
    page's transaction, and only one runner writes a projection at a time (advisory lock).
    ``(source, position)`` says which log event made an item (a relay publishes by it).

Item kinds and recipients (``data`` shapes; ids are strings, times ISO 8601 UTC)::

    loan.requested   lender             loan fields + note, contact (personal data: the
                                         lender of that loan only, while the loan is open:
                                         ``contact`` becomes null when it ends, ``ENDED``)
    loan.approved    borrower           loan fields
    loan.declined    borrower           loan fields + reason
    loan.cancelled   borrower, lender   loan fields (the borrower cancelled)
    loan.returning   lender             loan fields (the borrower says it is back)
    loan.returned    borrower           loan fields (the lender confirmed)
    chat.message     both members       conversation_id, message_id, seq, text,
                     (the sender too:   client_msg_id, at, sender {id, nickname, avatar_url},
                     their other devices) media (a picture view, projections.media, or null)
    chat.read        both members       conversation_id, reader_id, up_to (the reader's own
                                         devices clear their badge; the peer sees a receipt)
    chat.hidden      the hiding reader  conversation_id, message_id (their other devices)
    media.removed    the members of     media_id, reason, messages [{conversation_id,
                     conversations that  message_id}]: a picture was taken down
                     showed it           (Media.Removed; one item per reader)

    loan fields: loan_id, status, book {id, title},
                 borrower {id, nickname, avatar_url}, lender {id, nickname, avatar_url}

Chat messages
    ``message_id`` is unique: a retried send beyond the aggregate's window (a second
    ``MessageSent`` with the same id and a new seq) is ignored here, so it neither shows twice
    nor makes an inbox item. ``unread`` counts the peer's messages after the reader's
    ``read_up_to`` that are not hidden for them; ``MessagesRead`` and ``MessageHidden`` lower
    it. A hidden message disappears from that reader's history and last message only.

Erasure (``Reader.Forgotten``, ``scrub_forgotten``)
    the reader's ``readers`` row and every ``borrower`` / ``lender`` / ``sender`` object of
    an item or a last message that is theirs show ``"已注销"`` and no avatar; the note and
    contact of their loan requests are cleared in the lenders' items, the text of their
    messages in the history, the items and the last messages.

Rooms are not in the inbox (``Room.*`` events are ignored here).

Rebuild caveat: a rebuild replays the Library log and then the Chat log page by page, so
items of the two logs may interleave differently than when they were live: a rebuilt version
numbers a reader's items in another order (still gap-free). Clients whose last seen ``seq``
is above the new head must resynchronise.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import sql

from domain.loan import ENDED_STATUSES
from domain.reader import FORGOTTEN_NICKNAME
from projections.batch import Table, as_json

DDL = """
CREATE TABLE {schema}.heads (
    reader_id uuid PRIMARY KEY,
    seq bigint NOT NULL
);
CREATE TABLE {schema}.items (
    reader_id uuid NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    at timestamptz NOT NULL,
    data jsonb NOT NULL,
    source text NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (reader_id, seq),
    UNIQUE (source, position, reader_id)
);
CREATE TABLE {schema}.readers (
    id uuid PRIMARY KEY,
    nickname text NOT NULL,
    avatar_url text NOT NULL DEFAULT ''
);
CREATE TABLE {schema}.books (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL,
    title text NOT NULL
);
CREATE TABLE {schema}.loans (
    id uuid PRIMARY KEY,
    book_id uuid NOT NULL,
    borrower_id uuid NOT NULL,
    lender_id uuid NOT NULL
);
CREATE TABLE {schema}.conversations (
    reader_id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    peer_id uuid NOT NULL,
    loan_id uuid,
    last_message jsonb,
    last_seq bigint NOT NULL DEFAULT 0,
    read_up_to bigint NOT NULL DEFAULT 0,
    unread integer NOT NULL DEFAULT 0,
    opened_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    activity bigint NOT NULL,
    PRIMARY KEY (reader_id, conversation_id)
);
CREATE INDEX IF NOT EXISTS conversations_reader_idx
    ON {schema}.conversations (reader_id, activity DESC);
CREATE INDEX IF NOT EXISTS conversations_conversation_idx
    ON {schema}.conversations (conversation_id);
CREATE TABLE {schema}.messages (
    conversation_id uuid NOT NULL,
    seq bigint NOT NULL,
    message_id uuid NOT NULL UNIQUE,
    sender_id uuid NOT NULL,
    text text NOT NULL,
    client_msg_id text NOT NULL,
    at timestamptz NOT NULL,
    hidden_for uuid[] NOT NULL DEFAULT '{{}}',
    media jsonb,
    PRIMARY KEY (conversation_id, seq)
);
CREATE INDEX IF NOT EXISTS messages_media_idx
    ON {schema}.messages ((media->>'id')) WHERE media IS NOT NULL;
CREATE TABLE {schema}.removed_media (
    media_id text PRIMARY KEY,
    reason text NOT NULL
);
"""

# The same tables as ``projections.batch`` describes them, for the page folding (``page``).

READERS = Table("readers", {"id": "uuid", "nickname": "text", "avatar_url": "text"})
BOOKS = Table("books", {"id": "uuid", "owner_id": "uuid", "title": "text"})
LOANS = Table(
    "loans", {"id": "uuid", "book_id": "uuid", "borrower_id": "uuid", "lender_id": "uuid"}
)
HEADS = Table("heads", {"reader_id": "uuid", "seq": "bigint"}, key=("reader_id",))
ITEMS = Table(
    "items",
    {
        "reader_id": "uuid",
        "seq": "bigint",
        "kind": "text",
        "at": "timestamptz",
        "data": "jsonb",
        "source": "text",
        "position": "bigint",
    },
    key=("reader_id", "seq"),
)
CONVERSATIONS = Table(
    "conversations",
    {
        "reader_id": "uuid",
        "conversation_id": "uuid",
        "peer_id": "uuid",
        "loan_id": "uuid",
        "last_message": "jsonb",
        "last_seq": "bigint",
        "read_up_to": "bigint",
        "unread": "integer",
        "opened_at": "timestamptz",
        "updated_at": "timestamptz",
        "activity": "bigint",
    },
    key=("reader_id", "conversation_id"),
)
MESSAGES = Table(
    "messages",
    {
        "conversation_id": "uuid",
        "seq": "bigint",
        "message_id": "uuid",
        "sender_id": "uuid",
        "text": "text",
        "client_msg_id": "text",
        "at": "timestamptz",
        "hidden_for": "uuid[]",
        "media": "jsonb",
    },
    key=("message_id",),
    mutable=("hidden_for", "media"),
)

LOAN_KINDS = {
    # event: (item kind, loan status, recipients); Loan.Requested has its own handling
    "Loan.Approved": ("loan.approved", "approved", ("borrower",)),
    "Loan.Declined": ("loan.declined", "declined", ("borrower",)),
    "Loan.Cancelled": ("loan.cancelled", "cancelled", ("borrower", "lender")),
    "Loan.ReturnStarted": ("loan.returning", "returning", ("lender",)),
    "Loan.ReturnConfirmed": ("loan.returned", "returned", ("borrower",)),
}


def as_uuid(value: Any) -> UUID:
    """``value`` as a ``UUID`` (events carry ids as UUIDs or as their strings)."""
    return value if isinstance(value, UUID) else UUID(str(value))


__all__ = [
    "ENDED",
    "clear_contact",
    "clear_contacts_at",
    "scrub_forgotten",
    "BOOKS",
    "CONVERSATIONS",
    "DDL",
    "HEADS",
    "ITEMS",
    "LOANS",
    "LOAN_KINDS",
    "MESSAGES",
    "READERS",
    "as_uuid",
]


ENDED = frozenset(ENDED_STATUSES)
"""Loan statuses after which the lender no longer sees the borrower's contact."""


def clear_contact(
    schema: sql.Identifier, lender_id: Any, loan_id: Any
) -> tuple[sql.Composed, tuple[Any, ...]]:
    """The statement that clears ``contact`` in the lender's ``loan.requested`` item of
    ``loan_id`` (the loan ended)."""
    return (
        sql.SQL(
            "UPDATE {}.items SET data = jsonb_set(data, '{{contact}}', 'null') "
            "WHERE reader_id = %s AND kind = 'loan.requested' AND data->>'loan_id' = %s "
            "AND data->'contact' <> 'null'::jsonb"
        ).format(schema),
        (as_uuid(lender_id), str(loan_id)),
    )


def clear_contacts_at(
    schema: sql.Identifier, source: str, cleared: list[tuple[UUID, int, UUID]]
) -> tuple[sql.Composed, tuple[Any, ...]]:
    """``clear_contact`` for many loans whose ``loan.requested`` item is known by its place:
    ``cleared`` holds ``(lender, position of the item, loan)``; the items are found through
    the ``(source, position, reader_id)`` index (one probe a loan) instead of among all the
    lender's items, with the same conditions otherwise."""
    return (
        sql.SQL(
            "UPDATE {}.items i SET data = jsonb_set(i.data, '{{contact}}', 'null') "
            "FROM json_to_recordset(%s::json) AS c(reader_id uuid, position bigint, loan_id text) "
            "WHERE i.source = %s AND i.position = c.position AND i.reader_id = c.reader_id "
            "AND i.kind = 'loan.requested' AND i.data->>'loan_id' = c.loan_id "
            "AND i.data->'contact' <> 'null'::jsonb"
        ).format(schema),
        (
            as_json(
                [
                    {"reader_id": lender, "position": position, "loan_id": str(loan)}
                    for lender, position, loan in cleared
                ]
            ),
            source,
        ),
    )


def scrub_forgotten(
    schema: sql.Identifier, reader_id: Any
) -> list[tuple[sql.Composed, tuple[Any, ...]]]:
    """The statements that erase a forgotten reader from the inbox (module docstring):
    the lookup row, their party / sender objects in the items of everyone they dealt with,
    the last messages, and the note and contact of their loan requests."""
    rid = as_uuid(reader_id)
    text = str(rid)
    nick = FORGOTTEN_NICKNAME
    # everyone whose items may show this reader: themselves, their loans' other parties,
    # their conversations' peers
    whom = (
        "reader_id IN (SELECT %s::uuid UNION SELECT lender_id FROM {0}.loans "
        "WHERE borrower_id = %s UNION SELECT borrower_id FROM {0}.loans WHERE lender_id = %s "
        "UNION SELECT peer_id FROM {0}.conversations WHERE reader_id = %s)"
    )
    statements: list[tuple[sql.Composed, tuple[Any, ...]]] = [
        (
            sql.SQL("UPDATE {}.readers SET nickname = %s, avatar_url = '' WHERE id = %s").format(
                schema
            ),
            (nick, rid),
        )
    ]
    for role in ("borrower", "lender", "sender"):
        statements.append(
            (
                sql.SQL(
                    "UPDATE {0}.items SET data = jsonb_set(data, %s::text[], "
                    "jsonb_build_object('id', %s::text, 'nickname', %s::text, 'avatar_url', '')) "
                    "WHERE " + whom + " AND data->%s->>'id' = %s"
                ).format(schema),
                ([role], text, nick, rid, rid, rid, rid, role, text),
            )
        )
    statements.append(
        (
            sql.SQL(
                "UPDATE {0}.items SET data = data || jsonb_build_object('note', '', "
                "'contact', null) WHERE kind = 'loan.requested' AND reader_id IN "
                "(SELECT lender_id FROM {0}.loans WHERE borrower_id = %s) "
                "AND data->'borrower'->>'id' = %s"
            ).format(schema),
            (rid, text),
        )
    )
    # what they wrote: their messages' texts (their events now read so too)
    statements.append(
        (
            sql.SQL(
                "UPDATE {0}.items SET data = jsonb_set(data, '{{text}}', '\"\"') "
                "WHERE " + whom + " AND kind = 'chat.message' AND data->'sender'->>'id' = %s"
            ).format(schema),
            (rid, rid, rid, rid, text),
        )
    )
    statements.append(
        (
            sql.SQL(
                "UPDATE {0}.messages SET text = '' WHERE sender_id = %s AND conversation_id "
                "IN (SELECT conversation_id FROM {0}.conversations WHERE reader_id = %s)"
            ).format(schema),
            (rid, rid),
        )
    )
    statements.append(
        (
            sql.SQL(
                "UPDATE {0}.conversations SET last_message = jsonb_set(jsonb_set(last_message, "
                "'{{sender}}', jsonb_build_object('id', %s::text, 'nickname', %s::text, "
                "'avatar_url', '')), '{{text}}', '\"\"') WHERE conversation_id IN "
                "(SELECT conversation_id FROM {0}.conversations WHERE reader_id = %s) "
                "AND last_message->'sender'->>'id' = %s"
            ).format(schema),
            (text, nick, rid, text),
        )
    )
    return statements
