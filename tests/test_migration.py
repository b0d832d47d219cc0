"""A library scanned with the old model moves to the new one: re-analysed by the next scan,
served from the old vectors until the new ones are complete, two models never in one index."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from deejai.engine.index import open_index, sidecar_info
from deejai.engine.library import Library
from deejai.engine.scan import scan
from deejai.engine.service import Engine
from deejai.models import DEFAULT_MODEL
from tests.audiogen import make_library

OLD = "msd-musicnn"


def test_old_library_is_reanalysed_and_served_from_old_vectors_until_complete(tmp_path):
    music = tmp_path / "music"
    make_library(music, n=6, seconds=4.0)
    with Engine(settings={"model": OLD}) as old:
        db = old.paths.library_file
        lib = Library(db)
        first = scan(lib, [music], workers=1, model=OLD)
        assert first.added == 6
        lib.close()

    # the new default model: a scan stopped after two files leaves the new vectors partial
    lib = Library(db)
    seen = []
    partial = scan(lib, [music], workers=1, model=DEFAULT_MODEL, batch_size=1,
                   on_result=seen.append, should_stop=lambda: len(seen) >= 2)
    assert partial.cancelled and 2 <= partial.reanalysed < 6
    assert lib.model_coverage() == {OLD: 6, DEFAULT_MODEL: partial.reanalysed}
    assert lib.serving_model(DEFAULT_MODEL) == OLD
    lib.close()

    with Engine() as engine:
        st = engine.status()
        assert st["model"] == DEFAULT_MODEL and st["serving_model"] == OLD
        assert st["migration"] == {"model": DEFAULT_MODEL, "done": partial.reanalysed,
                                   "total": 6, "serving": OLD}
        ids = [t["id"] for t in engine.tracks()]
        pl = engine.join(waypoints=[ids[0], ids[-1]], n=2)  # playlists still work: old vectors
        assert len(pl["entries"]) == 4
        assert sidecar_info(Library(db), OLD)["fresh"]

    lib = Library(db)
    rest = scan(lib, [music], workers=1, model=DEFAULT_MODEL)
    assert rest.reanalysed == 6 - partial.reanalysed and rest.added == 0
    assert lib.serving_model(DEFAULT_MODEL) == DEFAULT_MODEL
    old_idx, new_idx = open_index(lib, OLD), open_index(lib, DEFAULT_MODEL)
    assert old_idx.model == OLD and new_idx.model == DEFAULT_MODEL  # one sidecar per model
    _, old_vecs = lib.vectors(OLD)
    _, new_vecs = lib.vectors(DEFAULT_MODEL)
    assert old_vecs.shape == new_vecs.shape == (6, 200)
    # the same tracks, the same network: v2's vectors point where v1's do
    cos = (old_vecs * new_vecs).sum(1)
    assert cos.min() > 0.98, cos
    lib.close()
    with Engine() as engine:
        st = engine.status()
        assert st["serving_model"] == DEFAULT_MODEL and "migration" not in st


def test_cli_says_the_tracks_are_analysed_again(tmp_path):
    music = tmp_path / "music"
    make_library(music, n=3, seconds=4.0)
    env = {**os.environ, "DEEJAI_MODEL": OLD}
    cmd = [sys.executable, "-m", "deejai.ui_cli.main"]
    r = subprocess.run(cmd + ["scan", "-j", "1", str(music)], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    env.pop("DEEJAI_MODEL")
    r = subprocess.run(cmd + ["scan", "-j", "1", str(music)], env={**env, "COLUMNS": "200"},
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    said = " ".join((r.stdout + r.stderr).split())
    assert f"3 tracks are analysed again with the model {DEFAULT_MODEL}" in said
    assert "reanalysed" in r.stdout
    st = json.loads(subprocess.run(cmd + ["status", "--json"], env=env, capture_output=True,
                                   text=True, timeout=120).stdout)
    assert st["serving_model"] == DEFAULT_MODEL and st["model_coverage"][OLD] == 3
    assert np.isclose(st["tracks"], 3)
