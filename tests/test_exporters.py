"""The built-in exporters: files written by deejai, parsed back with independent readers."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from urllib.parse import unquote, urlparse
from xml.etree import ElementTree as ET

import pytest

from deejai.engine.catalogue import Playlist, PlaylistEntry
from deejai.engine.errors import ConfigError, DeejaiError, PluginError
from deejai.plugins import manager
from deejai.plugins.exporters import XSPF_NAMESPACE
from deejai.plugins.manager import render_playlist, write_playlist

NS = {"x": XSPF_NAMESPACE}


@pytest.fixture(autouse=True)
def fresh_manager(monkeypatch):
    monkeypatch.setenv("DEEJAI_PLUGINS", "-")  # only the built-ins, whatever is installed
    manager.reset_plugin_manager()
    yield
    manager.reset_plugin_manager()


@pytest.fixture
def layout(tmp_path) -> tuple[Path, Path, Playlist]:
    """A playlist folder inside a music folder, and a playlist with tracks in and outside it."""
    music = tmp_path / "Music"
    outside = tmp_path / "elsewhere" / "Sigur Rós"
    entries = [
        PlaylistEntry(id=7, path=str(music / "Nexuiz" / "01 Battle Epic.mp3"), artist="Nexuiz",
                      title="Battle Epic", album="Nexuiz OST", duration_s=183.6),
        PlaylistEntry(id=3, path=str(music / "Ólafur Arnalds" / "Þú ert jörðin #1 & 50%.mp3"),
                      artist="Ólafur Arnalds", title="Þú ert jörðin", album="", duration_s=59.4,
                      distance=0.12),
        PlaylistEntry(id=9, path=str(outside / "Hoppípolla.mp3"), artist="", title="",
                      duration_s=0.0, distance=0.3),
        PlaylistEntry(id=4, path=str(music / "x" / "Two lines.mp3"), artist="A\nB",
                      title="two\r\nlines", duration_s=1.0, distance=0.2),
    ]
    return music, outside, Playlist(entries=entries, kind="join",
                                     params={"waypoints": [7, 9], "n": 4, "noise": 0.0})


def test_m3u8_lines_relative_under_the_playlist_folder_else_absolute(layout):
    music, outside, playlist = layout
    data = render_playlist(playlist, "m3u8", base_dir=music)
    text = data.decode("utf-8")  # UTF-8, no BOM
    assert not data.startswith(b"\xef\xbb\xbf")
    lines = text.split("\n")
    assert lines[0] == "#EXTM3U" and lines[-1] == ""
    assert len(lines) == 1 + 2 * len(playlist.entries) + 1
    pairs = [(lines[i], lines[i + 1]) for i in range(1, len(lines) - 1, 2)]
    assert pairs[0] == ("#EXTINF:184,Nexuiz - Battle Epic", "Nexuiz/01 Battle Epic.mp3")
    assert pairs[1] == ("#EXTINF:59,Ólafur Arnalds - Þú ert jörðin",
                        "Ólafur Arnalds/Þú ert jörðin #1 & 50%.mp3")
    assert pairs[2] == ("#EXTINF:-1,Hoppípolla", str(outside / "Hoppípolla.mp3"))
    assert pairs[3] == ("#EXTINF:1,A B - two lines", "x/Two lines.mp3")  # labels: one line
    for (_, location), entry in zip(pairs, playlist.entries):
        assert os.path.normpath(music / location) == entry.path  # absolute stays absolute


def test_m3u8_without_a_folder_is_all_absolute(layout):
    _, _, playlist = layout
    lines = render_playlist(playlist, "m3u8").decode("utf-8").split("\n")
    assert lines[2] == playlist.entries[0].path
    assert lines[4] == playlist.entries[1].path


def test_xspf_structure_and_uris_round_trip(layout):
    music, _, playlist = layout
    data = render_playlist(playlist, "xspf", base_dir=music)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = ET.fromstring(data)
    assert root.tag == f"{{{XSPF_NAMESPACE}}}playlist" and root.get("version") == "1"
    assert [child.tag.split("}")[1] for child in root] == [
        "title", "creator", "annotation", "trackList"]
    assert json.loads(root.findtext("x:annotation", namespaces=NS)) == {
        "kind": "join", "params": {"waypoints": [7, 9], "n": 4, "noise": 0.0}}
    tracks = root.findall("x:trackList/x:track", NS)
    assert len(tracks) == len(playlist.entries)
    for track, entry in zip(tracks, playlist.entries):
        uri = track.findtext("x:location", namespaces=NS)
        assert uri.isascii() and " " not in uri  # percent-encoded
        parsed = urlparse(uri)
        assert parsed.scheme == "file" and parsed.netloc == ""
        assert unquote(parsed.path) == entry.path
    first = tracks[0]
    assert [c.tag.split("}")[1] for c in first] == [
        "location", "title", "creator", "album", "duration"]  # the spec's element order
    assert first.findtext("x:location", namespaces=NS).endswith("/Nexuiz/01%20Battle%20Epic.mp3")
    assert first.findtext("x:duration", namespaces=NS) == "183600"
    second = tracks[1]
    assert second.findtext("x:title", namespaces=NS) == "Þú ert jörðin"
    assert second.findtext("x:creator", namespaces=NS) == "Ólafur Arnalds"
    assert second.find("x:album", NS) is None  # empty fields are left out
    assert "%23" in second.findtext("x:location", namespaces=NS)  # '#' is not a fragment
    third = tracks[2]
    assert [c.tag.split("}")[1] for c in third] == ["location"]  # no tags, unknown duration
    assert tracks[3].findtext("x:creator", namespaces=NS) == "A B"


def test_json_is_the_playlist_dict(layout):
    _, _, playlist = layout
    data = render_playlist(playlist, "json")
    assert json.loads(data.decode("utf-8")) == playlist.to_dict()
    assert Playlist.from_dict(json.loads(data)) == playlist
    assert "Ólafur".encode() in data  # UTF-8, not \\u escapes


def test_write_playlist_picks_the_format_from_the_extension(layout, tmp_path):
    music, _, playlist = layout
    music.mkdir(parents=True)
    out = write_playlist(playlist, music / "trip.M3U8")
    assert out == music / "trip.M3U8"
    assert out.read_bytes() == render_playlist(playlist, "m3u8", base_dir=music)
    out = write_playlist(playlist.to_dict(), tmp_path / "trip.xspf")  # a dict is fine too
    assert ET.parse(out).getroot().tag == f"{{{XSPF_NAMESPACE}}}playlist"
    out = write_playlist(playlist, tmp_path / "trip.txt", format="json")
    assert json.loads(out.read_text(encoding="utf-8"))["kind"] == "join"


def test_write_playlist_is_atomic_and_keeps_the_old_file_on_failure(layout, tmp_path):
    _, _, playlist = layout
    target = tmp_path / "trip.json"
    write_playlist(playlist, target)
    before = target.read_bytes()
    broken = Playlist(entries=playlist.entries, params={"seed": object()})  # not JSON
    with pytest.raises(PluginError, match="the 'json' exporter failed: TypeError"):
        write_playlist(broken, target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trip.json"]  # no temp file left

    short = Playlist(entries=playlist.entries[:1])
    write_playlist(short, target)
    assert json.loads(target.read_text(encoding="utf-8"))["entries"][0]["id"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trip.json"]


def test_written_files_get_the_usual_permissions(layout, tmp_path):
    _, _, playlist = layout
    umask = os.umask(0o022)
    try:
        out = write_playlist(playlist, tmp_path / "trip.m3u8")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_bad_outputs_are_one_line_errors(layout, tmp_path):
    _, _, playlist = layout
    with pytest.raises(ConfigError, match=r"trip\.mp3: no playlist format writes '\.mp3' files"):
        write_playlist(playlist, tmp_path / "trip.mp3")
    with pytest.raises(ConfigError, match="unknown playlist format 'wpl'"):
        write_playlist(playlist, tmp_path / "trip.m3u8", format="wpl")
    missing = tmp_path / "no" / "such" / "trip.m3u8"
    with pytest.raises(DeejaiError, match=rf"{missing}: cannot write the playlist "
                                          r"\(No such file or directory\)"):
        write_playlist(playlist, missing)
    with pytest.raises(DeejaiError, match="not a playlist"):
        write_playlist({"entries": [{"id": 1}]}, tmp_path / "x.m3u8")


def test_empty_playlist(tmp_path):
    empty = Playlist(entries=[])
    assert render_playlist(empty, "m3u8") == b"#EXTM3U\n"
    root = ET.fromstring(render_playlist(empty, "xspf"))
    assert root.findall("x:trackList/x:track", NS) == []
    assert root.find("x:trackList", NS) is not None  # trackList is required even when empty


def test_the_engine_writes_with_the_exporters_it_was_handed(layout, tmp_path):
    from deejai.engine.service import Engine

    _, _, playlist = layout
    with manager.build_engine() as engine:
        # a relative name lands in the playlist folder (never the engine's working folder)
        written = engine.export(playlist.to_dict(), path="t.xspf")
        assert {f["name"] for f in engine.formats()} == {"m3u8", "xspf", "json"}
        target = engine.paths.playlist_dir / "t.xspf"
    assert written == {"format": "xspf", "path": str(target)}
    assert target.read_bytes() == manager.render_playlist(playlist, "xspf")
    assert Engine(exporters=manager.exporters()).formats() == engine.formats()
