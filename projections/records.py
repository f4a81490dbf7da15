"""Fast decoding of stored events for projections: light ``Record``s instead of domain events.

Projections read every event of a log, so decoding dominates a rebuild: eventsourcing's
mapper decodes ``state`` with the standard library's JSON decoder and a Python
``object_hook`` (about 10-20 µs an event). ``RecordDecoder`` decodes the same bytes with
msgspec and revives the ``JSONTranscoder``'s tagged values (``{"_type_": "uuid_hex",
"_data_": …}``, ``datetime_iso``, ``decimal_str`` …) with the transcodings registered on the
Application's own transcoder, then applies the event class's upcasters exactly as
``Mapper.to_domain_event`` does (``class_version`` popped from the state, ``upcast_vN_vN+1``
called in turn, with ``originator_id`` / ``originator_version`` present).

It falls back to the mapper:

- for the whole log when the Application's mapper is not the plain eventsourcing one
  (a cipher, a compressor, another transcoder or mapper class);
- for one event whenever the fast path raises (JSON msgspec refuses but the standard
  library accepts, such as ``NaN``; an unregistered tag; an upcaster error). If the mapper
  fails too, its error is the event's error (a poison event, as before).

A ``Record`` carries the envelope (``position``, ``type`` such as ``"Book.Published"``,
``originator_id``, ``originator_version``, ``timestamp``) and the event's own fields in
``data`` (``originator_topic`` included on creation events, as in ``vars(event)``); fields
read as attributes too (``record.title``), so code written for domain events keeps working.
``tests/unit/test_records.py`` compares both decoders on every event type.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, SafeUUID

import msgspec
from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    Notification,
    UUIDAsHex,
    find_id_convertor,
    pass_through_convertor,
)
from eventsourcing.utils import resolve_topic

log = logging.getLogger(__name__)

RawRow = tuple[int, Any, int, str, bytes]
"""``(notification_id, originator_id, originator_version, topic, state)`` as read."""


class Record:
    """One decoded event of a log (see the module docstring)."""

    __slots__ = (
        "data",
        "originator_id",
        "originator_version",
        "position",
        "timestamp",
        "topic",
        "type",
    )

    def __init__(  # noqa: PLR0913
        self,
        position: int,
        topic: str,
        type: str,  # noqa: A002
        originator_id: Any,
        originator_version: int,
        timestamp: datetime | None,
        data: dict[str, Any],
    ) -> None:
        self.position = position
        self.topic = topic
        self.type = type
        self.originator_id = originator_id
        self.originator_version = originator_version
        self.timestamp = timestamp
        self.data = data

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not slots: the event's own fields.
        if name == "data":
            raise AttributeError(name)
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return (
            f"Record({self.type} #{self.position} {self.originator_id} "
            f"v{self.originator_version} {self.data!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


class _Topic:
    """What decoding needs to know about one stored topic (resolved once)."""

    __slots__ = ("class_version", "cls", "id_convertors", "type")

    def __init__(self, topic: str) -> None:
        self.cls = resolve_topic(topic)
        self.type: str = self.cls.__qualname__
        self.class_version: int = getattr(self.cls, "class_version", 1)
        self.id_convertors: dict[type, Callable[[Any], Any]] = {}

    def convert_id(self, originator_id: Any) -> Any:
        kind = type(originator_id)
        try:
            convert = self.id_convertors[kind]
        except KeyError:
            convert = find_id_convertor(self.cls, kind)  # type: ignore[arg-type]
            self.id_convertors[kind] = convert
        return originator_id if convert is pass_through_convertor else convert(originator_id)


_new = object.__new__
_set = object.__setattr__
_UNKNOWN = SafeUUID.unknown


def _uuid_from_hex(value: str) -> UUID:
    """``UUID(value)`` (what ``UUIDAsHex`` decodes with), about twice as fast for the
    32 hex digits it stores; anything else goes through ``UUID`` itself."""
    if len(value) == 32 and value.isalnum():  # noqa: PLR2004 - no "urn:", "{", "-", sign
        uuid = _new(UUID)
        _set(uuid, "int", int(value, 16))  # what UUID() computes from these 32 characters
        _set(uuid, "is_safe", _UNKNOWN)
        return uuid
    return UUID(value)


class _Unknown(Exception):
    """A tagged value the fast path does not handle (the mapper decides)."""


def _plain_mapper(mapper: Mapper[Any]) -> bool:
    """Whether ``mapper`` decodes exactly like eventsourcing's own JSON mapper."""
    transcoder = mapper.transcoder
    return (
        mapper.cipher is None
        and mapper.compressor is None
        and type(mapper).to_domain_event is Mapper.to_domain_event
        and isinstance(transcoder, JSONTranscoder)
        and type(transcoder).decode is JSONTranscoder.decode
        and type(transcoder)._decode_obj is JSONTranscoder._decode_obj  # noqa: SLF001
    )


