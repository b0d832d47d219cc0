"""The SQLite library: schema, migrations, WAL, batches, queries, catalogue."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading

import numpy as np
import pytest

from deejai.engine.analyse import TrackAnalysis
from deejai.engine.catalogue import Catalogue
from deejai.engine.config import paths
from deejai.engine.errors import LibraryError
from deejai.engine.library import SCHEMA_VERSION, Library, blob_to_vector, vector_to_blob

D = 200


def analysis(path: str, i: int, rng: np.random.Generator, *, model: str = "msd-musicnn",
             audio_hash: str | None = None, tags: dict | None = None) -> TrackAnalysis:
    """A TrackAnalysis with random (but reproducible) vectors, as analyse() would return."""
    patches = rng.standard_normal((4, D)).astype(np.float32)
    mean = patches.mean(axis=0)
    return TrackAnalysis(
        path=path, size=1000 + i, mtime_ns=10**18 + i, duration_s=60.0 + i,
        tags=tags if tags is not None else {"artist": f"Artist {i % 3}", "title": f"Song {i}",
                                            "album": "Album", "tracknumber": i + 1, "year": 2000 + i},
        audio_hash=audio_hash or f"{i:032x}", model=model,
        patch_starts_s=np.arange(4, dtype=np.float32) * 3,
        patch_vectors=patches,
        vector=(mean / np.linalg.norm(mean)).astype(np.float32),
        intro=(patches[0] / np.linalg.norm(patches[0])).astype(np.float32),
        outro=(patches[-1] / np.linalg.norm(patches[-1])).astype(np.float32),
        tag_probs=rng.random(50).astype(np.float32),
    )


@pytest.fixture
def lib(tmp_path):
    library = Library(tmp_path / "lib.sqlite")
    yield library
    library.close()


def fill(lib: Library, rng, n: int = 5) -> list[TrackAnalysis]:
    out = [analysis(f"/music/a/{i:02d}.mp3", i, rng) for i in range(n)]
    with lib.transaction():
        for a in out:
            lib.save_analysis(a)
    return out


def test_default_path_honours_deejai_home(deejai_home):
    with Library() as library:
        assert library.path == paths().library_file
        assert str(library.path).startswith(str(deejai_home))
        assert library.path.is_file()


def test_new_file_schema_wal_and_version(lib):
    assert lib.schema_version == SCHEMA_VERSION
    assert lib.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {r[0] for r in lib.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"tracks", "vectors", "tags", "scans", "meta"} <= names
    assert lib.revision == 0
    assert len(lib.library_id) == 32
    assert lib.integrity_check() == "ok"


def test_newer_schema_is_refused(tmp_path):
    p = tmp_path / "future.sqlite"
    Library(p).close()
    conn = sqlite3.connect(p)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(LibraryError, match="newer than this deejai"):
        Library(p)


def test_not_a_database(tmp_path):
    p = tmp_path / "junk.sqlite"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LibraryError, match="junk.sqlite"):
        Library(p)


def test_migration_from_an_empty_version_0_file(tmp_path):
    p = tmp_path / "old.sqlite"
    sqlite3.connect(p).close()  # an empty file at user_version 0
    with Library(p) as library:
        assert library.schema_version == SCHEMA_VERSION
        assert library.revision == 0


def test_save_and_read_back(lib, rng):
    items = fill(lib, rng)
    assert lib.revision == 1  # one transaction, one revision
    t = lib.track_by_path("/music/a/02.mp3")
    assert t["title"] == "Song 2" and t["tracknumber"] == 3 and t["year"] == 2002
    assert t["status"] == "ok" and t["error"] is None
    json.dumps(t)  # plain JSON-serialisable
    assert lib.track(t["id"]) == t
    assert lib.track(99999) is None
    ids, vecs = lib.vectors("msd-musicnn")
    assert ids.dtype == np.int64 and vecs.dtype == np.float32 and vecs.shape == (5, D)
    np.testing.assert_array_equal(vecs[2], items[2].vector)
    # vectors are float32 little-endian blobs
    blob = lib.conn.execute("SELECT vector FROM vectors LIMIT 1").fetchone()[0]
    assert len(blob) == 4 * D
    assert blob_to_vector(vector_to_blob(items[0].vector)).tolist() == items[0].vector.tolist()


def test_update_keeps_id_and_bumps_revision(lib, rng):
    fill(lib, rng)
    before = lib.track_by_path("/music/a/01.mp3")
    again = analysis("/music/a/01.mp3", 1, rng, tags={"title": "Renamed"})
    rev = lib.revision
    with lib.transaction():
        tid = lib.save_analysis(again)
    assert tid == before["id"]
    after = lib.track(tid)
    assert after["title"] == "Renamed" and after["artist"] is None
    assert lib.revision == rev + 1
    ids, vecs = lib.vectors("msd-musicnn", since_revision=rev)
    assert ids.tolist() == [tid]


def test_error_rows_and_retry(lib, rng):
    fill(lib, rng, 2)
    with lib.transaction():
        lib.save_error("/music/broken.mp3", 12, 34, "not an audio file")
        # a track that was ok and now fails loses its vector
        lib.save_error("/music/a/00.mp3", 1, 2, "truncated")
    errs = lib.errors()
    assert [e["path"] for e in errs] == ["/music/a/00.mp3", "/music/broken.mp3"]
    assert errs[1]["error"] == "not an audio file"
    assert lib.vector_ids("msd-musicnn").tolist() == [lib.track_by_path("/music/a/01.mp3")["id"]]
    stats = lib.stats()
    assert stats["tracks"] == 1 and stats["errors"] == 2
    assert lib.tracks(status="error")[0]["status"] == "error"
    assert len(lib.tracks(status=None)) == 3


def test_writes_need_a_transaction(lib, rng):
    with pytest.raises(LibraryError, match="transaction"):
        lib.save_analysis(analysis("/x.mp3", 0, rng))


def test_failed_batch_rolls_back(lib, rng):
    fill(lib, rng, 2)
    rev = lib.revision
    with pytest.raises(RuntimeError):
        with lib.transaction():
            lib.save_analysis(analysis("/music/new.mp3", 9, rng))
            raise RuntimeError("killed mid-batch")
    assert lib.track_by_path("/music/new.mp3") is None
    assert lib.revision == rev


def test_uncommitted_batch_is_lost_when_the_process_dies(tmp_path):
    """A process killed inside a transaction leaves the last committed state, intact."""
    db = tmp_path / "kill.sqlite"
    code = f"""
