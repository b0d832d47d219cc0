"""Vector indexes: FAISS flat/HNSW against NumPy, sidecar files, staleness."""
from __future__ import annotations

import numpy as np
import pytest

from deejai.engine import index as index_mod
from deejai.engine.errors import LibraryError
from deejai.engine.index import (
    FaissIndex,
    NumpyIndex,
    load_index,
    open_index,
    sidecar_info,
    sidecar_path,
)
from deejai.engine.library import Library
from tests.test_library import analysis

D = 200


@pytest.fixture
def data(rng):
    vecs = rng.standard_normal((500, 32)).astype(np.float32)
    ids = rng.permutation(10_000)[:500].astype(np.int64)
    return ids, vecs


def assert_same_results(s1, i1, s2, i2, atol=1e-5):
    """Equal scores; equal ids except where two neighbours' scores tie within ``atol``."""
    np.testing.assert_allclose(s1, s2, atol=atol)
    for r in range(i1.shape[0]):
        for j in np.flatnonzero(i1[r] != i2[r]):
            swapped = np.flatnonzero(i1[r] == i2[r, j])
            assert len(swapped) == 1, (r, j)
            assert abs(s1[r, swapped[0]] - s1[r, j]) <= atol, (r, j)


def brute(ids, vecs, q, k):
    v = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    qq = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qq @ v.T
    order = np.argsort(-sims, axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), ids[order]


@pytest.mark.parametrize("make", ["numpy", "faiss-flat"])
def test_exact_indexes_match_brute_force(make, data, rng):
    ids, vecs = data
    idx = NumpyIndex(32) if make == "numpy" else FaissIndex(32, "flat")
    idx.add(ids, vecs)
    q = rng.standard_normal((7, 32)).astype(np.float32)
    scores, got = idx.search(q, 10)
    want_s, want_i = brute(ids, vecs, q, 10)
    assert scores.dtype == np.float32 and got.dtype == np.int64 and got.shape == (7, 10)
    assert_same_results(scores, got, want_s, want_i)


def test_faiss_and_numpy_agree_after_edits(data, rng):
    ids, vecs = data
    f, n = FaissIndex(32, "flat"), NumpyIndex(32)
    for idx in (f, n):
        idx.add(ids, vecs)
        idx.remove(ids[:50])
        idx.add(ids[100:110], vecs[200:210])  # replace ten vectors
    assert f.ntotal == n.ntotal == 450
    assert sorted(f.ids()) == sorted(n.ids())
    q = rng.standard_normal((5, 32)).astype(np.float32)
    fs, fi = f.search(q, 20)
    ns, ni = n.search(q, 20)
    assert_same_results(fs, fi, ns, ni)
    np.testing.assert_allclose(f.vectors_of(ids[100:102]), n.vectors_of(ids[100:102]), atol=1e-6)


def test_hnsw_finds_neighbours_and_removes(data):
    ids, vecs = data
    h = FaissIndex.build(ids, vecs, structure="hnsw")
    assert h.kind == "faiss-hnsw"
    _, got = h.search(vecs[:20], 1)
    assert (got[:, 0] == ids[:20]).mean() >= 0.95  # each vector is its own nearest neighbour
    assert h.remove(ids[:10]) == 10
    assert h.ntotal == 490 and not np.isin(ids[:10], h.ids()).any()
    _, got = h.search(vecs[:10], 5)
    assert not np.isin(got, ids[:10]).any()
    # replacing vectors keeps one entry per id
    h.add(ids[20:22], vecs[30:32])
    assert h.ntotal == 490 and len(np.unique(h.ids())) == 490
    want = vecs[30:32] / np.linalg.norm(vecs[30:32], axis=1, keepdims=True)
    np.testing.assert_allclose(h.vectors_of(ids[20:22]), want, atol=1e-5)


@pytest.mark.parametrize("cls", [NumpyIndex, FaissIndex])
def test_padding_and_empty(cls, rng):
    idx = cls(8) if cls is NumpyIndex else cls(8, "flat")
    s, i = idx.search(rng.standard_normal((2, 8)), 3)
    assert i.tolist() == [[-1] * 3] * 2 and np.isneginf(s).all()
    idx.add([5, 6], rng.standard_normal((2, 8)))
    s, i = idx.search(rng.standard_normal(8), 4)
    assert s.shape == (1, 4) and sorted(i[0, :2]) == [5, 6] and i[0, 2:].tolist() == [-1, -1]
    assert np.isneginf(s[0, 2:]).all()
    with pytest.raises(ValueError, match="dimension"):
        idx.search(rng.standard_normal((1, 9)), 1)


@pytest.mark.parametrize("kind", ["numpy", "flat", "hnsw"])
def test_save_load_roundtrip(kind, data, tmp_path, rng):
    ids, vecs = data
    if kind == "numpy":
        idx = NumpyIndex(32, model="m", revision=7, library_id="abc")
        idx.add(ids, vecs)
    else:
        idx = FaissIndex.build(ids, vecs, structure=kind, model="m", revision=7, library_id="abc")
    path = idx.save(tmp_path / "x.index.npz")
    back = load_index(path)
    assert type(back) is type(idx) and back.meta == idx.meta
    q = rng.standard_normal((3, 32)).astype(np.float32)
    assert_same_results(*back.search(q, 5), *idx.search(q, 5))
    assert not list(tmp_path.glob("*.tmp"))


