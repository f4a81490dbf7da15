"""Crypto-shredding: personal fields of events encrypted with a key per reader.

What is personal, whose it is and what it reads as once erased is the domain's table
(``domain.personal.PERSONAL_FIELDS``). This module does the cryptography and keeps the keys:

- ``PersonalDataMapper`` (an eventsourcing ``Mapper``): before an event of a listed type is
  transcoded, each of its personal fields (when not empty) is replaced by a ``Sealed`` value,
  which the ``SealedAsCiphertext`` transcoding writes as the tagged JSON value
  ``{"_type_": "sealed", "_data_": "v1.<subject hex>.<field>.<base64 nonce‖ciphertext‖tag>"}``
  — AES-256-GCM (NIST SP 800-38D; ``cryptography``'s ``AESGCM``) under the subject reader's
  data key, a random 96-bit nonce per value, and the associated data
  ``liudong:v1:<subject hex>:<field>``, so a sealed value moved to another reader or field
  fails to open. Decoding needs no mapper change: the transcoding opens the value, so the
  projections' fast decoder (``projections.records``), which uses the transcoder's
  registered transcodings, reads the same values as the mapper.
- ``PostgresKeyStore``: one 256-bit key per reader in ``reader_keys`` (migration
  ``0012_reader_keys``), created on the reader's first personal field, never in an event.
  ``destroy`` overwrites it with NULL (``destroyed_at`` kept as a tombstone, so no new key
  is ever made for a forgotten reader). Keys are cached in the process for ``ttl`` seconds
  (a destroyed key is forgotten by every store of this process at once; by other processes
  within ``ttl``).

Errors: opening a value whose key was destroyed (or never existed) is **not** an error: the
field reads as its ``erased`` value (``"已注销"``, ``""``, ``None``), so the command side,
rebuilds, replays and exports keep running. A value that fails authentication (changed
bytes, moved to another reader or field) raises ``PersonalDataTampered`` (the event is then a
poison event to its reader). Sealing a field for a forgotten reader raises
``SubjectForgotten`` (the domain refuses such commands before this).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol
from uuid import UUID

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.persistence import Mapper, StoredEvent, Transcoder, Transcoding

from domain.personal import PERSONAL_FIELDS

SEALED = "sealed"
"""The transcoding's tag in stored JSON."""
VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12

ERASED: dict[str, Any] = {}
"""Each personal field's erased value (the names do not clash across event types)."""
for _spec in PERSONAL_FIELDS.values():
    for _name, _value in _spec.erased.items():
        if ERASED.setdefault(_name, _value) != _value:  # pragma: no cover - a table error
            raise RuntimeError(f"personal field {_name!r} has two erased values")


class PersonalDataError(Exception):
    """Base of this module's errors."""


class PersonalDataTampered(PersonalDataError):
    """A sealed value failed authentication (or is malformed)."""


class SubjectForgotten(PersonalDataError):
    """A personal field was to be sealed for a reader whose key was destroyed."""


class KeyStore(Protocol):
    """Where data keys live (``PostgresKeyStore``; ``MemoryKeyStore`` in tests)."""

    def key_for(self, subject: UUID) -> bytes:
        """The subject's key, made on first use. Raises ``SubjectForgotten``."""

    def find(self, subject: UUID) -> bytes | None:
        """The subject's key, or ``None`` (destroyed, or never made)."""

    def destroy(self, subject: UUID) -> bool:
        """Destroy the subject's key for good; ``True`` if there was one."""


class Sealed:
    """A personal value on its way to the store (``PersonalDataMapper``)."""

    __slots__ = ("field", "subject", "value")

    def __init__(self, subject: UUID, field: str, value: Any) -> None:
        self.subject = subject
        self.field = field
        self.value = value


_SUBJECT = re.compile(rb'"' + VERSION.encode() + rb"\.([0-9a-f]{32})\.")
"""A sealed value's subject in stored JSON: ``"v1.<32 hex digits>.`` (``prefetch``)."""

_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
"""What ``base64.urlsafe_b64decode`` translates before ``binascii.a2b_base64``."""

SUBJECTS_REMEMBERED = 100_000
"""Subjects (hex → ``UUID``) a ``SealedAsCiphertext`` keeps parsed: a rebuild opens the
same readers' values again and again."""


