"""The library map: the projection, its cache per library revision, ``library.map`` and
``deejai map`` on a generated MP3 library scanned for real."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deejai.engine import projection
from deejai.engine.catalogue import l2_normalise
from tests.audiogen import make_library

N_TRACKS = 14


def clustered(n: int, dim: int, clusters: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.standard_normal((clusters, dim)))
    which = rng.integers(0, clusters, n)
    return l2_normalise(centres[which] + 0.25 * rng.standard_normal((n, dim)) / np.sqrt(dim) * 3), which


def neighbour_agreement(xy: np.ndarray, which: np.ndarray, k: int = 5) -> float:
    """Share of each point's k nearest 2-D neighbours that come from its own cluster."""
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nearest = np.argsort(d, axis=1)[:, :k]
    return float((which[nearest] == which[:, None]).mean())


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_keeps_neighbours_near(method):
    if method == "tsne":
        pytest.importorskip("openTSNE")
    vectors, which = clustered(300, 32, 6)
    xy, used = projection.project(vectors, method=method)
    assert used == method
    assert xy.shape == (300, 2) and xy.dtype == np.float32
    assert np.abs(xy).max() == pytest.approx(1.0, abs=1e-5)  # fills [-1, 1]², centred
    # clusters stay together on the map (a shuffled map would give about 1/6)
    assert neighbour_agreement(xy, which) > (0.9 if method == "tsne" else 0.6)
    again, _ = projection.project(vectors, method=method)
    np.testing.assert_array_equal(xy, again)  # deterministic


def test_projection_of_tiny_libraries_and_bad_input():
    for n in (0, 1, 2, 5):
        xy, used = projection.project(np.eye(max(n, 1), 8, dtype=np.float32)[:n])
        assert xy.shape == (n, 2) and used == "pca" and np.isfinite(xy).all()
    with pytest.raises(ValueError, match="unknown map method"):
        projection.project(np.zeros((3, 4)), method="umap")
    with pytest.raises(ValueError, match="shape"):
        projection.project(np.zeros(4))


@pytest.fixture(scope="module")
def scanned(tmp_path_factory) -> tuple[Path, Path]:
    """A DEEJAI_HOME holding N_TRACKS generated MP3s, scanned by the real engine."""
    home = tmp_path_factory.mktemp("map-home")
    music = tmp_path_factory.mktemp("map-music")
    make_library(music, n=N_TRACKS, seconds=5.0)
    old = os.environ.get("DEEJAI_HOME")
    os.environ["DEEJAI_HOME"] = str(home)
    try:
        from deejai.engine.service import Engine

        with Engine() as eng:
            state = eng.wait_scan(eng.scan(paths=[str(music)], workers=1)["job"], timeout=600)
            assert state["state"] == "finished", state
    finally:
        if old is None:
            os.environ.pop("DEEJAI_HOME", None)
        else:
            os.environ["DEEJAI_HOME"] = old
    return home, music


def test_engine_map_is_cached_per_library_revision(scanned, monkeypatch, tmp_path):
    home, music = scanned
    monkeypatch.setenv("DEEJAI_HOME", str(home))
    from deejai.engine.service import Engine
    from tests.audiogen import write_mp3

    with Engine() as eng:
        m = eng.map()
        assert m["count"] == N_TRACKS == len(m["ids"]) == len(m["x"]) == len(m["y"])
        assert m["method"] == ("tsne" if projection._have_opentsne() else "pca")
        assert set(m["ids"]) == {t["id"] for t in eng.tracks(limit=None)}
        assert all(-1.0 <= v <= 1.0 for v in m["x"] + m["y"])
        assert set(m["album"]) <= {t["album"] for t in eng.tracks(limit=None)}
        assert all(m["tag"]) and all(m["title"])
        sidecar = projection.map_path(eng._library(), eng.model_name)
        assert sidecar.exists()
        stamp = sidecar.stat().st_mtime_ns
    with Engine() as eng:  # a new engine reads the sidecar instead of projecting again
        assert eng.map() == m
        assert sidecar.stat().st_mtime_ns == stamp
        assert eng.map(method="pca")["method"] == "pca"
        with pytest.raises(Exception, match="unknown map method"):
            eng.map(method="umap")
    # a scan that changes the library makes a new map with the new track on it
    extra = tmp_path / "extra"
    write_mp3(extra / "new.mp3", seconds=5.0, kind="beat", seed=99,
              tags={"artist": "New", "title": "New one", "album": "Added"})
    with Engine() as eng:
        eng.wait_scan(eng.scan(paths=[str(music), str(extra)], workers=1)["job"], timeout=600)
        m2 = eng.map()
        assert m2["count"] == N_TRACKS + 1 and m2["revision"] > m["revision"]
        assert "Added" in m2["album"]


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEEJAI_HOME=str(home), DEEJAI_NO_DAEMON="1", COLUMNS="200")
    return subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_deejai_map_draws_the_last_playlist(scanned, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    home, music = scanned
    first, last = str(music / "Artist 0" / "00 chord 0.mp3"), str(music / "Artist 1" / "05 chord 5.mp3")
    made = run_cli(home, "playlist", "--from", first, "--to", last, "-n", "3", "--format", "json")
    assert made.returncode == 0, made.stderr
    playlist = json.loads(made.stdout)
    remembered = json.loads((home / "state" / "last-playlist.json").read_text())
    assert [e["id"] for e in remembered["entries"]] == [e["id"] for e in playlist["entries"]]

    out = tmp_path / "map.png"
    res = run_cli(home, "map", "-o", str(out), "--size", "800x600")
    assert res.returncode == 0, res.stderr
    assert "the path of 5 tracks" in res.stderr
    with Image.open(out) as img:
        assert img.size == (800, 600)
        pixels = np.asarray(img.convert("RGB"))
    # the path is drawn in black; the dots only map has none
    dots = tmp_path / "dots.png"
    assert run_cli(home, "map", "-o", str(dots), "--size", "800x600", "--no-path").returncode == 0
    with Image.open(dots) as img:
        plain = np.asarray(img.convert("RGB"))
    dark = lambda a: int((a.max(axis=2) < 40).sum())  # noqa: E731
    assert dark(pixels) > dark(plain) + 200

    bad = run_cli(home, "map", "-o", str(tmp_path / "x.png"), "--size", "huge")
    assert bad.returncode == 2 and "WIDTHxHEIGHT" in bad.stderr
