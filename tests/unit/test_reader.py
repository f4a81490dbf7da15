"""Reader aggregate: given events → when command → then events.

History is produced by a reference aggregate, then replayed into a fresh object (``given``), so
the state a command sees comes from the events alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import pytest

from domain.reader import READER_NAMESPACE, Reader, reader_id_for

Event = Any  # a recorded domain event; its attributes depend on its class


def new_events(aggregate: Any) -> list[Event]:
    """The events ``aggregate`` has recorded and not yet saved (and forgets them)."""
    return list(aggregate.collect_events())


def registered(nickname: str = "Ada", avatar_url: str = "https://img/ada.png") -> list[Event]:
    return list(Reader(id=uuid4(), nickname=nickname, avatar_url=avatar_url).collect_events())


def given(events: Sequence[Event]) -> Reader:
    aggregate = None
    for e in events:
        aggregate = e.mutate(aggregate)
    assert isinstance(aggregate, Reader)
    return aggregate


def names(events: Sequence[Event]) -> list[str]:
    return [type(e).__name__ for e in events]


# -- reader ids ---------------------------------------------------------------------------------


def test_reader_id_is_uuid5_of_the_wechat_open_id() -> None:
    assert uuid5(NAMESPACE_URL, "https://liudong.example/readers") == READER_NAMESPACE
    assert reader_id_for("o-abc") == uuid5(READER_NAMESPACE, "wechat:o-abc")
    assert reader_id_for("o-abc").version == 5


def test_reader_id_is_deterministic_and_distinct_per_open_id() -> None:
    assert reader_id_for("o-abc") == reader_id_for("o-abc")
    assert reader_id_for("o-abc") != reader_id_for("o-abd")


# -- Registered ---------------------------------------------------------------------------------


def test_register_records_registered() -> None:
    reader_id = reader_id_for("o-ada")

    reader = Reader(id=reader_id, nickname="Ada", avatar_url="https://img/ada.png")

    events = new_events(reader)
    assert names(events) == ["Registered"]
    (e,) = events
    assert e.originator_id == reader_id
    assert e.originator_version == 1
    assert e.nickname == "Ada"
    assert e.avatar_url == "https://img/ada.png"
    assert "open_id" not in vars(e)  # the openId is never stored
    assert (reader.id, reader.nickname, reader.avatar_url) == (
        reader_id,
        "Ada",
        "https://img/ada.png",
    )


def test_registered_replays_to_the_same_state() -> None:
    history = registered("Ada", "a.png")

    reader = given(history)

    assert isinstance(reader.id, UUID)
    assert (reader.nickname, reader.avatar_url, reader.version) == ("Ada", "a.png", 1)
    assert reader.collect_events() == []


# -- ProfileChanged -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nickname", "avatar_url", "expected"),
    [
        ("Grace", None, ("Grace", "a.png")),
        (None, "g.png", ("Ada", "g.png")),
        ("Grace", "g.png", ("Grace", "g.png")),
        ("Grace", "a.png", ("Grace", "a.png")),
        ("", None, ("", "a.png")),  # an explicit empty value is a change, None is "keep"
    ],
)
def test_change_profile_records_profile_changed_with_the_full_new_profile(
    nickname: str | None, avatar_url: str | None, expected: tuple[str, str]
) -> None:
    reader = given(registered("Ada", "a.png"))

    reader.change_profile(nickname=nickname, avatar_url=avatar_url)

    events = new_events(reader)
    assert names(events) == ["ProfileChanged"]
    (e,) = events
    assert (e.nickname, e.avatar_url) == expected
    assert e.originator_version == 2
    assert (reader.nickname, reader.avatar_url) == expected


@pytest.mark.parametrize(
    ("nickname", "avatar_url"),
    [(None, None), ("Ada", None), (None, "a.png"), ("Ada", "a.png")],
)
def test_change_profile_to_the_same_values_records_nothing(
    nickname: str | None, avatar_url: str | None
) -> None:
    reader = given(registered("Ada", "a.png"))

    reader.change_profile(nickname=nickname, avatar_url=avatar_url)

    assert reader.collect_events() == []
    assert (reader.nickname, reader.avatar_url, reader.version) == ("Ada", "a.png", 1)


def test_profile_changes_replay_in_order() -> None:
    reader = Reader(id=uuid4(), nickname="Ada", avatar_url="a.png")
    reader.change_profile(nickname="Grace", avatar_url=None)
    reader.change_profile(nickname=None, avatar_url="g.png")
    history = new_events(reader)
    assert names(history) == ["Registered", "ProfileChanged", "ProfileChanged"]

    replayed = given(history)

    assert (replayed.nickname, replayed.avatar_url, replayed.version) == ("Grace", "g.png", 3)
