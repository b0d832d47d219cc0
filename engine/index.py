"""Nearest-neighbour search over track vectors: FAISS, with a NumPy fallback.

All indexes compare L2-normalised vectors by inner product, i.e. cosine similarity; the ids
they return are track ids (``tracks.id``). Two implementations share the :class:`VectorIndex`
interface:

* :class:`FaissIndex` — ``faiss.IndexIDMap2`` over an exact ``IndexFlatIP`` while the library
  is small, and over an ``IndexHNSWFlat`` (Malkov & Yashunin, 2018) from
  :data:`HNSW_THRESHOLD` vectors on. The threshold comes from ``benchmarks/index.py``, which
  measures build time, query latency and recall@10 against the exact index. HNSW cannot remove
  vectors, so removing from an HNSW index rebuilds it from its own stored vectors.
* :class:`NumpyIndex` — exact search with a matrix product, for platforms without FAISS
  (phones) and tiny libraries.

SQLite is the truth. An index is saved as a *sidecar* file beside the database
(``library.<model>.index.npz``, mode 0600, written atomically) that records the model, the
dimension, the number of vectors, the library id, the library revision it was built from and
a checksum of the vectors it was built from (:func:`vectors_checksum`). The sidecar is a cache
and is never trusted: :func:`open_index` loads it, brings it up to date from the vectors SQLite
wrote since that revision, and then checks it against SQLite (ids, dimension, count, checksum,
and the vectors it holds); a sidecar that cannot be read or does not match is rebuilt from
SQLite with one warning line. So a search never sees stale or foreign vectors, and a damaged
sidecar never blocks anything.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from deejai.engine._fs import atomic_file
from deejai.engine.errors import LibraryError

__all__ = [
    "VectorIndex",
    "FaissIndex",
    "NumpyIndex",
    "open_index",
    "load_index",
    "sidecar_path",
    "sidecar_info",
    "vectors_checksum",
    "faiss_available",
    "HNSW_THRESHOLD",
]

log = logging.getLogger(__name__)

#: Number of vectors from which :class:`FaissIndex` (``structure="auto"``) builds an HNSW graph
#: instead of an exact flat index. ``benchmarks/index.py --threads 1`` (200-d clustered vectors,
#: one FAISS thread, a shared 2-core machine): one k=10 query on the flat index took a median
#: 0.36 ms at 10k vectors, 1.5 ms at 20k, 3.5 ms at 50k and 20-29 ms at 100k-200k; HNSW took
#: 0.2-0.35 ms with recall@10 = 1.000 at every size, but costs 37 s to build at 50k (70 s at
#: 200k), paid again whenever vectors are removed or replaced. Below 50k the exact index is
#: fast enough for a playlist's few dozen queries and never needs a rebuild.
HNSW_THRESHOLD = 50_000
#: HNSW graph degree, construction and search beam widths (FAISS defaults are 32 / 40 / 16;
#: efSearch 128 keeps recall@10 near 0.99 on the benchmark's data).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128

_FORMAT = 1

#: Rows compared at a time when an index's vectors are checked against SQLite's (bounds the
#: memory of the check: 4096 x 200 float32 = 3.3 MB per side).
_CHECK_ROWS = 4096
#: Largest difference between a stored unit vector and SQLite's vector normalised again: the
#: same float32 arithmetic gives the same bits; this leaves room for another NumPy build.
_CHECK_ATOL = 1e-5


def vectors_checksum(ids: np.ndarray, vectors: np.ndarray) -> str:
    """A checksum of track vectors as SQLite holds them.

    Parameters
    ----------
    ids : np.ndarray, int, shape (n,)
        Track ids, ascending (:meth:`deejai.engine.library.Library.vectors` order).
    vectors : np.ndarray, float, shape (n, d)
        The vectors as stored (not normalised).

    Returns
    -------
    str
        32 hex characters: blake2b (128-bit digest) of ``n``, ``d``, the ids as int64
        little-endian and the vectors as float32 little-endian, row by row.
    """
    ids = np.ascontiguousarray(np.asarray(ids, dtype="<i8").reshape(-1))
    vecs = np.ascontiguousarray(np.asarray(vectors, dtype="<f4"))
    d = int(vecs.shape[1]) if vecs.ndim == 2 and len(ids) else 0
    h = hashlib.blake2b(digest_size=16)
    h.update(np.array([len(ids), d], dtype="<i8").tobytes())
    h.update(ids.tobytes())
    h.update(vecs.tobytes())
    return h.hexdigest()


def faiss_available() -> bool:
    """True when the ``faiss`` module can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _normalise(x: np.ndarray, dim: int | None = None) -> np.ndarray:
    from deejai.engine.catalogue import l2_normalise

    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"expected vectors of shape (n, d), got shape {x.shape}")
    if dim is not None and x.shape[0] and x.shape[1] != dim:
        raise ValueError(f"vectors have dimension {x.shape[1]}, the index has {dim}")
    return np.ascontiguousarray(l2_normalise(x, axis=1), dtype=np.float32)


