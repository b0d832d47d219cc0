"""The Engine facade in process: scan in the background, events, status, playlists, export."""
from __future__ import annotations

import threading

import pytest

from deejai.engine.errors import (
    ConfigError,
    LibraryEmptyError,
    PlaylistError,
    ScanRunningError,
)
from deejai.engine.service import Engine
from tests.audiogen import make_library


@pytest.fixture(scope="module")
def music(tmp_path_factory):
    root = tmp_path_factory.mktemp("music")
    make_library(root, n=8, seconds=4.0)
    return root


def _scan(engine: Engine, music, **kw) -> dict:
    events: list[tuple[str, dict]] = []
    done = threading.Event()

    def on_event(name, params):
        events.append((name, params))
        if name == "scan.finished":
            done.set()

    unsubscribe = engine.subscribe(on_event)
    job = engine.scan(paths=[str(music)], **kw)["job"]
    assert done.wait(300), "scan did not finish"
    unsubscribe()
    status = engine.scan_status(job)
    return {"job": job, "events": events, "status": status}


def test_empty_library_says_to_scan():
    with Engine() as engine:
        with pytest.raises(LibraryEmptyError, match="deejai scan"):
            engine.radio(seeds=["anything"], n=3)
        assert engine.scan_status() == {"job": None, "state": "idle"}
        assert engine.status()["tracks"] == 0
        with pytest.raises(ConfigError, match="no music folder"):
            engine.scan()
        with pytest.raises(ConfigError, match="no such file"):
            engine.scan(paths=["/no/such/folder/here"])


def test_bad_options_are_clear_errors():
    with pytest.raises(ConfigError, match="scan_executor"):
        Engine(scan_executor="cluster")


@pytest.mark.parametrize("executor", ["process", "thread"])
def test_scan_events_status_and_playlists(music, executor):
    from deejai.plugins.exporters import M3U8

    with Engine(scan_executor=executor, exporters=[M3U8]) as engine:
        out = _scan(engine, music, workers=1)
        assert out["status"]["state"] == "finished", out["status"]
        assert out["status"]["summary"]["added"] == 8
        names = [n for n, _ in out["events"]]
        assert names[-1] == "scan.finished" and "scan.progress" in names
        last = [p for n, p in out["events"] if n == "scan.progress"][-1]
        assert last["done"] == last["total"] == 8 and last["job"] == out["job"]

        status = engine.status()
        assert status["tracks"] == 8 and status["index"]["fresh"] is True

        tracks = engine.tracks()
        assert len(tracks) == 8
        a, b = tracks[0]["id"], tracks[-1]["id"]
        pl = engine.join(waypoints=[a, b], n=3, seed=1)
        ids = [e["id"] for e in pl["entries"]]
        assert len(ids) == 5 and ids[0] == a and ids[-1] == b and len(set(ids)) == 5
        assert pl["entries"][0]["distance"] == 0.0
        assert all(e["path"].endswith(".mp3") for e in pl["entries"])

        radio = engine.radio(seeds=[str(a)], n=6)
        assert len(radio["entries"]) == 6 and radio["entries"][0]["id"] == a

        exported = engine.export(pl, format="m3u8")
        assert exported["content"].startswith("#EXTM3U")
        assert engine.formats() == [{"name": "m3u8", "extension": "m3u8",
                                     "media_type": "audio/x-mpegurl"}]
        assert engine.track(a)["id"] == a


def test_an_engine_is_handed_its_exporters():
    """The engine imports no plugin: without exporters it says there are none."""
    with Engine() as engine:
        assert engine.formats() == []
        with pytest.raises(ConfigError, match="no exporter plugin is loaded"):
            engine.export({"entries": []}, format="m3u8")


def test_second_scan_while_one_runs_is_refused(music):
    with Engine() as engine:
        engine.scan(paths=[str(music)], workers=1)
        with pytest.raises(ScanRunningError):
            engine.scan(paths=[str(music)])
        engine.cancel_scan()


def test_engine_rejects_bad_playlist_parameters(music):
    with Engine() as engine:
        _scan(engine, music, workers=1)
        ids = [t["id"] for t in engine.tracks()]
        with pytest.raises(PlaylistError, match="seed"):
            engine.join(waypoints=ids[:2], n=2, seed=-1)
        with pytest.raises(PlaylistError, match="two waypoints"):
            engine.join(waypoints=ids[:1])
        with pytest.raises(PlaylistError, match="not a playlist"):
            engine.export({"entries": [{}]})


def test_patches_per_track_reach_the_analysis(music):
    import sqlite3

    with Engine() as engine:
        with pytest.raises(ConfigError, match="patches"):
            engine.scan(paths=[str(music)], patches=-1)
        out = _scan(engine, music, workers=1, patches=1)
        assert out["status"]["state"] == "finished"
        db = sqlite3.connect(engine.paths.library_file)
        counts = {row[0] for row in db.execute("SELECT n_patches FROM vectors")}
        db.close()
        assert counts == {1}
