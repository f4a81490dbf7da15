"""``MediaStore`` on the real PostgreSQL with disk storage: ownership, attaching, the sweep,
forgetting a reader, failed uploads leaving nothing, and ``liudong media sweep``.

Pictures are random (``unique_png``): ids are content hashes shared by the whole session's
database. The e2e server of the same session sweeps with a 24 h grace, so these tests age
their pictures by hours, not days, to keep it out of their way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from click.testing import CliRunner
from psycopg_pool import ConnectionPool

from api.adapters.media import (
    DiskStorage,
    MediaConfig,
    MediaNotFound,
    MediaNotOwned,
    MediaRemoved,
    MediaStorageUnavailable,
    MediaStore,
)
from api.bootstrap.db import make_pool
from api.cli import main
from tests.media_helpers import unique_png

HOUR = 3600.0


@pytest.fixture(scope="module")
def pool(database_url: str) -> Iterator[ConnectionPool]:
    pool = make_pool(database_url, size=2, name="test-media")
    yield pool
    pool.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
def store(pool: ConnectionPool, root: Path) -> MediaStore:
    return MediaStore(pool, DiskStorage(root), MediaConfig(grace_seconds=HOUR))


def age(pool: ConnectionPool, media_id: str, hours: float) -> None:
    """Pretend ``media_id`` was last uploaded ``hours`` ago."""
    with pool.connection() as conn:
        conn.execute(
            "UPDATE media SET last_uploaded_at = now() - make_interval(secs => %s) WHERE id = %s",
            (hours * HOUR, media_id),
        )


def row(pool: ConnectionPool, media_id: str) -> dict[str, Any]:
    with pool.connection() as conn:
        found = conn.execute("SELECT * FROM media WHERE id = %s", (media_id,)).fetchone()
    assert found is not None
    return dict(found)


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_an_upload_stores_both_files_and_records_who_uploaded_it(
    store: MediaStore, root: Path
) -> None:
    alice, bob = uuid4(), uuid4()
    data = unique_png()
    first = store.upload(alice, data, "cover")
    assert first.created
    info = first.media
    assert files(root) == {info.key, info.thumb_key}
    assert info.key == f"{info.id[:2]}/{info.id}.png"
    assert info.url == f"/v1/media/{info.id}" and info.thumb_url == info.url + "/thumb"
    assert store.get(info.id) == info
    again = store.upload(bob, data, None)
    assert not again.created and again.media.id == info.id
    assert store.owners(info.id) == [alice, bob]
    assert store.read(info.id) == (root / info.key).read_bytes()


def test_the_sweep_deletes_only_expired_unattached_pictures(
    store: MediaStore, pool: ConnectionPool, root: Path
) -> None:
    reader = uuid4()
    attached = store.upload(reader, unique_png()).media
    expired_data = unique_png()
    expired = store.upload(reader, expired_data).media
    fresh = store.upload(reader, unique_png()).media
    store.mark_attached(attached.id, reader)
    age(pool, attached.id, 2)
    age(pool, expired.id, 2)

    assert expired.id in store.sweep(dry_run=True).ids
    assert store.get(expired.id) is not None
    result = store.sweep()
    assert expired.id in result.ids
    assert attached.id not in result.ids and fresh.id not in result.ids
    assert result.bytes_freed >= expired.bytes + expired.thumb_bytes
    assert store.get(expired.id) is None
    assert row(pool, expired.id)["deleted_at"] is not None
    assert store.owners(expired.id) == []
    assert not (root / expired.key).exists() and not (root / expired.thumb_key).exists()
    for kept in (attached, fresh):
        assert store.get(kept.id) is not None
        assert (root / kept.key).exists() and (root / kept.thumb_key).exists()

    # the same picture uploaded again is stored anew, with a new grace period
    back = store.upload(reader, expired_data, None)
    assert back.created and back.media.id == expired.id
    assert (root / expired.key).exists()
    assert row(pool, expired.id)["deleted_at"] is None
    assert expired.id not in store.sweep().ids


def test_a_reupload_within_the_grace_period_restarts_it(
    store: MediaStore, pool: ConnectionPool
) -> None:
    reader = uuid4()
    data = unique_png()
    info = store.upload(reader, data).media
    age(pool, info.id, 2)
    store.upload(uuid4(), data)  # someone else uploads the same picture
    assert info.id not in store.sweep().ids
    assert store.get(info.id) is not None


def test_only_an_uploader_may_attach(store: MediaStore, pool: ConnectionPool) -> None:
    alice, bob, mallory = uuid4(), uuid4(), uuid4()
    data = unique_png()
    info = store.upload(alice, data).media
    store.upload(bob, data)
    with pytest.raises(MediaNotOwned):
        store.check_attachable(info.id, mallory)
    with pytest.raises(MediaNotOwned):
        store.mark_attached(info.id, mallory)
    assert store.check_attachable(info.id, bob) == info
    with pytest.raises(MediaNotFound):
        store.check_attachable("0" * 64, alice)
    with pytest.raises(MediaNotFound):
        store.mark_attached("not-an-id", alice)
    assert not row(pool, info.id)["attached_at"]

    attached = store.mark_attached(info.id, bob)
    assert attached.attached
    first_at = row(pool, info.id)["attached_at"]
    assert store.mark_attached(info.id, bob).attached  # idempotent
    assert store.mark_attached(info.id, alice).attached
    assert row(pool, info.id)["attached_at"] == first_at
    with pool.connection() as conn:
        per_reader = conn.execute(
            "SELECT reader_id, attached_at IS NOT NULL AS attached FROM media_uploads "
            "WHERE media_id = %s",
            (info.id,),
        ).fetchall()
    assert {r["reader_id"]: r["attached"] for r in per_reader} == {alice: True, bob: True}
    age(pool, info.id, 48)
    assert info.id not in store.sweep().ids


def test_a_swept_picture_can_no_longer_be_attached(store: MediaStore, pool: ConnectionPool) -> None:
    reader = uuid4()
    info = store.upload(reader, unique_png()).media
    age(pool, info.id, 2)
    store.sweep()
    with pytest.raises(MediaNotFound):
        store.mark_attached(info.id, reader)
    assert not store.owns(info.id, reader)


class FailingStorage(DiskStorage):
    """Disk storage whose put of a picture's main file (not its thumbnail) fails."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if ".thumb." not in key:
            raise MediaStorageUnavailable("disk full")
        super().put(key, data, content_type)