def _batch(ids: Any, vectors: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Check one ``add()`` batch: int64 ids (unique) and as many unit float32 vectors.

    Raises
    ------
    ValueError
        When the counts differ or an id repeats.
    """
    ids = _ids(ids)
    vecs = _normalise(vectors, dim)
    if len(ids) != len(vecs):
        raise ValueError(f"{len(ids)} ids for {len(vecs)} vectors")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("duplicate ids in one add()")
    return ids, vecs


def _ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


class VectorIndex:
    """Interface of the vector indexes: cosine similarity search keyed by track id.

    Parameters
    ----------
    dim : int
        Dimension ``d`` of the vectors.
    model : str
        Card name of the model the vectors come from.
    revision : int
        Library revision the content corresponds to.
    library_id : str
        :attr:`deejai.engine.library.Library.library_id` of the source library.
    checksum : str
        :func:`vectors_checksum` of the SQLite vectors the content was built from ("" when
        unknown: :func:`open_index` then rebuilds the index rather than trust it).
    """

    kind = "base"

    def __init__(self, dim: int, *, model: str = "", revision: int = 0, library_id: str = "",
                 checksum: str = "") -> None:
        self.dim = int(dim)
        self.model = model
        self.revision = int(revision)
        self.library_id = library_id
        self.checksum = checksum

    # -- interface
    @property
    def ntotal(self) -> int:
        """Number of vectors in the index."""
        raise NotImplementedError

    def ids(self) -> np.ndarray:
        """Track ids in the index (int64, shape (ntotal,), any order)."""
        raise NotImplementedError

    def add(self, ids: Any, vectors: Any) -> None:
        """Add (or replace) vectors.

        Parameters
        ----------
        ids : array_like of int, shape (n,)
            Track ids; an id already present is replaced.
        vectors : array_like of float, shape (n, d)
            Normalised to unit length before they are stored.
        """
        raise NotImplementedError

    def remove(self, ids: Any) -> int:
        """Remove the vectors of ``ids`` (unknown ids are ignored); returns how many went."""
        raise NotImplementedError

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most similar vectors to each query.

        Parameters
        ----------
        queries : array_like of float, shape (m, d) or (d,)
            Normalised to unit length first, so scores are cosine similarities.
        k : int

        Returns
        -------
        scores : np.ndarray, float32, shape (m, k)
            Cosine similarities, best first; ``-inf`` where fewer than ``k`` vectors exist.
        ids : np.ndarray, int64, shape (m, k)
            Track ids, ``-1`` where fewer than ``k`` vectors exist.
        """
        raise NotImplementedError

    def vectors_of(self, ids: Any) -> np.ndarray:
        """Stored (unit) vectors of ``ids``, float32 (n, d); ``KeyError`` for an unknown id."""
        raise NotImplementedError

    def content(self, rows: int = _CHECK_ROWS) -> Any:
        """The stored vectors in chunks: yields ``(ids, vectors)`` (int64 (m,), float32
        (m, d)) of at most ``rows`` vectors each, in storage order."""
        raise NotImplementedError

    def _payload(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @classmethod
    def _from_payload(cls, meta: dict[str, Any], data: Any) -> "VectorIndex":
        raise NotImplementedError

    # -- shared
    @property
    def meta(self) -> dict[str, Any]:
        """``{kind, model, dim, revision, library_id, ntotal, checksum, format}``."""
        return {
            "kind": self.kind,
            "model": self.model,
            "dim": self.dim,
            "revision": self.revision,
            "library_id": self.library_id,
            "ntotal": self.ntotal,
            "checksum": self.checksum,
            "format": _FORMAT,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the index and its metadata to one ``.npz`` file, atomically.

        The file is written beside ``path`` under a temporary name and renamed over it, so a
        reader never sees half a file.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"meta": np.array(json.dumps(self.meta)), **self._payload()}
        with atomic_file(path, private=True) as fh:  # 0600, as the library itself
            np.savez(fh, **arrays)
        return path

    @staticmethod
    def load(path: str | os.PathLike) -> "VectorIndex":
        """Read an index written by :meth:`save` (see :func:`load_index`)."""
        return load_index(path)

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(kind={self.kind!r}, model={self.model!r}, dim={self.dim}, "
                f"ntotal={self.ntotal}, revision={self.revision})")


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    m, have = ids.shape
    if have >= k:
        return scores[:, :k], ids[:, :k]
    out_s = np.full((m, k), -np.inf, dtype=np.float32)
    out_i = np.full((m, k), -1, dtype=np.int64)
    out_s[:, :have] = scores
    out_i[:, :have] = ids
    return out_s, out_i


class NumpyIndex(VectorIndex):
    """Exact cosine search with NumPy; same interface as :class:`FaissIndex`.

    Search costs one ``(m, d) @ (d, n)`` matrix product and a partial sort per query batch.
    """

    kind = "numpy"

    def __init__(self, dim: int, **meta: Any) -> None:
        super().__init__(dim, **meta)
        self._ids = np.zeros(0, dtype=np.int64)
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)

    @property
    def ntotal(self) -> int:
        return int(self._ids.shape[0])

    def ids(self) -> np.ndarray:
        return self._ids.copy()

    def add(self, ids: Any, vectors: Any) -> None:
        ids, vecs = _batch(ids, vectors, self.dim)
        self.remove(ids)
        self._ids = np.concatenate([self._ids, ids])
        self._vectors = np.concatenate([self._vectors, vecs.reshape(len(ids), self.dim)])

    def remove(self, ids: Any) -> int:
        drop = np.isin(self._ids, _ids(ids))
        n = int(drop.sum())
        if n:
            self._ids = self._ids[~drop]
            self._vectors = self._vectors[~drop]
        return n

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _normalise(queries, self.dim)
        k = int(k)
        m, n = q.shape[0], self.ntotal
        if k <= 0:
            return np.zeros((m, 0), np.float32), np.zeros((m, 0), np.int64)
        if n == 0 or m == 0:
            return _pad(np.zeros((m, 0), np.float32), np.zeros((m, 0), np.int64), k)
        sims = q @ self._vectors.T
        kk = min(k, n)
        if kk < n:
            part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        else:
            part = np.broadcast_to(np.arange(n), (m, n))
        part_scores = np.take_along_axis(sims, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        rows = np.take_along_axis(part, order, axis=1)
        scores = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
        return _pad(scores, self._ids[rows], k)

    def vectors_of(self, ids: Any) -> np.ndarray:
        pos = {int(i): r for r, i in enumerate(self._ids)}
        return self._vectors[[pos[int(i)] for i in _ids(ids)]]

    def content(self, rows: int = _CHECK_ROWS) -> Any:
        for i in range(0, self.ntotal, rows):
            yield self._ids[i:i + rows], self._vectors[i:i + rows]

    def _payload(self) -> dict[str, np.ndarray]:
        return {"ids": self._ids, "vectors": self._vectors}

    @classmethod
    def _from_payload(cls, meta: dict[str, Any], data: Any) -> "NumpyIndex":
        idx = cls(meta["dim"], model=meta["model"], revision=meta["revision"],
                  library_id=meta.get("library_id", ""), checksum=meta.get("checksum", ""))
        ids = np.asarray(data["ids"], dtype=np.int64)
        vectors = np.asarray(data["vectors"], dtype=np.float32)
        if ids.ndim != 1 or vectors.ndim != 2 or vectors.shape != (len(ids), idx.dim):
            raise ValueError(f"the payload holds {vectors.shape} vectors for {ids.shape} ids, "
                             f"the metadata says dimension {idx.dim}")
        idx._ids, idx._vectors = ids, vectors
        return idx


class FaissIndex(VectorIndex):
    """FAISS inner-product index on unit vectors, ids mapped with ``IndexIDMap2``.

    Parameters
    ----------
    dim : int
    structure : {"auto", "flat", "hnsw"}
        "auto" picks "flat" below :data:`HNSW_THRESHOLD` vectors and "hnsw" from there on,
        when the index is (re)built with :meth:`build`.
    **meta
        ``model``, ``revision``, ``library_id`` (see :class:`VectorIndex`).

    Raises
    ------
    ImportError
        When faiss is not installed (use :class:`NumpyIndex`).
    """

    def __init__(self, dim: int, structure: str = "flat", **meta: Any) -> None:
        super().__init__(dim, **meta)
        if structure not in ("flat", "hnsw"):
            raise ValueError(f"unknown FAISS index structure {structure!r}")
        self.structure = structure
        self._index = self._new(structure)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return f"faiss-{self.structure}"

    def _new(self, structure: str) -> Any:
        import faiss

        if structure == "flat":
            base = faiss.IndexFlatIP(self.dim)
        else:
            base = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            base.hnsw.efSearch = HNSW_EF_SEARCH
        return faiss.IndexIDMap2(base)

    @classmethod
    def build(cls, ids: Any, vectors: Any, *, structure: str = "auto", dim: int | None = None,
              **meta: Any) -> "FaissIndex":
        """A new index holding ``vectors`` (float, (n, d)) under ``ids`` (int, (n,))."""
        vectors = np.asarray(vectors, dtype=np.float32)
        d = int(dim if dim is not None else vectors.shape[1])
        if structure == "auto":
            structure = "hnsw" if len(vectors) >= HNSW_THRESHOLD else "flat"
        idx = cls(d, structure, **meta)
        if len(vectors):
            idx.add(ids, vectors)
        return idx

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> np.ndarray:
        import faiss

        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def _all_vectors(self) -> np.ndarray:
        n = self.ntotal
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        return self._index.index.reconstruct_n(0, n)

    def add(self, ids: Any, vectors: Any) -> None:
        ids, vecs = _batch(ids, vectors, self.dim)
        if not len(ids):
            return
        vecs = vecs.reshape(len(ids), self.dim)
        if self.ntotal:
            if self.structure == "flat":
                self.remove(ids)
            else:
                present = self.ids()
                replaced = np.isin(present, ids)
                if replaced.any():
                    # HNSW cannot delete: one rebuild with the kept and the new vectors
                    keep_vecs = self._all_vectors()[~replaced]
                    self._index = self._new(self.structure)
                    if (~replaced).any():
                        self._index.add_with_ids(np.ascontiguousarray(keep_vecs), present[~replaced])
        self._index.add_with_ids(vecs, ids)

    def remove(self, ids: Any) -> int:
        ids = _ids(ids)
        if not len(ids) or not self.ntotal:
            return 0
        present = self.ids()
        drop = np.isin(present, ids)
        n = int(drop.sum())
        if not n:
            return 0
        if self.structure == "flat":
            import faiss

            self._index.remove_ids(faiss.IDSelectorBatch(ids))
        else:
            # HNSW graphs cannot delete: rebuild from the vectors they store
            keep_vecs = self._all_vectors()[~drop]
            keep_ids = present[~drop]
            self._index = self._new(self.structure)
            if len(keep_ids):
                self._index.add_with_ids(np.ascontiguousarray(keep_vecs), keep_ids)
        return n

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = _normalise(queries, self.dim)
        k = int(k)
        m = q.shape[0]
        if k <= 0:
            return np.zeros((m, 0), np.float32), np.zeros((m, 0), np.int64)
        if self.ntotal == 0 or m == 0:
            return _pad(np.zeros((m, 0), np.float32), np.zeros((m, 0), np.int64), k)
        scores, ids = self._index.search(q, k)
        scores = scores.astype(np.float32)
        ids = ids.astype(np.int64)
        scores[ids < 0] = -np.inf
        return scores, ids

    def content(self, rows: int = _CHECK_ROWS) -> Any:
        import faiss

        n = self.ntotal
        if not n:
            return
        ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
        for i in range(0, n, rows):
            m = min(rows, n - i)
            yield ids[i:i + m], self._index.index.reconstruct_n(i, m)

    def vectors_of(self, ids: Any) -> np.ndarray:
        out = np.empty((len(_ids(ids)), self.dim), np.float32)
        for r, i in enumerate(_ids(ids)):
            try:
                out[r] = self._index.reconstruct(int(i))
            except RuntimeError:
                raise KeyError(int(i)) from None
        return out

    def _payload(self) -> dict[str, np.ndarray]:
        import faiss

        return {"faiss": faiss.serialize_index(self._index)}

    @classmethod
    def _from_payload(cls, meta: dict[str, Any], data: Any) -> "FaissIndex":
        import faiss

        idx = cls(meta["dim"], meta["kind"].split("-", 1)[1], model=meta["model"],
                  revision=meta["revision"], library_id=meta.get("library_id", ""),
                  checksum=meta.get("checksum", ""))
        index = faiss.deserialize_index(np.asarray(data["faiss"], dtype=np.uint8))
        if not isinstance(index, faiss.IndexIDMap2):
            raise ValueError(f"expected an IndexIDMap2, found {type(index).__name__}")
        if int(index.d) != idx.dim:
            raise ValueError(f"the FAISS payload has dimension {index.d}, "
                             f"the metadata says {idx.dim}")
        if int(index.id_map.size()) != int(index.ntotal):
            raise ValueError(f"the FAISS payload maps {index.id_map.size()} ids "
                             f"for {index.ntotal} vectors")
        idx._index = index
        if idx.structure == "hnsw":
            faiss.downcast_index(idx._index.index).hnsw.efSearch = HNSW_EF_SEARCH
        return idx


def load_index(path: str | os.PathLike) -> VectorIndex:
    """Read an index file written by :meth:`VectorIndex.save`.

    Raises
    ------
    LibraryError
        When the file is missing, damaged, of an unknown format, or needs FAISS and FAISS is
        not installed.
    """
    try:
        with np.load(str(path), allow_pickle=False) as data:
            meta = _read_meta(data)
            if meta.get("format") != _FORMAT:
                raise LibraryError(f"{path}: unknown index format {meta.get('format')!r}")
            kind = meta["kind"]
            if kind == "numpy":
                index: VectorIndex = NumpyIndex._from_payload(meta, data)
            elif kind in ("faiss-flat", "faiss-hnsw"):
                index = FaissIndex._from_payload(meta, data)
            else:
                raise LibraryError(f"{path}: unknown index kind {kind!r}")
    except LibraryError:
        raise
    except ImportError:
        raise LibraryError(f"{path}: this index needs faiss, which is not installed") from None
    except Exception as exc:  # noqa: BLE001 - a cache: any damage (zip, JSON, FAISS) is one line
        reason = str(exc) or type(exc).__name__
        raise LibraryError(f"{path}: cannot read the vector index ({reason})") from None
    if index.ntotal != meta.get("ntotal"):
        raise LibraryError(f"{path}: the vector index holds {index.ntotal} vectors, "
                           f"its metadata says {meta.get('ntotal')}")
    return index


def _read_meta(data: Any) -> dict[str, Any]:
    meta = json.loads(str(data["meta"]))
    if not isinstance(meta, dict):
        raise ValueError("the metadata is not an object")
    for key, kind in (("dim", int), ("revision", int), ("ntotal", int), ("kind", str),
                      ("model", str)):
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise ValueError(f"the metadata has no valid {key!r}")
    if meta["dim"] < 0 or meta["ntotal"] < 0:
        raise ValueError("the metadata has a negative size")
    return meta


def sidecar_path(library: Any, model: str) -> Path:
    """Where :func:`open_index` keeps the index of ``model``: ``<db stem>.<model>.index.npz``
    beside the library database."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", model)
    db = Path(library.path)
    return db.with_name(f"{db.stem}.{safe}.index.npz")


def sidecar_info(library: Any, model: str) -> dict[str, Any] | None:
    """Metadata of ``model``'s index sidecar without loading the index (for ``status``).

    Returns
    -------
    dict or None
        The sidecar's ``meta`` (kind, model, dim, revision, library_id, ntotal) plus ``path``
        and ``fresh`` (it matches the library's id and current revision); None when there is
        no sidecar; ``{"path", "fresh": False, "damaged": reason}`` when it cannot be read
        (the next playlist or scan rebuilds it). Never raises.
    """
    path = sidecar_path(library, model)
    if not path.exists():
        return None
    try:
        with np.load(str(path), allow_pickle=False) as data:
            meta = _read_meta(data)
    except Exception as exc:  # noqa: BLE001 - a damaged cache is reported, never raised
        return {"path": str(path), "fresh": False, "damaged": str(exc) or type(exc).__name__}
    meta["path"] = str(path)
    meta["fresh"] = (meta.get("library_id") == library.library_id
                     and meta.get("revision") == library.revision)
    return meta


def _new_index(backend: str, ids: np.ndarray, vectors: np.ndarray, dim: int, **meta: Any) -> VectorIndex:
    if backend == "faiss" and dim > 0:
        return FaissIndex.build(ids, vectors, structure="auto", dim=dim, **meta)
    idx = NumpyIndex(dim, **meta)
    if len(ids):
        idx.add(ids, vectors)
    return idx


def _backend_of(index: VectorIndex) -> str:
    return "faiss" if isinstance(index, FaissIndex) else "numpy"


def open_index(library: Any, model: str, prefer: str = "faiss", *, save: bool = True) -> VectorIndex:
    """The vector index of ``model``'s vectors in ``library``, guaranteed current and checked.

    Loads the sidecar file (:func:`sidecar_path`). When it is behind the library revision it
    is brought up to date: ids no longer in the library are removed and vectors written after
    its revision are added (a flat index that has grown past :data:`HNSW_THRESHOLD` is
    rebuilt as HNSW). Then it is checked against SQLite: the same ids, dimension and count,
    the checksum of SQLite's vectors (:func:`vectors_checksum`, when the sidecar was built at
    the current revision) and the vectors themselves (each stored vector equals SQLite's,
    normalised). A sidecar that is missing, cannot be read (truncated, 0 bytes, not a zip, a
    damaged FAISS payload), is from another library or model, has another dimension, or fails
    the check is rebuilt from SQLite — with one warning line, except when it is simply missing
    or of the other backend — and written back atomically. Every read happens inside one
    SQLite read transaction, so the result matches exactly one library revision, which the
    returned index records in ``revision``.

    Parameters
    ----------
    library : deejai.engine.library.Library
    model : str
        Card name, e.g. ``"msd-musicnn"``.
    prefer : {"faiss", "numpy"}
        Backend; "faiss" falls back to NumPy when faiss cannot be imported.
    save : bool
        Write the updated index back to the sidecar (failures to write are logged, not raised).

    Returns
    -------
    VectorIndex

    Notes
    -----
    The check reads every vector of ``model`` from SQLite once (n x d float32: 80 MB for
    100,000 tracks of 200-d) and compares them in chunks of ``_CHECK_ROWS`` rows. At 100,000
    tracks it took 1.4 s and about 190 MB at its peak, against 43-82 s to build the HNSW
    index (``benchmarks/integrity.py``, a shared 2-core machine); the Engine opens the index
    once per library revision.
    """
    if prefer not in ("faiss", "numpy", "auto"):
        raise ValueError(f"unknown index backend {prefer!r} (use 'faiss' or 'numpy')")
    backend = "faiss" if prefer in ("faiss", "auto") and faiss_available() else "numpy"
    path = sidecar_path(library, model)
    changed = False
    problem: str | None = None  # why the sidecar was not used (warned about once)
    with library.snapshot():
        revision = library.revision
        library_id = library.library_id
        db_ids, db_vecs = library.vectors(model)
        dim = int(db_vecs.shape[1]) if len(db_ids) else 0
        checksum = vectors_checksum(db_ids, db_vecs)
        index: VectorIndex | None = None
        if path.exists():
            try:
                index = load_index(path)
            except LibraryError as exc:
                problem = str(exc)
        if index is not None:
            if _backend_of(index) != backend:
                index = None  # the other backend was asked for: not damage
            else:
                problem = _mismatch(index, model=model, library_id=library_id,
                                    revision=revision, dim=dim, checksum=checksum)
                if problem is not None:
                    problem = f"{path}: {problem}"
                    index = None
        if index is not None and index.revision < revision:
            changed = True
            try:
                gone = np.setdiff1d(index.ids(), db_ids)
                new_ids, new_vecs = library.vectors(model, since_revision=index.revision)
                if isinstance(index, FaissIndex) and index.structure == "hnsw" and (
                    len(gone) or np.isin(new_ids, index.ids()).any()
                ):
                    # removing from HNSW means rebuilding it: rebuild once, from SQLite
                    raise ValueError("HNSW index needs removals")
                index.remove(gone)
                if len(new_ids):
                    if new_vecs.shape[1] != index.dim:
                        raise ValueError("dimension changed")
                    index.add(new_ids, new_vecs)
                wrong_structure = (
                    isinstance(index, FaissIndex)
                    and index.structure == "flat"
                    and index.ntotal >= HNSW_THRESHOLD
                )
                if wrong_structure:
                    index = None
            except ValueError as exc:
                log.info("index update failed (%s); rebuilding", exc)
                index = None
        if index is not None:
            reason = _content_mismatch(index, db_ids, db_vecs)
            if reason is not None:
                problem = f"{path}: {reason}"
                index = None
        if index is None:
            changed = True
            index = _new_index(backend, db_ids, db_vecs, dim, model=model, revision=revision,
                               library_id=library_id)
        index.revision = revision
        index.checksum = checksum
    if problem is not None:
        log.warning("%s; rebuilt it from the library", problem)
    if changed and save:
        try:
            index.save(path)
        except OSError as exc:
            log.warning("cannot save the vector index to %s: %s", path, exc)
    elif save:
        from deejai.engine._fs import PRIVATE_FILE_MODE, tighten

        tighten(path, PRIVATE_FILE_MODE)
    return index


def _mismatch(index: VectorIndex, *, model: str, library_id: str, revision: int, dim: int,
              checksum: str) -> str | None:
    """Why a loaded sidecar cannot be this library's index (None: it may be, pending the
    content check)."""
    if index.model != model:
        return f"the vector index is of the model {index.model!r}, not {model!r}"
    if index.library_id != library_id:
        return "the vector index belongs to another library"
    if index.revision > revision:
        return (f"the vector index is of library revision {index.revision}, "
                f"newer than the library's {revision}")
    if index.ntotal and dim and index.dim != dim:
        return f"the vector index has dimension {index.dim}, the library's vectors {dim}"
    if index.revision == revision and index.checksum != checksum:
        return "the vector index was not built from the library's vectors (checksum differs)"
    return None


def _content_mismatch(index: VectorIndex, ids: np.ndarray, vectors: np.ndarray) -> str | None:
    """Compare what ``index`` holds with SQLite's ``ids`` (sorted) and ``vectors``; None when
    they match, else the reason."""
    if index.ntotal != len(ids):
        return f"the vector index holds {index.ntotal} vectors, the library {len(ids)}"
    if not len(ids):
        return None
    if index.dim != vectors.shape[1]:
        return f"the vector index has dimension {index.dim}, the library's vectors {vectors.shape[1]}"
    if not np.array_equal(np.sort(index.ids()), ids):
        return "the vector index holds other track ids than the library"
    for chunk_ids, chunk_vecs in index.content():
        rows = np.searchsorted(ids, chunk_ids)
        expected = _normalise(vectors[rows], index.dim)
        if not np.allclose(chunk_vecs, expected, atol=_CHECK_ATOL, rtol=0.0):
            return "the vector index holds other vectors than the library"
    return None