import os, numpy as np
from deejai.engine.library import Library
from tests.test_library import analysis
lib = Library({str(db)!r})
rng = np.random.default_rng(0)
with lib.transaction():
    lib.save_analysis(analysis('/m/committed.mp3', 0, rng))
with lib.transaction():
    lib.save_analysis(analysis('/m/lost.mp3', 1, rng))
    os._exit(9)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(_repo_root()), timeout=120)
    assert proc.returncode == 9
    with Library(db) as library:
        assert library.integrity_check() == "ok"
        assert [t["path"] for t in library.tracks()] == ["/m/committed.mp3"]
        assert library.revision == 1


def _repo_root():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


def test_move_remove_and_duplicates(lib, rng):
    fill(lib, rng, 3)
    t0 = lib.track_by_path("/music/a/00.mp3")
    rev = lib.revision
    with lib.transaction():
        lib.move_track(t0["id"], "/music/b/moved.mp3", 5, 6, tags={"title": "Moved", "tracknumber": 7})
    moved = lib.track(t0["id"])
    assert moved["path"] == "/music/b/moved.mp3" and moved["title"] == "Moved" and moved["tracknumber"] == 7
    assert lib.revision == rev + 1
    assert t0["id"] in lib.vector_ids("msd-musicnn")
    # same audio at a second path
    dup = analysis("/music/c/copy.mp3", 7, rng, audio_hash=t0["audio_hash"])
    with lib.transaction():
        dup_id = lib.save_analysis(dup)
        assert lib.update_duplicates() == 1
    assert lib.track(dup_id)["duplicate_of"] == t0["id"]
    assert lib.stats()["duplicates"] == 1
    with lib.transaction():
        assert lib.remove_tracks([t0["id"]]) == 1
        assert lib.update_duplicates() == 0
    assert lib.track(dup_id)["duplicate_of"] is None
    # a removed track is gone from every listing, but kept (with its vectors) in case it
    # comes back: then it gets its id back
    assert lib.track(t0["id"]) is None and t0["id"] not in lib.vector_ids("msd-musicnn")
    assert lib.track(t0["id"], gone=True)["status"] == "gone"
    assert [t["id"] for t in lib.tracks(status="gone")] == [t0["id"]]
    assert lib.stats()["removed"] == 1 and lib.stats()["tracks"] == 3
    assert lib.conn.execute("SELECT count(*) FROM vectors WHERE track_id = ?", (t0["id"],)).fetchone()[0] == 1