def _aad(subject_hex: str, field: str) -> bytes:
    return f"liudong:{VERSION}:{subject_hex}:{field}".encode()


class SealedAsCiphertext(Transcoding):
    """``Sealed`` ↔ ``"v1.<subject hex>.<field>.<base64url nonce‖ciphertext>"`` (module
    docstring). ``decode`` returns the plain value, or the field's erased value when the
    key is gone; raises ``PersonalDataTampered``."""

    type = Sealed
    name = SEALED

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self._ciphers: dict[bytes, AESGCM] = {}  # key → its AESGCM (the key schedule, once)
        self._subjects: dict[str, UUID] = {}  # subject hex → its UUID (parsed once)

    def _subject(self, subject_hex: str) -> UUID:
        """``UUID(hex=subject_hex)``, parsed once for the last ``SUBJECTS_REMEMBERED``
        subjects (only the key store's answer may change, never the subject's UUID).
        Raises ``ValueError`` for what is not a UUID."""
        subject = self._subjects.get(subject_hex)
        if subject is None:
            subject = UUID(hex=subject_hex)
            if len(self._subjects) >= SUBJECTS_REMEMBERED:
                self._subjects.clear()
            self._subjects[subject_hex] = subject
        return subject

    def _cipher(self, key: bytes) -> AESGCM:
        cipher = self._ciphers.get(key)
        if cipher is None:
            if len(self._ciphers) >= 10_000:  # noqa: PLR2004
                self._ciphers.clear()
            cipher = self._ciphers[key] = AESGCM(key)
        return cipher

    def prefetch(self, states: Iterable[bytes]) -> None:
        """Look up at once the keys of the subjects of the sealed values in ``states``
        (stored events' JSON, about to be decoded), when the key store can
        (``PostgresKeyStore.prefetch``: one query for a page of events instead of one a
        reader). Anything that merely looks like a sealed value costs a lookup, no more."""
        prefetch = getattr(self.keys, "prefetch", None)
        if prefetch is None:
            return
        # one scan of all the states (a state is a JSON object: no match spans two)
        subjects = set(_SUBJECT.findall(b"\n".join(states)))
        if subjects:
            prefetch([self._subject(h.decode()) for h in subjects])

    def encode(self, obj: Sealed) -> str:
        subject_hex = obj.subject.hex
        nonce = os.urandom(NONCE_BYTES)
        plain = msgspec.json.encode(obj.value)
        sealed = self._cipher(self.keys.key_for(obj.subject)).encrypt(
            nonce, plain, _aad(subject_hex, obj.field)
        )
        token = base64.urlsafe_b64encode(nonce + sealed).decode()
        return f"{VERSION}.{subject_hex}.{obj.field}.{token}"

    def decode(self, data: str) -> Any:
        try:
            version, subject_hex, field, token = data.split(".", 3)
            subject = self._subject(subject_hex)
            # ``base64.urlsafe_b64decode`` without its Python wrappers (same result)
            blob = binascii.a2b_base64(token.encode().translate(_URLSAFE_TO_STANDARD))
        except (AttributeError, TypeError, ValueError) as exc:
            raise PersonalDataTampered(f"malformed sealed value: {exc}") from None
        if version != VERSION or len(blob) < NONCE_BYTES + 16:  # noqa: PLR2004 - GCM tag
            raise PersonalDataTampered("malformed sealed value")
        key = self.keys.find(subject)
        if key is None:
            return ERASED.get(field)
        try:
            plain = self._cipher(key).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(subject_hex, field)
            )
        except InvalidTag:
            raise PersonalDataTampered(
                f"sealed {field!r} of reader {subject} failed authentication"
            ) from None
        return msgspec.json.decode(plain)


