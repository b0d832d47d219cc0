"""The library map: every track a point in 2-D, near its neighbours in the embedding space.

:func:`project` turns the L2-normalised track vectors into 2-D points with

* **t-SNE** (van der Maaten & Hinton, "Visualizing data using t-SNE", JMLR 2008) through
  openTSNE (Poličar, Stražar & Zupan, "openTSNE: a modular Python library for t-SNE
  dimensionality reduction and embedding", JSS 2024), with the cosine metric, PCA
  initialisation and a fixed random state, when openTSNE is installed (the ``map`` extra) and
  the library has between :data:`TSNE_MIN_TRACKS` and :data:`TSNE_MAX_TRACKS` tracks. t-SNE
  keeps neighbours near each other, which is what joining dots on a map needs;
* else **PCA** (the two leading principal components, NumPy's SVD), which keeps the largest
  spread but can put unrelated tracks on top of each other.

:func:`library_map` caches the points per library revision in a sidecar file beside the
database (``<db stem>.<model>.map.npz``, like the vector index), so the map is computed once
after each scan; :meth:`deejai.engine.service.Engine.map` serves it as ``library.map``.

Points are scaled into the square ``[-1, 1]²`` (the larger spread of the two axes fills it,
so distances keep their proportions).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LibraryMap",
    "METHODS",
    "TSNE_MAX_TRACKS",
    "TSNE_MIN_TRACKS",
    "library_map",
    "map_path",
    "project",
]

log = logging.getLogger(__name__)

#: Projection methods :func:`project` knows; "auto" picks t-SNE where it can.
METHODS = ("auto", "tsne", "pca")
#: Fewer tracks than this get PCA (t-SNE's perplexity needs a few neighbours per point).
TSNE_MIN_TRACKS = 10
#: More tracks than this get PCA under "auto": t-SNE of 50,000 tracks takes minutes on two
#: cores (about 7 s for 2,000 on the development machine).
TSNE_MAX_TRACKS = 50_000
#: Format of the map sidecar file.
MAP_FORMAT = 1


def _have_opentsne() -> bool:
    try:
        import openTSNE  # noqa: F401
    except ImportError:
        return False
    return True


def _fit_box(xy: np.ndarray) -> np.ndarray:
    """Centre ``xy`` and scale it so the larger half-range is 1 (float32, shape kept)."""
    xy = np.asarray(xy, dtype=np.float64)
    if len(xy) == 0:
        return xy.astype(np.float32).reshape(0, 2)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    centre = (lo + hi) / 2.0
    half = float(np.max(hi - lo)) / 2.0
    out = (xy - centre) / half if half > 0 else xy - centre
    return out.astype(np.float32)


def _pca(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    xy = x @ comps.T
    if xy.shape[1] < 2:  # one-dimensional data
        xy = np.concatenate([xy, np.zeros((len(xy), 2 - xy.shape[1]))], axis=1)
    # a deterministic sign: the track farthest along each axis lies on its positive side
    for j in range(2):
        far = int(np.argmax(np.abs(xy[:, j])))
        if xy[far, j] < 0:
            xy[:, j] = -xy[:, j]
    return xy


def _tsne(vectors: np.ndarray, seed: int) -> np.ndarray:
    from openTSNE import TSNE

    n = len(vectors)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", initialization="pca",
                n_jobs=1, random_state=seed, verbose=False)
    return np.asarray(tsne.fit(np.ascontiguousarray(vectors, dtype=np.float32)))


def project(vectors: np.ndarray, *, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """2-D points for track vectors: t-SNE where it can, else PCA.

    Parameters
    ----------
    vectors : np.ndarray, float, shape (N, d)
        Track vectors (L2-normalised; t-SNE uses the cosine metric).
    method : {"auto", "tsne", "pca"}
        "auto": t-SNE (openTSNE) when it is installed and ``TSNE_MIN_TRACKS <= N <=
        TSNE_MAX_TRACKS``, else PCA. "tsne" without openTSNE, or with fewer than
        :data:`TSNE_MIN_TRACKS` tracks, falls back to PCA too.
    seed : int
        Random state of t-SNE (the same vectors and seed give the same map).

    Returns
    -------
    xy : np.ndarray, float32, shape (N, 2)
        Points in ``[-1, 1]²``, centred.
    method : str
        "tsne" or "pca", the method used.

    Raises
    ------
    ValueError
        An unknown ``method``, or ``vectors`` not two-dimensional.
    """
    if method not in METHODS:
        raise ValueError(f"unknown map method {method!r}; known: {', '.join(METHODS)}")
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors must have shape (N, d), not {vectors.shape}")
    n = len(vectors)
    use_tsne = method in ("auto", "tsne") and n >= TSNE_MIN_TRACKS and _have_opentsne()
    if method == "auto" and n > TSNE_MAX_TRACKS:
        use_tsne = False
    if use_tsne:
        return _fit_box(_tsne(vectors, seed)), "tsne"
    return _fit_box(_pca(vectors)), "pca"


@dataclass
class LibraryMap:
    """The map of one library revision.

    Attributes
    ----------
    ids : np.ndarray, int64, shape (N,)
        Track ids, in the catalogue's order.
    xy : np.ndarray, float32, shape (N, 2)
        Their points, in ``[-1, 1]²``.
    method : str
        "tsne" or "pca".
    model : str
        The model whose vectors were projected.
    revision : int
        The library revision the map was made from.
    """

    ids: np.ndarray
    xy: np.ndarray
    method: str
    model: str
    revision: int


def map_path(library: Any, model: str) -> Path:
    """Where :func:`library_map` keeps ``model``'s map: ``<db stem>.<model>.map.npz``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model)
    db = Path(library.path)
    return db.with_name(f"{db.stem}.{safe}.map.npz")


