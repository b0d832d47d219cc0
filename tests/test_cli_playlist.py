"""``deejai playlist`` and ``deejai radio`` on a generated MP3 library scanned for real."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.audiogen import make_library

N_TRACKS = 12


@pytest.fixture(scope="module")
def scanned(tmp_path_factory) -> Path:
    """A DEEJAI_HOME whose library holds N_TRACKS generated MP3s, scanned by the real engine."""
    home = tmp_path_factory.mktemp("cli-playlist-home")
    music = tmp_path_factory.mktemp("cli-playlist-music")
    make_library(music, n=N_TRACKS, seconds=6.0)
    old = os.environ.get("DEEJAI_HOME")
    os.environ["DEEJAI_HOME"] = str(home)
    try:
        from deejai.engine.service import Engine

        with Engine() as eng:
            job = eng.scan(paths=[str(music)], workers=1)["job"]
            state = eng.wait_scan(job, timeout=600)
            assert state["state"] == "finished", state
            assert len(eng.tracks(limit=None)) == N_TRACKS
    finally:
        if old is None:
            os.environ.pop("DEEJAI_HOME", None)
        else:
            os.environ["DEEJAI_HOME"] = old
    return home


@pytest.fixture
def run(scanned, monkeypatch):
    """Invoke ``deejai`` in process on the scanned library, without a daemon."""
    monkeypatch.setenv("DEEJAI_HOME", str(scanned))
    monkeypatch.setenv("DEEJAI_NO_DAEMON", "1")
    from deejai.ui_cli.main import cli

    def invoke(*args: str):
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)

    return invoke


def run_process(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``deejai`` as a real process (for exit codes and stderr of errors)."""
    env = dict(os.environ, DEEJAI_HOME=str(home), DEEJAI_NO_DAEMON="1", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-c", "from deejai.ui_cli.main import main; main()", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )


def test_playlist_table(run):
    result = run("playlist", "--from", "Chord 0", "--to", "Bass 4", "-n", "3")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "Artist 0 – Chord 0" in out and "Artist 0 – Bass 4" in out
    assert out.index("Chord 0") < out.index("Bass 4")
    lines = [ln for ln in out.splitlines() if "│" in ln and "Artist" in ln]
    assert len(lines) == 5
    assert "0:06" in out  # durations as m:ss
    assert "5 tracks" in out


def test_playlist_json_via_and_constraints(run):
    result = run("playlist", "--from", "#1", "--via", "Chirp 3", "--to", "Noise 1", "-n", "2",
                 "--no-repeat-artist", "--max-duration", "60", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    entries = data["entries"]
    assert len(entries) == 7
    assert entries[0]["id"] == 1 and entries[3]["title"] == "Chirp 3"
    assert entries[-1]["title"] == "Noise 1"
    assert len({e["id"] for e in entries}) == 7
    for a, b in zip(entries, entries[1:]):
        assert a["artist"] != b["artist"]
    assert entries[0]["distance"] == 0 and all(e["distance"] > 0 for e in entries[1:])


def test_playlist_noise_seed_reproducible(run):
    args = ("playlist", "--from", "#2", "--to", "#9", "-n", "4", "--noise", "0.5", "--format", "json")
    a = json.loads(run(*args, "--seed", "7").output)["entries"]
    b = json.loads(run(*args, "--seed", "7").output)["entries"]
    assert [e["id"] for e in a] == [e["id"] for e in b]


def test_playlist_output_file_by_extension(run, tmp_path):
    target = tmp_path / "trip.m3u8"
    result = run("playlist", "--from", "#1", "--to", "#5", "-n", "2", "-o", str(target))
    assert result.exit_code == 0, result.output
    text = target.read_text(encoding="utf-8")
    assert text.startswith("#EXTM3U")
    assert sum(1 for ln in text.splitlines() if ln.endswith(".mp3")) == 4
    xspf = tmp_path / "trip.xml"
    result = run("playlist", "--from", "#1", "--to", "#5", "-n", "2", "-o", str(xspf), "--format", "xspf")
    assert result.exit_code == 0, result.output
    assert "<playlist" in xspf.read_text(encoding="utf-8")


def test_radio(run):
    result = run("radio", "Beat 2", "-n", "6", "--lookback", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.output)["entries"]
    assert len(entries) == 6 and entries[0]["title"] == "Beat 2"
    assert len({e["id"] for e in entries}) == 6
    table = run("radio", "Beat 2", "Chord 5", "-n", "4")
    assert table.exit_code == 0 and "radio: Beat 2, Chord 5" in table.output


def test_ambiguous_and_unknown_names_exit_2(scanned):
    proc = run_process(scanned, "playlist", "--from", "chord", "--to", "#3")
    assert proc.returncode == 2, proc.stderr
    assert "matches" in proc.stderr and "Chord 0" in proc.stderr and "Chord 5" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_process(scanned, "radio", "polka")
    assert proc.returncode == 2
    assert "deejai tracks" in proc.stderr


def test_too_long_for_the_library(scanned):
    proc = run_process(scanned, "radio", "#1", "-n", str(N_TRACKS + 1))
    assert proc.returncode == 1
    assert "error:" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_process(scanned, "playlist", "--from", "#1", "--to", "#2", "-n", str(N_TRACKS))
    assert proc.returncode == 1 and "needs" in proc.stderr


def test_tag_waypoint(run, scanned):
    result = run("playlist", "--from", "#1", "--to", "tag:electronic", "-n", "2", "--format", "json")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.output)["entries"]
    assert len(entries) == 4 and entries[0]["id"] == 1
    assert len({e["id"] for e in entries}) == 4
    # the tag's track is chosen from the tag alone: the same whatever the length
    ends = set()
    for n in ("1", "2", "4"):
        result = run("playlist", "--from", "#1", "--to", "tag:electronic", "-n", n, "--format",
                     "json")
        assert result.exit_code == 0, result.output
        ends.add(json.loads(result.output)["entries"][-1]["id"])
    assert len(ends) == 1
    proc = run_process(scanned, "playlist", "--from", "#1", "--to", "tag:polka")
    assert proc.returncode == 2  # a name that matches nothing, as an unknown track
    assert "unknown tag 'polka'" in proc.stderr and "electronic" in proc.stderr