def test_an_upload_that_fails_half_way_leaves_nothing(pool: ConnectionPool, tmp_path: Path) -> None:
    root = tmp_path / "failing"
    store = MediaStore(pool, FailingStorage(root))
    data = unique_png()
    with pytest.raises(MediaStorageUnavailable):
        store.upload(uuid4(), data)
    assert files(root) == set()  # the thumbnail written first was removed, no temp file
    cleaned = store.clean(data)
    media_id = hashlib.sha256(cleaned.data).hexdigest()
    with pool.connection() as conn:
        assert conn.execute("SELECT 1 FROM media WHERE id = %s", (media_id,)).fetchone() is None


def test_a_database_failure_after_the_files_were_written_removes_them(
    store: MediaStore, root: Path, pool: ConnectionPool
) -> None:
    with pytest.raises(Exception, match="uuid"):
        store.upload("not-a-uuid", unique_png())  # type: ignore[arg-type]
    assert files(root) == set()


def test_missing_files_of_a_live_picture_are_written_again(store: MediaStore, root: Path) -> None:
    data = unique_png()
    info = store.upload(uuid4(), data).media
    (root / info.key).unlink()
    again = store.upload(uuid4(), data)
    assert not again.created
    assert (root / info.key).exists()


def test_forgetting_a_reader_deletes_the_pictures_only_they_had(
    store: MediaStore, pool: ConnectionPool, root: Path
) -> None:
    gone, other = uuid4(), uuid4()
    shared_data = unique_png()
    shared = store.upload(gone, shared_data).media
    store.upload(other, shared_data)
    alone = store.upload(gone, unique_png()).media
    used = store.upload(gone, unique_png()).media
    store.mark_attached(used.id, gone)

    assert store.forget_reader(gone) == 1
    assert store.get(alone.id) is None and not (root / alone.key).exists()
    assert store.get(shared.id) is not None and store.owners(shared.id) == [other]
    assert store.get(used.id) is not None
    assert not store.owns(used.id, gone)
    assert store.forget_reader(gone) == 0