def _load(path: Path, library: Any, model: str, method: str) -> LibraryMap | None:
    try:
        with np.load(str(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            ids, xy = data["ids"].astype(np.int64), data["xy"].astype(np.float32)
    except (OSError, ValueError, KeyError):
        return None
    fresh = (meta.get("format") == MAP_FORMAT and meta.get("model") == model
             and meta.get("library_id") == library.library_id
             and meta.get("revision") == library.revision
             and meta.get("requested") == method and xy.shape == (len(ids), 2))
    if not fresh:
        return None
    return LibraryMap(ids=ids, xy=xy, method=str(meta["method"]), model=model,
                      revision=int(meta["revision"]))


def library_map(library: Any, model: str, catalogue: Any, *, method: str = "auto",
                save: bool = True) -> LibraryMap:
    """The map of the library's current revision, from the sidecar when it is fresh.

    Parameters
    ----------
    library : deejai.engine.library.Library
        Gives ``path``, ``library_id`` and ``revision``.
    model : str
        The model whose vectors ``catalogue`` holds.
    catalogue : deejai.engine.catalogue.Catalogue
        The library's vectors at this revision.
    method : {"auto", "tsne", "pca"}
        See :func:`project`.
    save : bool
        Write a new map to the sidecar (atomically: a temporary file renamed over it). A
        read-only data folder only costs the cache.

    Returns
    -------
    LibraryMap
    """
    path = map_path(library, model)
    revision = int(library.revision)
    cached = _load(path, library, model, method)
    if cached is not None and np.array_equal(cached.ids, catalogue.ids):
        return cached
    xy, used = project(catalogue.vectors, method=method)
    result = LibraryMap(ids=np.asarray(catalogue.ids, dtype=np.int64), xy=xy, method=used,
                        model=model, revision=revision)
    if save:
        meta = {"format": MAP_FORMAT, "model": model, "library_id": library.library_id,
                "revision": revision, "method": used, "requested": method}
        from deejai.engine._fs import atomic_file

        try:
            with atomic_file(path, private=True) as fh:  # 0600, like the library beside it
                np.savez(fh, meta=np.asarray(json.dumps(meta)), ids=result.ids, xy=xy)
        except OSError as exc:
            log.warning("cannot save the library map to %s: %s", path, exc)
    return result