def test_load_damaged_file(tmp_path):
    p = tmp_path / "bad.index.npz"
    p.write_bytes(b"garbage" * 10)
    with pytest.raises(LibraryError, match="bad.index.npz"):
        load_index(p)


# ------------------------------------------------------------------------ open_index + library


def add_tracks(lib, rng, start, n):
    with lib.transaction():
        return [lib.save_analysis(analysis(f"/m/{i}.mp3", i, rng)) for i in range(start, start + n)]


def assert_matches_library(idx, lib, model="msd-musicnn"):
    ids, vecs = lib.vectors(model)
    assert sorted(idx.ids().tolist()) == ids.tolist()
    assert idx.revision == lib.revision
    if len(ids):
        _, got = idx.search(vecs, 1)
        np.testing.assert_array_equal(got[:, 0], ids)


@pytest.mark.parametrize("prefer", ["faiss", "numpy"])
def test_open_index_builds_saves_and_updates(prefer, tmp_path, rng):
    lib = Library(tmp_path / "library.sqlite")
    add_tracks(lib, rng, 0, 20)
    idx = open_index(lib, "msd-musicnn", prefer=prefer)
    assert idx.kind == ("faiss-flat" if prefer == "faiss" else "numpy")
    side = sidecar_path(lib, "msd-musicnn")
    assert side == tmp_path / "library.msd-musicnn.index.npz" and side.is_file()
    assert_matches_library(idx, lib)
    # unchanged library: the sidecar is used as is
    mtime = side.stat().st_mtime_ns
    again = open_index(lib, "msd-musicnn", prefer=prefer)
    assert side.stat().st_mtime_ns == mtime and again.revision == idx.revision
    # the library changes: added, re-analysed, removed, moved, failed
    add_tracks(lib, rng, 20, 5)
    t3 = lib.track_by_path("/m/3.mp3")["id"]
    with lib.transaction():
        lib.save_analysis(analysis("/m/3.mp3", 333, rng))  # new vector, same id
        lib.remove_tracks([lib.track_by_path("/m/4.mp3")["id"]])
        lib.move_track(lib.track_by_path("/m/5.mp3")["id"], "/n/5.mp3", 1, 1)
        lib.save_error("/m/6.mp3", 1, 1, "now broken")
    stale = load_index(side)
    assert stale.revision < lib.revision
    fresh = open_index(lib, "msd-musicnn", prefer=prefer)
    assert_matches_library(fresh, lib)
    new_vec = lib.vectors("msd-musicnn")[1][list(lib.vectors("msd-musicnn")[0]).index(t3)]
    np.testing.assert_allclose(fresh.vectors_of([t3])[0], new_vec / np.linalg.norm(new_vec), atol=1e-5)
    assert load_index(side).revision == lib.revision
    info = sidecar_info(lib, "msd-musicnn")
    assert info["fresh"] and info["ntotal"] == fresh.ntotal and info["kind"] == fresh.kind
    add_tracks(lib, rng, 40, 1)
    assert sidecar_info(lib, "msd-musicnn")["fresh"] is False
    assert sidecar_info(lib, "other-model") is None
    lib.close()


def test_open_index_rebuilds_foreign_or_damaged_sidecars(tmp_path, rng):
    lib = Library(tmp_path / "library.sqlite")
    add_tracks(lib, rng, 0, 10)
    side = sidecar_path(lib, "msd-musicnn")
    # an index from another library file with the same revision number must not be trusted
    other = NumpyIndex(D, model="msd-musicnn", revision=lib.revision, library_id="someone-else")
    other.add([999], rng.standard_normal((1, D)))
    other.save(side)
    assert_matches_library(open_index(lib, "msd-musicnn", prefer="numpy"), lib)
    # a damaged file
    side.write_bytes(b"\x00" * 100)
    assert_matches_library(open_index(lib, "msd-musicnn", prefer="faiss"), lib)
    # an index claiming to be current but holding different ids
    bad = NumpyIndex(D, model="msd-musicnn", revision=lib.revision, library_id=lib.library_id)
    bad.add([12345], rng.standard_normal((1, D)))
    bad.save(side)
    assert_matches_library(open_index(lib, "msd-musicnn", prefer="numpy"), lib)
    # a newly created library (revision restarts at 0) never reuses the old sidecar
    lib.close()
    (tmp_path / "library.sqlite").unlink()
    for extra in tmp_path.glob("library.sqlite-*"):
        extra.unlink()
    lib2 = Library(tmp_path / "library.sqlite")
    empty = open_index(lib2, "msd-musicnn")
    assert empty.ntotal == 0
    lib2.close()


def test_flat_index_becomes_hnsw_past_the_threshold(tmp_path, rng, monkeypatch):
    monkeypatch.setattr(index_mod, "HNSW_THRESHOLD", 15)
    lib = Library(tmp_path / "library.sqlite")
    add_tracks(lib, rng, 0, 10)
    assert open_index(lib, "msd-musicnn").kind == "faiss-flat"
    add_tracks(lib, rng, 10, 10)
    idx = open_index(lib, "msd-musicnn")
    assert idx.kind == "faiss-hnsw"
    assert_matches_library(idx, lib)
    lib.close()