class PersonalDataMapper(Mapper[Any]):
    """eventsourcing's ``Mapper`` that seals the personal fields of the events listed in
    ``domain.personal.PERSONAL_FIELDS`` (module docstring). ``keys``: the key store; the
    transcoder gets the ``SealedAsCiphertext`` transcoding registered here."""

    def __init__(
        self,
        transcoder: Transcoder,
        keys: KeyStore,
        compressor: Any = None,
        cipher: Any = None,
    ) -> None:
        super().__init__(transcoder=transcoder, compressor=compressor, cipher=cipher)
        self.keys = keys
        transcoder.register(SealedAsCiphertext(keys))

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        spec = PERSONAL_FIELDS.get(type(domain_event).__qualname__)
        if spec is None:
            return super().to_stored_event(domain_event)
        state = domain_event.__dict__
        subject = state["originator_id"] if spec.subject is None else state[spec.subject]
        sealed = {
            name: Sealed(subject, name, state[name])
            for name in spec.erased
            if state.get(name)  # nothing to hide in None / "" / {}
        }
        if not sealed:
            return super().to_stored_event(domain_event)
        copy = object.__new__(type(domain_event))
        copy.__dict__.update(state)
        copy.__dict__.update(sealed)
        return super().to_stored_event(copy)


# -- key stores ---------------------------------------------------------------------------------


class MemoryKeyStore:
    """Keys in a dict (tests; one process)."""

    def __init__(self) -> None:
        self.keys: dict[UUID, bytes | None] = {}

    def key_for(self, subject: UUID) -> bytes:
        if subject in self.keys:
            key = self.keys[subject]
            if key is None:
                raise SubjectForgotten(str(subject))
            return key
        key = self.keys[subject] = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        return key

    def find(self, subject: UUID) -> bytes | None:
        return self.keys.get(subject)

    def destroy(self, subject: UUID) -> bool:
        had = self.keys.get(subject) is not None
        self.keys[subject] = None
        return had


Transaction = Callable[[], AbstractContextManager[Any]]
"""``transaction()`` → a context manager giving a psycopg cursor, committed on exit."""


class PostgresKeyStore:
    """Keys in ``reader_keys(reader_id, data_key, created_at, destroyed_at)`` (module
    docstring). ``transaction``: how to get a committed cursor (the Application's own
    datastore, so the same pool, timeouts and outage breaker). ``ttl``: seconds a key (or
    its absence) is cached in this process."""

    def __init__(self, transaction: Transaction, ttl: float = 30.0) -> None:
        self.transaction = transaction
        self.ttl = ttl
        self._cache: dict[UUID, tuple[bytes | None, float]] = {}
        self._lock = threading.Lock()
        _STORES.add(self)  # a destroyed key is forgotten by every store of this process

    def _cached(self, subject: UUID) -> tuple[bool, bytes | None]:
        with self._lock:
            hit = self._cache.get(subject)
        if hit is None or hit[1] < time.monotonic():
            return False, None
        return True, hit[0]

    def _remember(self, subject: UUID, key: bytes | None) -> None:
        with self._lock:
            if len(self._cache) > 100_000:  # noqa: PLR2004
                self._cache.clear()
            self._cache[subject] = (key, time.monotonic() + self.ttl)

    def key_for(self, subject: UUID) -> bytes:
        hit, key = self._cached(subject)
        if hit and key is not None:
            return key
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO reader_keys (reader_id, data_key) VALUES (%s, %s) "
                "ON CONFLICT (reader_id) DO NOTHING",
                (subject, AESGCM.generate_key(bit_length=KEY_BYTES * 8)),
            )
            cur.execute("SELECT data_key FROM reader_keys WHERE reader_id = %s", (subject,))
            row = cur.fetchone()
        key = _key_of(row)
        if key is None:
            raise SubjectForgotten(str(subject))
        self._remember(subject, key)
        return key

    def find(self, subject: UUID) -> bytes | None:
        hit, key = self._cached(subject)
        if hit:
            return key
        with self.transaction() as cur:
            cur.execute("SELECT data_key FROM reader_keys WHERE reader_id = %s", (subject,))
            key = _key_of(cur.fetchone())
        self._remember(subject, key)
        return key

    def prefetch(self, subjects: Iterable[UUID]) -> None:
        """Cache the keys of ``subjects`` not cached yet, read with one query (a rebuild
        decodes thousands of readers' fields a page). A subject without a row is left
        uncached (``find`` asks again); a destroyed key is cached as ``None``."""
        now = time.monotonic()
        with self._lock:
            missing = [
                s for s in set(subjects) if (hit := self._cache.get(s)) is None or hit[1] < now
            ]
        if not missing:
            return
        with self.transaction() as cur:
            cur.execute(
                "SELECT reader_id, data_key FROM reader_keys WHERE reader_id = ANY(%s)",
                (missing,),
            )
            rows = cur.fetchall()
        expires = time.monotonic() + self.ttl
        with self._lock:
            if len(self._cache) > 100_000:  # noqa: PLR2004
                self._cache.clear()
            for row in rows:
                subject = _column(row, "reader_id", 0)
                if self._cache.get(subject, (b"", 0.0))[1] != float("inf"):  # not destroyed since
                    self._cache[subject] = (_key_of(row), expires)

    def destroy(self, subject: UUID) -> bool:
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO reader_keys AS k (reader_id, data_key, destroyed_at) "
                "VALUES (%s, NULL, now()) ON CONFLICT (reader_id) DO UPDATE "
                "SET data_key = NULL, destroyed_at = coalesce(k.destroyed_at, now()) "
                "RETURNING (xmax <> 0) AS existed",
                (subject,),
            )
            row = cur.fetchone()
        for store in list(_STORES):
            with store._lock:  # noqa: SLF001 - same class
                store._cache[subject] = (None, float("inf"))  # noqa: SLF001 - destroyed for good
        return bool(_column(row, "existed", 0))

    def forget_cache(self) -> None:
        """Drop every cached key (tests; after a restore)."""
        with self._lock:
            self._cache.clear()