def test_liudong_media_sweep(database_url: str, pool: ConnectionPool, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    store = MediaStore(pool, DiskStorage(data_dir / "media"))
    expired = store.upload(uuid4(), unique_png()).media
    kept = store.upload(uuid4(), unique_png()).media
    age(pool, expired.id, 3)
    env = {"DATABASE_URL": database_url, "LIUDONG_DATA_DIR": str(data_dir)}

    dry = CliRunner().invoke(
        main, ["media", "sweep", "--grace", str(2 * HOUR), "--dry-run", "--json"], env=env
    )
    assert dry.exit_code == 0, dry.output
    assert expired.id in json.loads(dry.output)["ids"]
    assert (data_dir / "media" / expired.key).exists()

    done = CliRunner().invoke(main, ["media", "sweep", "--grace", str(2 * HOUR)], env=env)
    assert done.exit_code == 0, done.output
    assert "deleted" in done.output and expired.id in done.output
    assert "(disk storage)" in done.output
    assert not (data_dir / "media" / expired.key).exists()
    assert (data_dir / "media" / kept.key).exists()
    assert store.get(expired.id) is None


class FlakyDeletes(DiskStorage):
    """Disk storage whose deletes fail once ``failing`` is set."""

    failing = False

    def delete(self, key: str) -> None:
        if self.failing:
            raise MediaStorageUnavailable("storage down")
        super().delete(key)


def test_forgetting_a_reader_while_the_storage_fails_keeps_the_rest_sweepable(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    storage = FlakyDeletes(tmp_path / "flaky")
    store = MediaStore(pool, storage, MediaConfig(grace_seconds=HOUR))
    gone = uuid4()
    info = store.upload(gone, unique_png()).media
    storage.failing = True
    with pytest.raises(MediaStorageUnavailable):
        store.forget_reader(gone)
    assert store.owners(info.id) == []  # the reader is forgotten all the same
    assert store.get(info.id) is not None  # its files could not be deleted yet
    storage.failing = False
    age(pool, info.id, 2)
    assert info.id in store.sweep().ids
    assert store.get(info.id) is None and not (tmp_path / "flaky" / info.key).exists()


# -- forget_owner, remove, the check's bookkeeping (issue 12, parts 5 and 6) -------------------


def test_forget_owner_deletes_every_upload_of_the_reader_attached_or_not(
    store: MediaStore, pool: ConnectionPool, root: Path
) -> None:
    alice, bob = uuid4(), uuid4()
    attached = store.upload(alice, unique_png(), "avatar").media
    store.mark_attached(attached.id, alice)
    loose_bytes = unique_png()
    loose = store.upload(alice, loose_bytes, "chat").media
    shared_bytes = unique_png()
    shared = store.upload(alice, shared_bytes, "cover").media
    store.upload(bob, shared_bytes, "cover")  # Bob uploaded the same picture: his too
    bobs = store.upload(bob, unique_png(), "chat").media
    before = files(root)

    assert store.forget_owner(alice) == 2
    for gone in (attached, loose):
        assert store.get(gone.id) is None
        assert not {gone.key, gone.thumb_key} & files(root)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1 FROM media WHERE id = %s", (gone.id,)).fetchone() is None
    with pool.connection() as conn:
        left = conn.execute(
            "SELECT count(*) AS n FROM media_uploads WHERE reader_id = %s", (alice,)
        ).fetchone()
    assert left is not None and left["n"] == 0
    assert store.owners(shared.id) == [bob]  # kept: Bob's upload
    assert store.get(bobs.id) is not None
    assert {shared.key, shared.thumb_key, bobs.key, bobs.thumb_key} <= files(root) < before
    assert store.forget_owner(alice) == 0  # nothing left: idempotent
    # the same bytes uploaded again are a new picture of whoever uploads them
    again = store.upload(bob, loose_bytes, None)
    assert again.created and again.media.id == loose.id and store.owners(loose.id) == [bob]


def test_forget_owner_keeps_everything_when_a_file_cannot_be_deleted(
    pool: ConnectionPool, tmp_path: Path
) -> None:
    class Failing(DiskStorage):
        def delete(self, key: str) -> None:
            raise MediaStorageUnavailable("disk gone")

    store = MediaStore(pool, Failing(tmp_path / "m"), MediaConfig())
    alice = uuid4()
    info = store.upload(alice, unique_png(), None).media
    with pytest.raises(MediaStorageUnavailable):
        store.forget_owner(alice)
    assert store.owners(info.id) == [alice]  # a retry finishes the work
    assert store.get(info.id) is not None


def test_remove_deletes_the_files_for_good(
    store: MediaStore, pool: ConnectionPool, root: Path
) -> None:
    alice = uuid4()
    data = unique_png()
    info = store.upload(alice, data, "chat").media
    store.mark_attached(info.id, alice)
    assert not store.is_removed(info.id)

    assert store.remove(info.id, "risky") == [alice]
    assert store.get(info.id) is None and store.is_removed(info.id)
    assert store.removed_ids([info.id, "0" * 64, "bad"]) == {info.id}
    assert not {info.key, info.thumb_key} & files(root)
    assert row(pool, info.id)["removed_reason"] == "risky"
    assert store.remove(info.id, "risky") is None  # idempotent
    with pytest.raises(MediaNotFound):
        store.mark_attached(info.id, alice)
    with pytest.raises(MediaRemoved):
        store.upload(alice, data, "chat")  # the same bytes stay down
    assert not {info.key, info.thumb_key} & files(root)


def test_the_check_is_recorded_by_trace_id(store: MediaStore, pool: ConnectionPool) -> None:
    info = store.upload(uuid4(), unique_png(), "cover").media
    assert store.check_status(info.id) is None
    trace = f"trace-{uuid4().hex}"
    store.submitted(info.id, trace)
    assert store.check_status(info.id) == "pending"
    assert store.checked(trace, "pass") == info.id
    assert store.check_status(info.id) == "pass"
    assert store.checked("unknown-trace", "risky") is None
    with pytest.raises(ValueError, match="unknown check result"):
        store.checked(trace, "maybe")
    other = store.upload(uuid4(), unique_png(), None).media
    store.submitted(other.id, None)
    assert store.check_status(other.id) == "failed"