def test_search_is_case_insensitive_and_unicode(lib, rng):
    items = [
        analysis("/m/1.mp3", 1, rng, tags={"artist": "Björk", "title": "Jóga", "album": "Homogenic"}),
        analysis("/m/2.mp3", 2, rng, tags={"artist": "BJÖRK", "title": "Hunter", "album": "Homogenic"}),
        analysis("/m/Straße 3.mp3", 3, rng, tags={"artist": "Kraftwerk", "title": "Autobahn"}),
        analysis("/m/100%_pure.mp3", 4, rng, tags={}),
    ]
    with lib.transaction():
        for a in items:
            lib.save_analysis(a)
    assert {t["title"] for t in lib.tracks("björk")} == {"Jóga", "Hunter"}
    assert [t["title"] for t in lib.tracks("bjö jóga")] == ["Jóga"]
    assert [t["title"] for t in lib.tracks("STRASSE")] == ["Autobahn"]  # casefold: ß -> ss
    assert [t["title"] for t in lib.tracks("straße")] == ["Autobahn"]
    assert [t["path"] for t in lib.tracks("100%")] == ["/m/100%_pure.mp3"]
    assert lib.tracks("%") == lib.tracks("_") == []  # no letters or digits: no words, no match
    # the same rule as track resolution: accents and case folded, words start words
    assert {t["title"] for t in lib.tracks("bjork")} == {"Jóga", "Hunter"}
    assert [t["title"] for t in lib.tracks("bjork joga")] == ["Jóga"]
    assert [t["path"] for t in lib.tracks("pure 10")] == ["/m/100%_pure.mp3"]
    assert [t["title"] for t in lib.tracks("ogenic jog")] == ["Jóga"]  # else anywhere
    assert len(lib.tracks(limit=2)) == 2
    recs = lib.records()
    assert set(recs[0]) == {"id", "path", "artist", "title", "album"}
    assert len(recs) == 4


def test_stats(lib, rng):
    assert lib.stats()["tracks"] == 0 and lib.stats()["last_scan"] is None
    fill(lib, rng, 3)
    lib.add_scan("2024-01-01T00:00:00+00:00", "2024-01-01T00:01:00+00:00", ["/music"], {"added": 3})
    s = lib.stats()
    assert s["tracks"] == 3 and s["errors"] == 0 and s["model"] == "msd-musicnn"
    assert s["hours"] == pytest.approx((60 + 61 + 62) / 3600, abs=1e-3)
    assert s["last_scan"]["summary"] == {"added": 3} and s["last_scan"]["roots"] == ["/music"]
    assert s["size"] > 0
    json.dumps(s)


def test_catalogue(lib, rng):
    items = fill(lib, rng, 4)
    # another model's vectors and an error row stay out
    with lib.transaction():
        lib.save_analysis(analysis("/music/other.mp3", 9, rng, model="other-model"))
        lib.save_error("/music/bad.mp3", 1, 1, "bad")
    cat = lib.catalogue("msd-musicnn")
    assert isinstance(cat, Catalogue) and len(cat) == 4 and cat.dim == D
    np.testing.assert_allclose(np.linalg.norm(cat.vectors, axis=1), 1.0, rtol=1e-5)
    r = cat.row(int(lib.track_by_path("/music/a/01.mp3")["id"]))
    np.testing.assert_allclose(cat.vectors[r], items[1].vector, rtol=1e-5)
    np.testing.assert_allclose(cat.outro[r], items[1].outro, rtol=1e-5)
    assert cat.tag_probs.shape == (4, 50)
    assert len(cat.tag_labels) == 50 and "rock" in cat.tag_labels  # from the model card
    assert cat.artist[r] == "Artist 1" and cat.duration_s[r] == pytest.approx(61.0)
    empty = lib.catalogue("nothing")
    assert len(empty) == 0


def test_readers_see_committed_state_while_a_writer_works(tmp_path, rng):
    p = tmp_path / "wal.sqlite"
    writer = Library(p)
    reader = Library(p)
    fill(writer, rng, 2)
    entered, release = threading.Event(), threading.Event()

    def write():
        with writer.transaction():
            writer.save_analysis(analysis("/music/new.mp3", 7, rng))
            entered.set()
            release.wait(30)

    t = threading.Thread(target=write)
    t.start()
    assert entered.wait(30)
    # WAL: the reader is not blocked and does not see the open transaction
    assert len(reader.tracks()) == 2
    assert reader.revision == 1
    release.set()
    t.join()
    assert len(reader.tracks()) == 3 and reader.revision == 2
    writer.close()
    reader.close()


def test_library_usable_from_another_thread(lib, rng):
    fill(lib, rng, 2)
    out = []
    t = threading.Thread(target=lambda: out.append(len(lib.tracks())))
    t.start()
    t.join()
    assert out == [2]
