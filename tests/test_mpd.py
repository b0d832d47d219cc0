"""The MPD sink against a real Music Player Daemon on a loopback port and a Unix socket.

The fixture starts Debian's ``mpd`` with a generated configuration (music_directory: a library
of MP3s the test writes; database, state and stored playlists in a temp folder; a "null" audio
output; no zeroconf), waits for its database, and the tests read MPD's queue back over the MPD
protocol (python-mpd2) to see what deejai sent.
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import click
import pytest
from click.testing import CliRunner

from deejai.engine.catalogue import Playlist, PlaylistEntry
from deejai.engine.errors import ConfigError, SinkError
from deejai.plugins import manager
from deejai.plugins.mpd import send, track_uri
from deejai.plugins.options import add_sink_options, push_playlist
from tests.audiogen import make_library, write_mp3
from tests.conftest import free_tcp_port

mpd = pytest.importorskip("mpd", reason="python-mpd2 is in the test extra")

MPD_BINARY = shutil.which("mpd")

UNICODE_TRACK = "Sigur Rós/Hoppípolla & Þú #1.mp3"


class MPDServer:
    def __init__(self, root: Path, music: Path, port: int, socket_path: Path,
                 process: subprocess.Popen, log: Path, password: str | None = None):
        self.root, self.music, self.port, self.socket_path = root, music, port, socket_path
        self.process, self.log, self.password = process, log, password

    def client(self) -> "mpd.MPDClient":
        client = mpd.MPDClient()
        client.timeout = 10
        client.connect("127.0.0.1", self.port)
        if self.password:
            client.password(self.password)
        return client

    def queue(self) -> list[str]:
        client = self.client()
        try:
            return [song["file"] for song in client.playlistinfo()]
        finally:
            client.disconnect()

    def reset_queue(self, uris: list[str] = ()) -> None:
        client = self.client()
        try:
            client.clear()
            for uri in uris:
                client.add(uri)
        finally:
            client.disconnect()


@contextlib.contextmanager
def running_mpd(root: Path, *, password: str | None = None) -> Iterator[MPDServer]:
    """Debian's ``mpd`` on a free loopback port and a Unix socket, its database updated.

    With ``password``, anonymous clients may only read (``default_permissions "read"``) and
    the password grants everything, so a queue change proves the password was sent.
    """
    if MPD_BINARY is None:
        pytest.skip("the mpd binary is not installed (Debian: apt-get install mpd; CI installs it)")
    music = root / "music"
    make_library(music, n=6, seconds=2.0)
    write_mp3(music / UNICODE_TRACK, seconds=2.0, kind="chirp", seed=9,
              tags={"artist": "Sigur Rós", "title": "Hoppípolla"})
    (root / "playlists").mkdir()
    port = free_tcp_port()
    socket_path = root / "socket"
    config = root / "mpd.conf"
    access = (f'password "{password}@read,add,control,admin"\n'
              'default_permissions "read"\n') if password else ""
    config.write_text(
        f'music_directory "{music}"\n'
        f'playlist_directory "{root / "playlists"}"\n'
        f'db_file "{root / "database"}"\n'
        f'state_file "{root / "state"}"\n'
        f'log_file "{root / "log"}"\n'
        'bind_to_address "127.0.0.1"\n'
        f'bind_to_address "{socket_path}"\n'
        f'port "{port}"\n'
        'zeroconf_enabled "no"\n'
        'auto_update "no"\n'
        'filesystem_charset "UTF-8"\n'
        f'{access}'
        'audio_output {\n  type "null"\n  name "null"\n}\n',
        encoding="utf-8",
    )
    log = root / "stderr.log"
    with open(log, "wb") as err:
        process = subprocess.Popen([MPD_BINARY, "--no-daemon", str(config)],
                                   stdout=subprocess.DEVNULL, stderr=err)
    server = MPDServer(root, music, port, socket_path, process, log, password=password)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"mpd exited with {process.returncode}: {log.read_text()}")
            try:
                client = server.client()
                break
            except (OSError, mpd.ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(f"mpd did not listen on port {port}: {log.read_text()}")
                time.sleep(0.1)
        try:
            client.update()
            while True:
                status = client.status()
                if "updating_db" not in status and int(client.stats()["songs"]) == 7:
                    break
                if time.monotonic() > deadline:
                    pytest.fail(f"mpd did not finish its database update: {status}")
                time.sleep(0.1)
        finally:
            client.disconnect()
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def mpd_server(tmp_path_factory) -> Iterator[MPDServer]:
    with running_mpd(tmp_path_factory.mktemp("mpd")) as server:
        yield server


@pytest.fixture
def settings(mpd_server) -> dict:
    """The [mpd] section: a sink receives its own section, not the whole settings."""
    return {"host": "127.0.0.1", "port": mpd_server.port, "music_directory": str(mpd_server.music)}


def _library(server: MPDServer) -> list[Path]:
    return sorted(p for p in server.music.rglob("*.mp3"))


def _playlist(paths: list[Path]) -> Playlist:
    return Playlist(entries=[PlaylistEntry(id=i, path=str(p), title=p.stem)
                             for i, p in enumerate(paths)])


def _uri(server: MPDServer, path: Path) -> str:
    return path.relative_to(server.music).as_posix()


def test_replace_puts_the_tracks_in_the_queue_in_order(mpd_server, settings):
    paths = _library(mpd_server)
    mpd_server.reset_queue([_uri(mpd_server, paths[0])])
    chosen = [paths[5], paths[2], paths[6], paths[0]]  # includes the unicode one
    assert UNICODE_TRACK in {_uri(mpd_server, p) for p in chosen}
    result = send(_playlist(chosen), settings)
    expected = [_uri(mpd_server, p) for p in chosen]
    assert mpd_server.queue() == expected
    assert result["added"] == expected
    assert result["skipped"] == []
    assert result["mode"] == "replace" and result["queue_length"] == 4
    assert result["server"] == f"127.0.0.1:{mpd_server.port}"
    assert result["saved_as"] is None


def test_append_keeps_the_queue(mpd_server, settings):
    paths = _library(mpd_server)
    before = [_uri(mpd_server, p) for p in paths[:2]]
    mpd_server.reset_queue(before)
    chosen = [paths[4], paths[3], paths[1]]
    result = send(_playlist(chosen), settings, mode="append")
    assert mpd_server.queue() == before + [_uri(mpd_server, p) for p in chosen]
    assert result["queue_length"] == 5 and result["mode"] == "append"


def test_save_as_stores_only_deejais_tracks_and_replaces_an_old_one(mpd_server, settings):
    paths = _library(mpd_server)
    mpd_server.reset_queue([_uri(mpd_server, paths[0])])
    first = [paths[1], paths[6]]
    send(_playlist(first), settings, mode="append", save_as="deejai trip")
    client = mpd_server.client()
    try:
        assert client.listplaylist("deejai trip") == [_uri(mpd_server, p) for p in first]
        second = [paths[3], paths[2], paths[4]]
        result = send(_playlist(second), settings, save_as="deejai trip")
        assert client.listplaylist("deejai trip") == [_uri(mpd_server, p) for p in second]
        assert "deejai trip" in {p["playlist"] for p in client.listplaylists()}
    finally:
        client.disconnect()
    assert result["saved_as"] == "deejai trip"
    assert (mpd_server.root / "playlists" / "deejai trip.m3u").is_file()


def test_unknown_and_outside_tracks_are_reported_not_dropped(mpd_server, settings, tmp_path):
    paths = _library(mpd_server)
    unscanned = write_mp3(mpd_server.music / "later" / "not in the database.mp3", seconds=1.0)
    outside = write_mp3(tmp_path / "elsewhere.mp3", seconds=1.0)
    try:
        mpd_server.reset_queue()
        chosen = [paths[0], unscanned, paths[1], outside]
        result = send(_playlist(chosen), settings)
    finally:
        unscanned.unlink()
    assert mpd_server.queue() == [_uri(mpd_server, paths[0]), _uri(mpd_server, paths[1])]
    assert result["skipped"] == [
        {"path": str(unscanned),
         "reason": "not in MPD's database as 'later/not in the database.mp3' "
                   "(update MPD's database: mpc update)"},
        {"path": str(outside), "reason": f"outside MPD's music directory {mpd_server.music}"},
    ]


def test_nothing_known_is_an_error_and_the_queue_is_left_alone(mpd_server, settings, tmp_path):
    paths = _library(mpd_server)
    before = [_uri(mpd_server, paths[2])]
    mpd_server.reset_queue(before)
    outside = write_mp3(tmp_path / "elsewhere.mp3", seconds=1.0)
    with pytest.raises(SinkError, match=r"none of the 1 tracks can be sent to MPD at "
                                        rf"127\.0\.0\.1:{mpd_server.port}; .*elsewhere\.mp3: "
                                        "outside MPD's music directory"):
        send(_playlist([outside]), settings)
    assert mpd_server.queue() == before


def test_music_directory_is_asked_from_mpd_over_its_local_socket(mpd_server):
    paths = _library(mpd_server)
    mpd_server.reset_queue()
    settings = {"host": str(mpd_server.socket_path), "port": 6600, "music_directory": ""}
    result = send(_playlist(paths[:3]), settings)
    assert result["music_directory"] == str(mpd_server.music)
    assert result["server"] == str(mpd_server.socket_path)
    assert mpd_server.queue() == [_uri(mpd_server, p) for p in paths[:3]]

    tcp = {"host": "127.0.0.1", "port": mpd_server.port, "music_directory": ""}
    with pytest.raises(ConfigError, match=r"does not tell its music directory to remote "
                                          r"clients: set music_directory in the \[mpd\] table"):
        send(_playlist(paths[:1]), tcp)
    # an explicit option wins over the (missing) setting
    send(_playlist(paths[:1]), tcp, music_directory=mpd_server.music, mode="append")
    assert len(mpd_server.queue()) == 4


def test_unreachable_mpd_and_bad_mode_are_one_line_errors(mpd_server, settings):
    port = free_tcp_port()
    with pytest.raises(SinkError, match=rf"cannot connect to MPD at 127\.0\.0\.1:{port}: "):
        send(_playlist(_library(mpd_server)[:1]), settings, port=port)
    with pytest.raises(ConfigError, match="MPD queue mode must be one of replace, append"):
        send(_playlist(_library(mpd_server)[:1]), settings, mode="shuffle")


def test_track_uri_maps_paths_under_the_music_directory(tmp_path):
    music = tmp_path / "Music"
    (music / "a b").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(music, target_is_directory=True)
    assert track_uri(music / "a b" / "Ü.mp3", music) == "a b/Ü.mp3"
    assert track_uri(link / "a b" / "Ü.mp3", music) == "a b/Ü.mp3"
    assert track_uri(music / "a b" / "Ü.mp3", link) == "a b/Ü.mp3"
    assert track_uri(tmp_path / "Musical" / "x.mp3", music) is None  # prefix is not enough
    assert track_uri(music, music) is None


def test_the_sink_is_registered_and_the_rpc_method_sends(mpd_server, settings, monkeypatch):
    from deejai.engine.config import paths as deejai_paths

    monkeypatch.setenv("DEEJAI_PLUGINS", "-")
    manager.reset_plugin_manager()
    try:
        sink = manager.sinks()["mpd"]
        paths = _library(mpd_server)
        mpd_server.reset_queue()
        sink.send(_playlist(paths[:2]), settings)
        assert mpd_server.queue() == [_uri(mpd_server, p) for p in paths[:2]]

        # the daemon's method: the engine sends with its [mpd] settings section
        deejai_paths().ensure().settings_file.write_text(
            f'[mpd]\nhost = "127.0.0.1"\nport = {mpd_server.port}\n'
            f'music_directory = "{mpd_server.music}"\n', encoding="utf-8")
        result = manager.rpc_methods()["sink.mpd.send"](
            manager.build_engine(), playlist=_playlist(paths[2:4]).to_dict(), mode="append")
        assert result["added"] == [_uri(mpd_server, p) for p in paths[2:4]]
        assert len(mpd_server.queue()) == 4
    finally:
        manager.reset_plugin_manager()


def test_cli_options_push_to_mpd_from_the_settings_file(mpd_server, deejai_home, monkeypatch):
    from deejai.engine.config import paths as deejai_paths

    monkeypatch.setenv("DEEJAI_PLUGINS", "-")
    manager.reset_plugin_manager()
    deejai_paths().ensure().settings_file.write_text(
        f'[mpd]\nhost = "127.0.0.1"\nport = 1\nmusic_directory = "{mpd_server.music}"\n',
        encoding="utf-8",
    )
    library = _library(mpd_server)

    @click.command()
    @click.option("-n", type=int, default=3)
    @add_sink_options
    def make(n):
        """A stand-in playlist command."""
        push_playlist(_playlist(library[:n]))
        click.echo(f"made {n}")

    mpd_server.reset_queue([_uri(mpd_server, library[6])])
    runner = CliRunner()
    result = runner.invoke(make, ["-n", "2", "--to-mpd", "--mpd-port", str(mpd_server.port),
                                  "--mpd-append", "--mpd-save", "from the cli"])
    try:
        assert result.exit_code == 0, result.output
        assert "made 2" in result.output
        assert (f"mpd 127.0.0.1:{mpd_server.port}: appended 2 tracks (queue: 3), "
                "saved as 'from the cli'") in result.output
        assert mpd_server.queue() == [_uri(mpd_server, p) for p in (library[6], *library[:2])]

        before = mpd_server.queue()
        result = runner.invoke(make, ["-n", "1"])  # no --to-mpd: MPD is not touched
        assert result.exit_code == 0 and mpd_server.queue() == before
        result = runner.invoke(make, ["--mpd-save", "x"])
        assert result.exit_code == 2 and "--mpd-save needs --to-mpd" in result.output
        result = runner.invoke(make, ["--to-mpd"])  # port 1 from the settings file
        assert isinstance(result.exception, SinkError)
        assert "cannot connect to MPD at 127.0.0.1:1" in str(result.exception)
    finally:
        manager.reset_plugin_manager()


def test_deejai_playlist_to_mpd_end_to_end(mpd_server, deejai_home):
    """Scan MPD's music folder with deejai, join the dots with --to-mpd, read MPD's queue."""
    import json as _json
    import os
    import sys

    env = dict(os.environ, DEEJAI_HOME=str(deejai_home), DEEJAI_NO_DAEMON="1")
    run = [sys.executable, "-m", "deejai.ui_cli.main"]
    scan = subprocess.run([*run, "scan", "-j", "1", "--quiet", str(mpd_server.music)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert scan.returncode == 0, scan.stderr
    tracks = _json.loads(subprocess.run([*run, "tracks", "--json"], env=env, capture_output=True,
                                        text=True, check=True).stdout)
    first, last = tracks[0], tracks[-1]
    mpd_server.reset_queue([])
    made = subprocess.run(
        [*run, "playlist", "--from", f"#{first['id']}", "--to", f"#{last['id']}", "-n", "2",
         "--format", "json", "--to-mpd", "--mpd-host", "127.0.0.1",
         "--mpd-port", str(mpd_server.port), "--mpd-music-dir", str(mpd_server.music)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert made.returncode == 0, made.stderr
    playlist = _json.loads(made.stdout)
    expected = [_uri(mpd_server, Path(e["path"])) for e in playlist["entries"]]
    assert len(expected) == 4
    assert mpd_server.queue() == expected