_STORES: weakref.WeakSet[PostgresKeyStore] = weakref.WeakSet()
"""Every key store of this process (the Library's and the Chat's mappers have one each)."""


def _column(row: Any, name: str, index: int) -> Any:
    if row is None:
        return None
    return row[name] if isinstance(row, dict) else row[index]


def _key_of(row: Any) -> bytes | None:
    value = _column(row, "data_key", 0)
    return None if value is None else bytes(value)


ERASED_RECORDS = (
    ("idempotency_keys", "reader_id = %(r)s OR position(convert_to(%(t)s, 'UTF8') IN body) > 0"),
    ("wechat_openids", "reader_id = %(r)s"),
    ("moderation_flags", "reader_id = %(r)s"),
)
"""Rows outside the event store that hold a reader's personal data, deleted on erasure:
stored responses of idempotent requests that are theirs or mention them (a party's stored
approve shows the borrower's name and contact), their openId, the texts of theirs flagged
for an operator."""


def erase_records(conn: Any, reader_id: UUID) -> dict[str, int]:
    """Delete the ``ERASED_RECORDS`` of ``reader_id`` on the psycopg connection ``conn`` (in
    its transaction); returns the rows deleted per table."""
    params = {"r": reader_id, "t": str(reader_id)}
    deleted = {}
    for table, where in ERASED_RECORDS:
        cur = conn.execute(f"DELETE FROM {table} WHERE {where}", params)  # noqa: S608 - constants
        deleted[table] = cur.rowcount
    return deleted


def personal_data_mapper(app: Any) -> PersonalDataMapper:
    """The ``PersonalDataMapper`` of an eventsourcing ``Application`` stored in PostgreSQL
    (``domain.library.Library.construct_mapper`` calls it through the topic
    ``api.adapters.shredding:personal_data_mapper`` in its environment): keys through the
    Application's own datastore (``app.recorder.datastore.transaction``), looked up only
    once the Application is built."""

    def transaction() -> AbstractContextManager[Any]:
        return app.recorder.datastore.transaction(commit=True)  # type: ignore[no-any-return]

    factory = app.factory
    return PersonalDataMapper(
        transcoder=app.construct_transcoder(),
        keys=PostgresKeyStore(transaction),
        compressor=factory.compressor(),
        cipher=factory.cipher(),
    )


__all__ = [
    "ERASED",
    "ERASED_RECORDS",
    "erase_records",
    "KeyStore",
    "MemoryKeyStore",
    "PersonalDataMapper",
    "PersonalDataTampered",
    "PostgresKeyStore",
    "Sealed",
    "SealedAsCiphertext",
    "SubjectForgotten",
    "personal_data_mapper",
]