class RecordDecoder:
    """Decodes raw rows of one Application's log into ``Record``s (module docstring)."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self.mapper = mapper
        self.fast = _plain_mapper(mapper)
        self._json = msgspec.json.Decoder()
        self._topics: dict[str, _Topic] = {}
        self._revivers: dict[str, Callable[[Any], Any]] = {}
        self._uuids: dict[str, UUID] = {}
        # transcodings that can prepare for a batch of states (``prefetch(states)``: the
        # sealed personal fields' keys, ``api.adapters.shredding``)
        self._prefetchers: list[Callable[[list[bytes]], None]] = []
        if self.fast:
            names = mapper.transcoder.names  # type: ignore[attr-defined]
            for name, transcoding in names.items():
                prefetch = getattr(transcoding, "prefetch", None)
                if callable(prefetch):
                    self._prefetchers.append(prefetch)
                if type(transcoding) is UUIDAsHex:
                    self._revivers[name] = self._uuid
                elif type(transcoding) is DatetimeAsISO:
                    self._revivers[name] = datetime.fromisoformat
                else:
                    self._revivers[name] = transcoding.decode

    def _uuid(self, value: str) -> UUID:
        # The same ids recur (a book's owner, a loan's parties): share one UUID object each
        # (UUIDs are immutable), among the last 100,000 decoded.
        uuid = self._uuids.get(value)
        if uuid is None:
            if len(self._uuids) >= 100_000:  # noqa: PLR2004
                self._uuids.clear()
            uuid = self._uuids[value] = _uuid_from_hex(value)
        return uuid

    def _topic(self, topic: str) -> _Topic:
        try:
            return self._topics[topic]
        except KeyError:
            info = self._topics[topic] = _Topic(topic)
            return info

    # -- tagged values -----------------------------------------------------------------------

    def _revive(self, value: Any) -> Any:
        kind = type(value)
        if kind is dict:
            return self._revive_dict(value)
        if kind is list:
            return [self._revive(v) for v in value]
        return value

    def _revive_dict(self, d: dict[str, Any]) -> Any:
        # JSONTranscoder's object_hook, bottom-up: a dict of exactly the two keys "_type_"
        # and "_data_" is a tagged value; any other dict stays a dict.
        if len(d) == 2 and "_type_" in d and "_data_" in d:  # noqa: PLR2004
            reviver = self._revivers.get(d["_type_"])
            if reviver is None:
                raise _Unknown(d["_type_"])
            return reviver(self._revive(d["_data_"]))
        for key, value in d.items():
            kind = type(value)
            if kind is dict or kind is list:
                d[key] = self._revive(value)
        return d

    # -- decoding -------------------------------------------------------------------------

    def decode(self, row: RawRow) -> Record:
        """One raw row → ``Record``. Raises what the mapper raises for a bad event."""
        if self.fast:
            try:
                return self._decode_fast(row)
            except Exception:  # noqa: BLE001, S110 - the mapper decides (and raises)
                pass
        return self._decode_mapper(row)

    def decode_all(
        self, rows: Sequence[RawRow], types: frozenset[str] | set[str] | None = None
    ) -> list[Record]:
        """Decode ``rows``; with ``types``, only the events of those types (``"Loan.
        Requested"``…) and the last row (its timestamp dates the page): a projection
        skips the others anyway. A topic that does not resolve is decoded (and fails)."""
        decode = self.decode
        if types is None:
            self._prefetch(rows)
            return [decode(row) for row in rows]
        topics = self._topics
        wanted = []
        for row in rows:
            info = topics.get(row[3])
            if info is None:
                try:
                    info = self._topic(row[3])
                except Exception:  # noqa: BLE001 - the mapper reports it
                    wanted.append(row)
                    continue
            if info.type in types:
                wanted.append(row)
        if rows and (not wanted or wanted[-1][0] != rows[-1][0]):
            wanted.append(rows[-1])
        self._prefetch(wanted)
        return [decode(row) for row in wanted]

    def _prefetch(self, rows: Sequence[RawRow]) -> None:
        if self._prefetchers and rows:
            states = [row[4] for row in rows]
            for prefetch in self._prefetchers:
                try:
                    prefetch(states)
                except Exception:  # noqa: BLE001 - an optimisation: decoding asks again
                    log.debug("prefetch for decoding failed", exc_info=True)

    def _decode_fast(self, row: RawRow) -> Record:
        position, originator_id, version, topic, state = row
        try:
            info = self._topics[topic]
        except KeyError:
            info = self._topics[topic] = _Topic(topic)
        data = self._json.decode(state)
        if type(data) is not dict:
            raise _Unknown("state is not an object")
        revivers = self._revivers
        for key, value in data.items():
            kind = type(value)
            if kind is dict:
                # the common case inline: a top-level tagged string (uuid_hex, datetime_iso)
                if len(value) == 2 and type(raw := value.get("_data_")) is str:  # noqa: PLR2004
                    tag = value.get("_type_")
                    if tag is not None:
                        reviver = revivers.get(tag)
                        if reviver is None:
                            raise _Unknown(tag)
                        data[key] = reviver(raw)
                        continue
                data[key] = self._revive_dict(value)
            elif kind is list:
                data[key] = [self._revive(v) for v in value]
        originator_id = info.convert_id(originator_id)
        from_version = data.pop("class_version", 1)
        if from_version < info.class_version:
            data["originator_id"] = originator_id
            data["originator_version"] = version
            cls = info.cls
            while from_version < info.class_version:
                getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(data)
                from_version += 1
            originator_id = data.pop("originator_id")
            version = data.pop("originator_version")
        return Record(
            position, topic, info.type, originator_id, version, data.pop("timestamp", None), data
        )

    def _decode_mapper(self, row: RawRow) -> Record:
        position, originator_id, version, topic, state = row
        event = self.mapper.to_domain_event(
            Notification(
                id=position,
                originator_id=originator_id,
                originator_version=version,
                topic=topic,
                state=bytes(state),
            )
        )
        return record_of(position, topic, event)


def event_type(event: Any) -> str:
    """``"Book.Published"`` for a ``Record`` or a domain event alike."""
    return event.type if isinstance(event, Record) else type(event).__qualname__


def record_of(position: int, topic: str, event: Any) -> Record:
    """The ``Record`` of a domain event decoded by the mapper."""
    data = dict(vars(event))
    originator_id = data.pop("originator_id")
    version = data.pop("originator_version")
    timestamp = data.pop("timestamp", None)
    return Record(
        position, topic, type(event).__qualname__, originator_id, version, timestamp, data
    )


__all__ = ["RawRow", "Record", "RecordDecoder", "event_type", "record_of"]
