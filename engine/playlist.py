"""Playlists as walks through the embedding space: radio and join-the-dots.

Pure functions over a :class:`~deejai.engine.catalogue.Catalogue` (vectors and the metadata the
constraints need) and a vector index (anything with ``search(queries, k) -> (scores, ids)``,
e.g. :class:`deejai.engine.index.FaissIndex`, whose ids are track ids). They return track ids and
do no I/O.

All distances are cosine distances ``1 - cos(u, v)`` between L2-normalised vectors, in
``[0, 2]``.

:func:`radio`
    Deej-A.I.'s "make playlist" (teticio, ``Deej-A.I.`` ``make_playlist``): starting from the
    seeds, the next track is the nearest unused track to the sum of the last ``lookback``
    tracks' vectors; with noise, drawn among the nearest (see "Noise" below).
:func:`join`
    Join the dots. Deej-A.I., AudioMuse-AI and lms interpolate points between the ends and snap
    each point greedily to the nearest free track. deejai interpolates on the sphere (slerp),
    takes ``K`` candidates near every point from the index, and picks the whole path at once
    with a beam search over the candidate lattice that minimises

    .. math::

        \\sum_i \\left(d_i + \\gamma d_i^2\\right) + \\lambda \\sum_i (1 - \\cos(x_i, p_i))
        + \\mu \\sum_i \\max(0, \\cos(x_{i-1}, b_i) - \\cos(x_i, b_i))

    where :math:`d_i` is the cosine distance of step :math:`i` (from the outro of the previous
    track to the intro of the next one when ``transitions=True``), :math:`p_i` the interpolated
    point of position :math:`i` and :math:`b_i` the waypoint the segment is heading for (the
    last term charges a step that moves away from it). :math:`\\gamma` =
    :data:`STEP_SQUARE_WEIGHT`, :math:`\\lambda` = :data:`POINT_WEIGHT`, :math:`\\mu` =
    :data:`PROGRESS_WEIGHT`. Hard constraints (no track twice, no near-duplicates, no same
    artist twice in a row, a maximum duration, excluded tracks) are checked against each beam
    state's own path, so they hold exactly on the result; when the beam cannot fill a segment,
    the number of candidates and the beam width double until every track is a candidate, and
    only then :class:`~deejai.engine.errors.PlaylistError` is raised.

    The cosine distance is ``1 - cos θ ≈ θ²/2``, and the squared term makes the step cost grow
    faster still, so the search prefers many even steps to one big jump: the longest step of a
    deejai path is usually shorter than a greedy path's (``benchmarks/paths.py`` measures it).
    The weights were chosen with that benchmark on the 88-track test corpus and on synthetic
    clustered libraries.

Noise
    ``noise`` is a *temperature* over the choices, in units of the typical step of the
    playlist itself (the mean step of the noise-0 path for a join, the best candidate's
    distance for a radio step), so ``--noise 0.2`` means the same on a tight library of 80
    tracks and on 100,000 tracks of every genre: choices that cost about a fifth of a step
    more than the best become likely. It is applied with the Gumbel-max trick, as
    perturb-and-MAP (Papandreou & Yuille, "Perturb-and-MAP random fields: using discrete
    optimization to learn and sample from energy models", ICCV 2011): every candidate's cost
    gets ``- T * g``, ``g ~ Gumbel(0, 1)``, and the search picks the cheapest as before. For
    one choice (a radio step) that draws candidate ``j`` with probability proportional to
    ``exp(-d_j / T)``. A join also keeps a quality budget: a noisy path whose mean step is
    more than ``1 + noise / 2`` times the noise-0 path's is drawn again with half the
    temperature, and a draw that found the noise-0 path again is drawn again with 1.5 times
    the temperature (at most :data:`NOISE_ATTEMPTS` draws, then the noise-0 path), so noise
    0.2 never makes the steps more than 10% longer and seldom repeats the best path. 0 is deterministic; 0.1-0.5 varies a
    playlist; 1 and more wander. ``benchmarks/noise.py`` measures distinct paths per seed and
    their mean step against noise 0.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from deejai.engine.catalogue import Catalogue, l2_normalise
from deejai.engine.errors import (
    LibraryEmptyError,
    PlaylistError,
    TrackNotFoundError,
    UnknownTagError,
)

__all__ = [
    "Constraints",
    "SearchIndex",
    "radio",
    "join",
    "tag_point",
    "tag_track",
    "step_distances",
    "slerp",
    "DEFAULT_NEAR_DUPLICATE_EPS",
    "DEFAULT_K_CANDIDATES",
]

#: Two tracks whose cosine similarity exceeds ``1 - eps`` count as the same recording (e.g. a
#: re-encoded copy). 1e-3 is an angle of about 2.6 degrees; in musicnn's space the two closest
#: different tracks of the 88-track test corpus are 0.0175 apart (median nearest neighbour
#: 0.075), so only copies fall under it.
DEFAULT_NEAR_DUPLICATE_EPS = 1e-3

#: Candidates taken from the index for each interpolated point before any widening.
DEFAULT_K_CANDIDATES = 48

#: Weight :math:`\\lambda` of the distance to the interpolated point.
POINT_WEIGHT = 1.0
#: Weight of the distance to a tag waypoint's point (it stands for the waypoint itself).
TAG_POINT_WEIGHT = 2.0
#: Weight :math:`\\mu` of the penalty for a step that moves away from the next waypoint.
PROGRESS_WEIGHT = 2.0
#: Weight of the squared step distance, which makes one long jump cost more than two short ones.
STEP_SQUARE_WEIGHT = 3.0
#: Beam width and states kept per candidate track before widening.
BEAM_WIDTH = 64
STATES_PER_TRACK = 3
#: Widening stops at this many candidates per point and this beam width.
MAX_K_CANDIDATES = 4096
MAX_BEAM_WIDTH = 2048


class SearchIndex(Protocol):
    """What the playlist functions need from a vector index."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``queries`` float32 (m, d) -> scores (m, k) and track ids int64 (m, k), -1 padded."""
        ...  # pragma: no cover


@dataclass(frozen=True)
class Constraints:
    """Hard constraints every track a playlist function *chooses* must meet.

    Waypoints and seeds are what the user asked for: they are never dropped for a constraint
    (they are however never repeated, and chosen tracks must not duplicate them).

    Attributes
    ----------
    no_repeat_artist : bool
        Never the same artist twice in a row (compared case-insensitively; an unknown artist
        ``""`` never matches).
    max_duration_s : float or None
        Leave out tracks longer than this many seconds.
    near_duplicate_eps : float
        Two tracks with equal ``audio_hash`` or cosine similarity above ``1 - eps`` are the
        same recording, and only one of them may appear (default
        :data:`DEFAULT_NEAR_DUPLICATE_EPS`).
    exclude : tuple of int
        Track ids never to choose.
    """

    no_repeat_artist: bool = False
    max_duration_s: float | None = None
    near_duplicate_eps: float = DEFAULT_NEAR_DUPLICATE_EPS
    exclude: Sequence[int] = field(default_factory=tuple)


# ---------------------------------------------------------------------------- helpers


def _single_threaded(func: Any) -> Any:
    """Run ``func`` with BLAS and OpenMP (FAISS) limited to one thread (threadpoolctl).

    A playlist makes batches of 1-10 queries and small matrix products, where starting and
    waking thread pools costs more than it saves (on a 2-core machine a join took 3-8x longer
    with the default thread pools: ``benchmarks/latency.py``); a daemon serving several
    requests at once is better off with one thread per request anyway. Without threadpoolctl
    the function runs as it is.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - e.g. a phone build without it
            return func(*args, **kwargs)
        with threadpool_limits(limits=1):
            return func(*args, **kwargs)

    return wrapper



def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray | Sequence[float]) -> np.ndarray:
    """Spherical linear interpolation between unit vectors (Shoemake, 1985).

    Parameters
    ----------
    a, b : np.ndarray, float, shape (d,)
        End points; normalised here.
    t : array-like of float, shape (m,)
        Fractions in ``[0, 1]``; 0 gives ``a``, 1 gives ``b``.

    Returns
    -------
    np.ndarray, float32, shape (m, d)
        Unit vectors on the great circle from ``a`` to ``b``. When ``a`` and ``b`` are (almost)
        equal the points are normalised linear interpolations; when they are antipodal, the
        arc runs through a fixed direction orthogonal to ``a``.
    """
    a = l2_normalise(np.asarray(a, np.float64)).astype(np.float64)
    b = l2_normalise(np.asarray(b, np.float64)).astype(np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(-1, 1)
    cos = float(np.clip(a @ b, -1.0, 1.0))
    if cos > 1.0 - 1e-9:
        return l2_normalise((1 - t) * a + t * b)
    if cos < -1.0 + 1e-9:
        # antipodal: any great circle works; go through the axis least aligned with a
        axis = np.zeros_like(a)
        axis[int(np.argmin(np.abs(a)))] = 1.0
        mid = l2_normalise(axis - (axis @ a) * a).astype(np.float64)
        angle = np.pi * t
        return l2_normalise(np.cos(angle) * a + np.sin(angle) * mid)
    omega = math.acos(cos)
    s = math.sin(omega)
    return l2_normalise(np.sin((1 - t) * omega) / s * a + np.sin(t * omega) / s * b)


#: Largest Gumbel draw a join uses (P(g > 3) is about 5%); see :func:`join`.
GUMBEL_CLIP = 3.0
#: Noisy draws a join tries before it falls back to the noise-0 path: a draw over the step
#: budget is tried again with half the temperature, a draw that gave the noise-0 path again
#: with 1.5 times the temperature.
NOISE_ATTEMPTS = 6


def _mean_step(catalogue: Catalogue, rows: Sequence[int], transitions: bool) -> float:
    """Mean cosine distance of a path's steps (rows), as :func:`step_distances` measures."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) < 2:
        return 0.0
    if transitions and catalogue.intro is not None and catalogue.outro is not None:
        a, b = catalogue.outro[rows[:-1]], catalogue.intro[rows[1:]]
    else:
        a, b = catalogue.vectors[rows[:-1]], catalogue.vectors[rows[1:]]
    d = 1.0 - np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    return float(np.maximum(d, 0.0).mean())


def _check_library(catalogue: Catalogue) -> None:
    if len(catalogue) == 0:
        raise LibraryEmptyError()


def _row(catalogue: Catalogue, track_id: Any) -> int:
    try:
        return catalogue.row(int(track_id))
    except (KeyError, TypeError, ValueError):
        raise TrackNotFoundError(
            f"track {track_id!r} is not in the library (see `deejai tracks`)"
        ) from None


def _artist_codes(catalogue: Catalogue, rows: np.ndarray) -> np.ndarray:
    """Integer code per row's artist (case-folded); unknown artists get unique negative codes."""
    codes = np.empty(len(rows), dtype=np.int64)
    seen: dict[str, int] = {}
    for j, r in enumerate(rows):
        name = str(catalogue.artist[int(r)] or "").strip().casefold()
        codes[j] = seen.setdefault(name, len(seen)) if name else -1 - j
    return codes


def _hash_codes(catalogue: Catalogue, rows: np.ndarray) -> np.ndarray:
    """Integer code per row's audio hash; an empty hash gets a unique negative code."""
    codes = np.empty(len(rows), dtype=np.int64)
    seen: dict[str, int] = {}
    for j, r in enumerate(rows):
        h = str(catalogue.audio_hash[int(r)] or "")
        codes[j] = seen.setdefault(h, len(seen)) if h else -1 - j
    return codes


def _step_cost(d: np.ndarray) -> np.ndarray:
    """Cost of steps of cosine distance ``d``: ``d + STEP_SQUARE_WEIGHT * d**2``."""
    return d + STEP_SQUARE_WEIGHT * d * d


def _duplicate_groups(vu: np.ndarray, hashes: np.ndarray, limit: float,
                      block: int = 1024) -> np.ndarray:
    """Group ids of rows that are copies of each other (same hash or cosine above ``limit``).

    Pairs are joined with union-find, so groups are the connected components of the
    "near-duplicate" relation (a chain a~b~c puts a and c together too: conservative). The
    cosine pairs come from a blocked ``vu @ vu.T`` that never holds more than ``block`` rows.

    Returns
    -------
    np.ndarray, int64, shape (U,)
    """
    n = len(vu)
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[int, int] = {}
    for j, h in enumerate(hashes.tolist()):
        if h >= 0:
            if h in first:
                union(first[h], j)
            else:
                first[h] = j
    for s in range(0, n, block):
        sims = vu[s:s + block] @ vu.T
        ii, jj = np.nonzero(sims > limit)
        for a, b in zip((ii + s).tolist(), jj.tolist()):
            if a < b:
                union(a, b)
    return np.fromiter((find(j) for j in range(n)), dtype=np.int64, count=n)


def _static_ok(catalogue: Catalogue, rows: np.ndarray, cons: Constraints,
               excluded_rows: set[int]) -> np.ndarray:
    """Boolean mask of rows that pass the per-track constraints (duration, exclude)."""
    ok = np.ones(len(rows), dtype=bool)
    if cons.max_duration_s is not None:
        dur = np.asarray(catalogue.duration_s, dtype=np.float32)[rows]
        ok &= ~(dur > float(cons.max_duration_s))
    if excluded_rows:
        ok &= ~np.isin(rows, np.fromiter(excluded_rows, dtype=np.int64))
    return ok


def _count_usable(catalogue: Catalogue, cons: Constraints, taken: set[int]) -> int:
    """How many rows pass the per-track constraints, leaving out the rows in ``taken``."""
    if cons.max_duration_s is None:
        return len(catalogue) - len(taken)
    ok = ~(np.asarray(catalogue.duration_s, dtype=np.float32) > float(cons.max_duration_s))
    if taken:
        ok[np.fromiter(taken, dtype=np.int64)] = False
    return int(np.count_nonzero(ok))


def _excluded_rows(catalogue: Catalogue, cons: Constraints) -> set[int]:
    out = set()
    for tid in cons.exclude:
        r = catalogue._row_of.get(int(tid))
        if r is not None:
            out.add(r)
    return out


def _search_rows(catalogue: Catalogue, index: SearchIndex, queries: np.ndarray,
                 k: int) -> list[np.ndarray]:
    """Rows of the ``k`` nearest tracks to each query, nearest first (unknown ids dropped).

    When ``k`` covers the whole catalogue the rows are ranked exactly with NumPy instead.
    """
    n = len(catalogue)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if k >= n:
        sims = queries @ catalogue.vectors.T
        return [np.argsort(-s, kind="stable").astype(np.int64) for s in sims]
    _, ids = index.search(queries, int(k))
    row_of = catalogue._row_of
    out = []
    for line in np.asarray(ids):
        rows = [row_of.get(int(i), -1) for i in line if i >= 0]
        out.append(np.asarray([r for r in rows if r >= 0], dtype=np.int64))
    return out


def _waypoint_rows(catalogue: Catalogue, waypoints: Sequence[Any]) -> list[int | None]:
    rows: list[int | None] = []
    for w in waypoints:
        if isinstance(w, np.ndarray) and w.ndim >= 1:
            if w.shape != (catalogue.dim,):
                raise PlaylistError(
                    f"a vector waypoint must have shape ({catalogue.dim},), not {w.shape}"
                )
            rows.append(None)
        else:
            rows.append(_row(catalogue, w))
    return rows


# ---------------------------------------------------------------------------- radio


@_single_threaded
def radio(
    catalogue: Catalogue,
    index: SearchIndex,
    seeds: Sequence[int],
    n: int,
    *,
    lookback: int = 3,
    noise: float = 0.0,
    seed: int | None = None,
    constraints: Constraints | None = None,
) -> list[int]:
    """Deej-A.I.'s "make playlist": keep going from the seeds to the nearest unused track.

    The next track is the nearest track (cosine) to ``q = sum of the vectors of the last
    lookback tracks``, skipping tracks already in the playlist, near-duplicates of them, and
    tracks that break ``constraints``. With ``noise > 0`` the next track is drawn instead
    among the eligible tracks of the nearest ``k`` (at least 16) with probability
    proportional to ``exp(-(d - d_0) / T)``, ``d`` the cosine distance to ``q``, ``d_0`` the
    nearest eligible track's and ``T = noise * d_0`` (the Gumbel-max trick; "Noise" in the
    module docstring).

    Parameters
    ----------
    catalogue : Catalogue
    index : SearchIndex
        Vector index over the catalogue's vectors; its ids are track ids.
    seeds : sequence of int
        Track ids that open the playlist, in order (at least one, no id twice).
    n : int
        Length of the playlist, seeds included.
    lookback : int
        How many of the last tracks make the query (>= 1).
    noise : float
        Temperature of the choice of each next track, in units of the step to the nearest
        eligible track; 0 is deterministic.
    seed : int, optional
        Seed of the noise (``numpy.random.default_rng``); same seed, same playlist.
    constraints : Constraints, optional

    Returns
    -------
    list of int
        ``n`` track ids, the seeds first.

    Raises
    ------
    LibraryEmptyError
        The catalogue is empty.
    TrackNotFoundError
        A seed is not in the catalogue.
    PlaylistError
        Bad arguments, or the library has too few tracks that meet the constraints.
    """
    _check_library(catalogue)
    cons = constraints or Constraints()
    if not seeds:
        raise PlaylistError("radio needs at least one seed track")
    if lookback < 1:
        raise PlaylistError("lookback must be 1 or more")
    if noise < 0:
        raise PlaylistError("noise must be 0 or more")
    n = int(n)
    seed_rows = [_row(catalogue, s) for s in seeds]
    if len(set(seed_rows)) != len(seed_rows):
        raise PlaylistError("a seed track is given twice")
    if n < len(seed_rows):
        raise PlaylistError(f"n={n} is shorter than the {len(seed_rows)} seed tracks")
    rng = np.random.default_rng(seed)
    vectors = catalogue.vectors
    n_total = len(catalogue)
    excluded = _excluded_rows(catalogue, cons)
    limit = 1.0 - float(cons.near_duplicate_eps)

    path = list(seed_rows)
    used = set(path)
    used_hashes = {catalogue.audio_hash[r] for r in path if catalogue.audio_hash[r]}
    k = min(n_total, max(16, 2 * n + 8))
    while len(path) < n:
        q = vectors[path[-lookback:]].sum(axis=0, keepdims=True)
        q_unit = l2_normalise(q)[0]
        prev_artist = str(catalogue.artist[path[-1]] or "").strip().casefold()
        chosen = None
        while chosen is None:
            rows = _search_rows(catalogue, index, q, k)[0]
            rows = rows[_static_ok(catalogue, rows, cons, excluded)]
            rows = rows[~np.isin(rows, np.fromiter(used, dtype=np.int64))]
            eligible = []
            if len(rows):
                sims = vectors[rows] @ vectors[path].T  # (c, len(path))
                dup = (sims > limit).any(axis=1)
                for j, r in enumerate(rows):
                    if dup[j] or (catalogue.audio_hash[r] and catalogue.audio_hash[r] in used_hashes):
                        continue
                    if cons.no_repeat_artist and prev_artist and (
                        str(catalogue.artist[r] or "").strip().casefold() == prev_artist
                    ):
                        continue
                    eligible.append(int(r))
                    if noise == 0:
                        break
            if eligible:
                if noise == 0:
                    chosen = eligible[0]
                else:
                    el = np.asarray(eligible, dtype=np.int64)
                    d = 1.0 - vectors[el].astype(np.float64) @ q_unit.astype(np.float64)
                    temperature = float(noise) * max(float(d.min()), 1e-3)
                    chosen = int(el[int(np.argmin(d - temperature * rng.gumbel(size=len(el))))])
            if chosen is None:
                if k >= n_total:
                    raise PlaylistError(
                        f"the library has no track left that meets the constraints after "
                        f"{len(path)} of {n} tracks (library: {n_total} tracks)"
                    )
                k = min(n_total, 2 * k)
        path.append(chosen)
        used.add(chosen)
        if catalogue.audio_hash[chosen]:
            used_hashes.add(catalogue.audio_hash[chosen])
    return [int(catalogue.ids[r]) for r in path]


# ---------------------------------------------------------------------------- join


@_single_threaded
def join(
    catalogue: Catalogue,
    index: SearchIndex,
    waypoints: Sequence[int | np.ndarray],
    n_between: int,
    *,
    noise: float = 0.0,
    seed: int | None = None,
    constraints: Constraints | None = None,
    transitions: bool = False,
    k_candidates: int = DEFAULT_K_CANDIDATES,
) -> list[int]:
    """Join the dots: the smoothest path through the waypoints, chosen as a whole.

    1. Between consecutive waypoints ``a`` and ``b``, ``n_between`` points ``p_j =
       slerp(a, b, j / (n_between + 1))`` are laid on the great circle (:func:`slerp`).
    2. The ``k_candidates`` nearest tracks to every point (and to every vector waypoint) come
       from ``index`` in one batched search; tracks that break a per-track constraint or
       duplicate a track waypoint are dropped.
    3. A beam search over the lattice of candidates minimises the cost in the module
       docstring (step distances and ``STEP_SQUARE_WEIGHT`` x their squares, ``POINT_WEIGHT``
       x distance to the points, ``PROGRESS_WEIGHT`` x moving away from the next waypoint),
       keeping for each position the best
       ``STATES_PER_TRACK`` paths ending at each candidate, at most ``BEAM_WIDTH`` in all.
    4. With ``noise > 0``: after the noise-0 path, each candidate's cost at each position is
       lowered by ``T * g``, ``g ~ Gumbel(0, 1)`` clipped at :data:`GUMBEL_CLIP`, ``T = noise
       * s`` with ``s`` the noise-0 path's mean step (perturb-and-MAP), and the search runs
       again; a result whose mean step exceeds ``(1 + noise / 2) * s`` is drawn again with
       half the temperature, one equal to the noise-0 path with 1.5 times the temperature,
       at most :data:`NOISE_ATTEMPTS` times; then the noise-0 path is returned.
       Each path carries its own tracks, so "no track twice", "no near-duplicate" and "no
       artist twice in a row" are checked exactly. When no path survives a position, the
       search starts again with twice the candidates and beam width (and ``beam // 16`` states
       per candidate), up to the whole library (at most ``MAX_K_CANDIDATES``) and
       ``MAX_BEAM_WIDTH`` states.

    Parameters
    ----------
    catalogue : Catalogue
    index : SearchIndex
        Vector index over the catalogue's vectors; its ids are track ids.
    waypoints : sequence of int or np.ndarray
        Two or more waypoints: track ids, or unit vectors of shape ``(d,)`` (e.g. from
        :func:`tag_point`). A track waypoint appears as itself. A vector waypoint is a point,
        not a track: its place in the output holds the track the search picks among the tracks
        nearest to it (weighted by ``TAG_POINT_WEIGHT``), so a tag waypoint becomes a track
        strongly associated with the tag that also fits the path.
    n_between : int
        Tracks between each pair of consecutive waypoints (>= 0).
    noise : float
        Temperature of the path's choices in units of the noise-0 path's mean step ("Noise"
        in the module docstring): 0 gives the best path, 0.1-0.5 a different good path per
        ``seed`` whose mean step is at most ``1 + noise / 2`` times the best path's.
    seed : int, optional
        Seed of the noise; the same seed gives the same path.
    constraints : Constraints, optional
    transitions : bool
        Step cost from the outro vector of one track to the intro vector of the next, when the
        catalogue has both; otherwise (and for the other cost terms) the track vectors.
    k_candidates : int
        Candidates per point before widening.

    Returns
    -------
    list of int
        Exactly ``len(waypoints) + n_between * (len(waypoints) - 1)`` track ids.

    Raises
    ------
    LibraryEmptyError
        The catalogue is empty.
    TrackNotFoundError
        A waypoint id is not in the catalogue.
    PlaylistError
        Fewer than two waypoints, a track waypoint given twice, bad numbers, or no path meets
        the constraints (e.g. the library is too small); the message says which.
    """
    _check_library(catalogue)
    cons = constraints or Constraints()
    if len(waypoints) < 2:
        raise PlaylistError("join needs at least two waypoints")
    n_between = int(n_between)
    if n_between < 0:
        raise PlaylistError("the number of tracks between waypoints must be 0 or more")
    if noise < 0:
        raise PlaylistError("noise must be 0 or more")
    if k_candidates < 1:
        raise PlaylistError("k_candidates must be 1 or more")
    wp_rows = _waypoint_rows(catalogue, waypoints)
    fixed = [r for r in wp_rows if r is not None]
    if len(set(fixed)) != len(fixed):
        raise PlaylistError("a waypoint track is given twice; a playlist never repeats a track")

    n_total = len(catalogue)
    length = len(waypoints) + n_between * (len(waypoints) - 1)
    excluded = _excluded_rows(catalogue, cons)
    free_needed = length - len(fixed)
    usable = _count_usable(catalogue, cons, excluded | set(fixed))
    if usable < free_needed:
        raise PlaylistError(
            f"the library has {usable} tracks that meet the constraints besides the waypoints, "
            f"but a playlist of {length} needs {free_needed}: ask for fewer tracks (-n) or "
            "relax the constraints"
        )

    vectors = catalogue.vectors
    wp_vecs = np.stack(
        [vectors[r] if r is not None else l2_normalise(np.asarray(w, np.float32))
         for r, w in zip(wp_rows, waypoints)]
    ).astype(np.float32)

    # positions: target point, weight of the point term, fixed row or None, segment target
    rng = np.random.default_rng(seed)
    points = np.empty((length, catalogue.dim), dtype=np.float32)
    weight = np.zeros(length, dtype=np.float32)
    fixed_at: list[int | None] = [None] * length
    target_of = np.zeros(length, dtype=np.int64)  # waypoint index each step heads for
    t = np.arange(1, n_between + 1, dtype=np.float64) / (n_between + 1)
    pos = 0
    for w in range(len(waypoints)):
        points[pos] = wp_vecs[w]
        fixed_at[pos] = wp_rows[w]
        weight[pos] = 0.0 if wp_rows[w] is not None else TAG_POINT_WEIGHT
        target_of[pos] = w
        pos += 1
        if w + 1 < len(waypoints) and n_between:
            points[pos:pos + n_between] = slerp(wp_vecs[w], wp_vecs[w + 1], t)
            weight[pos:pos + n_between] = POINT_WEIGHT
            target_of[pos:pos + n_between] = w + 1
            pos += n_between
    free_pos = [i for i in range(length) if fixed_at[i] is None]

    k = min(n_total, max(int(k_candidates), n_between + 2))
    beam = BEAM_WIDTH

    def search(temperature: float) -> list[int]:
        nonlocal k, beam
        while True:
            path = _beam_search(catalogue, index, cons, excluded, points, weight, fixed_at,
                                target_of, wp_vecs, free_pos, fixed, k, beam, transitions,
                                temperature, rng)
            if path is not None:
                return path
            if k >= min(n_total, MAX_K_CANDIDATES) and beam >= MAX_BEAM_WIDTH:
                raise PlaylistError(
                    f"no path of {length} tracks meets the constraints in a library of "
                    f"{n_total} tracks: ask for fewer tracks (-n), other waypoints, or relax the "
                    "constraints"
                )
            k = min(n_total, 2 * k, MAX_K_CANDIDATES)
            beam = min(2 * beam, MAX_BEAM_WIDTH)

    best = search(0.0)
    if noise > 0 and free_pos:
        base = _mean_step(catalogue, best, transitions)
        budget = (1.0 + noise / 2.0) * base + 1e-9
        temperature = float(noise) * max(base, 1e-3)
        noise_0 = list(best)
        for _ in range(NOISE_ATTEMPTS):
            path = search(temperature)
            if _mean_step(catalogue, path, transitions) > budget:
                temperature /= 2.0  # too far from the best path: calmer
            elif list(path) == noise_0:
                temperature *= 1.5  # the same path again: bolder, still within the budget
            else:
                best = path
                break
    return [int(catalogue.ids[r]) for r in best]


def _beam_search(
    catalogue: Catalogue,
    index: SearchIndex,
    cons: Constraints,
    excluded: set[int],
    points: np.ndarray,
    weight: np.ndarray,
    fixed_at: list[int | None],
    target_of: np.ndarray,
    wp_vecs: np.ndarray,
    free_pos: list[int],
    fixed: list[int],
    k: int,
    beam: int,
    transitions: bool,
    temperature: float = 0.0,
    rng: np.random.Generator | None = None,
) -> list[int] | None:
    """One beam search over the candidate lattice; the rows of the best path, or None.

    With ``temperature > 0`` every (free position, candidate) pair's cost gets
    ``- temperature * g``, ``g ~ Gumbel(0, 1)`` drawn from ``rng`` (perturb-and-MAP).
    """
    vectors = catalogue.vectors
    length = len(fixed_at)
    fixed_arr = np.asarray(fixed, dtype=np.int64)
    limit = 1.0 - float(cons.near_duplicate_eps)

    # candidates of the free positions, one batched search
    cand_rows: list[np.ndarray] = [np.empty(0, np.int64)] * length
    if free_pos:
        found = _search_rows(catalogue, index, points[free_pos], k)
        for p, rows in zip(free_pos, found):
            rows = rows[_static_ok(catalogue, rows, cons, excluded)]
            cand_rows[p] = rows
    for p in range(length):
        if fixed_at[p] is not None:
            cand_rows[p] = np.asarray([fixed_at[p]], dtype=np.int64)

    # the union U of all lattice rows; everything below works on positions in U
    union, inverse = np.unique(np.concatenate(cand_rows), return_inverse=True)
    splits = np.cumsum([len(c) for c in cand_rows])[:-1]
    cand_u = np.split(inverse.astype(np.int64), splits)
    vu = vectors[union].astype(np.float32)
    if transitions and catalogue.intro is not None and catalogue.outro is not None:
        out_u, in_u = catalogue.outro[union], catalogue.intro[union]  # outro(prev) . intro(next)
    else:
        out_u = in_u = vu
    group = _duplicate_groups(vu, _hash_codes(catalogue, union), limit)
    artists = _artist_codes(catalogue, union)
    point_cos = np.einsum("ud,pd->pu", vu, points)  # (L, U)
    unary = weight[:, None] * (1.0 - point_cos)  # (L, U): cost of a track at a position
    if temperature > 0:
        assert rng is not None
        free = np.zeros(length, dtype=bool)
        free[free_pos] = True
        # Gumbel draws clipped at 3 (about their 95th percentile): a rare large draw must not
        # pull a far track into a path whose steps are otherwise short
        g = np.minimum(rng.gumbel(size=unary.shape), GUMBEL_CLIP)
        unary = unary - free[:, None] * (temperature * g)
    target_cos = vu @ wp_vecs.T  # (U, W)

    # free candidates must not be a waypoint track or a copy of one
    if len(fixed_arr):
        fixed_groups = group[np.searchsorted(union, fixed_arr)]
        for p in free_pos:
            cand_u[p] = cand_u[p][~np.isin(group[cand_u[p]], fixed_groups)]

    # beam state: paths (S, i+1) of U positions, cost (S,)
    c0 = cand_u[0]
    if len(c0) == 0:
        return None
    cost = unary[0, c0]
    paths = c0[:, None]
    if len(c0) > beam:
        keep = np.argpartition(cost, beam - 1)[:beam]
        cost, paths = cost[keep], paths[keep]
    for i in range(1, length):
        c = cand_u[i]
        if len(c) == 0:
            return None
        prev = paths[:, -1]
        tgt = target_cos[:, target_of[i]]
        step = 1.0 - out_u[prev] @ in_u[c].T  # (S, K)
        total = (
            cost[:, None]
            + _step_cost(step)
            + unary[i, c][None, :]
            + PROGRESS_WEIGHT * np.maximum(0.0, tgt[prev][:, None] - tgt[c][None, :])
        )
        if fixed_at[i] is None:  # (S, K): a track already on the path, or a copy of one
            bad = (group[paths][:, :, None] == group[c][None, None, :]).any(axis=1)
        else:  # a waypoint: the free tracks before it never copy it, other waypoints may
            bad = np.zeros(total.shape, dtype=bool)
        if cons.no_repeat_artist and not (fixed_at[i] is not None and fixed_at[i - 1] is not None):
            bad |= artists[prev][:, None] == artists[c][None, :]
        total = np.where(bad, np.inf, total)
        # keep the best few states per candidate, then the best `beam` of those
        per = min(max(STATES_PER_TRACK, beam // 16), total.shape[0])
        order = np.argsort(total, axis=0)[:per]  # (per, K) state indices
        vals = np.take_along_axis(total, order, axis=0)
        flat_vals, flat_states = vals.ravel(), order.ravel()
        flat_cols = np.tile(np.arange(len(c)), per)
        finite = np.isfinite(flat_vals)
        if not finite.any():
            return None
        flat_vals, flat_states, flat_cols = flat_vals[finite], flat_states[finite], flat_cols[finite]
        if len(flat_vals) > beam:
            keep = np.argpartition(flat_vals, beam - 1)[:beam]
            flat_states, flat_cols = flat_states[keep], flat_cols[keep]
        paths = np.concatenate([paths[flat_states], c[flat_cols][:, None]], axis=1)
        cost = total[flat_states, flat_cols]
    best = int(np.argmin(cost))
    return [int(union[u]) for u in paths[best]]


# ---------------------------------------------------------------------------- tags, distances


def tag_point(catalogue: Catalogue, label: str, *, top: int = 20) -> np.ndarray:
    """The point of the library most associated with one of the model's tags.

    The ``top`` tracks with the highest probability for the tag are averaged, each weighted by
    its probability, and the mean is L2-normalised: a robust "centre" of what the library holds
    for that tag (a single most-probable track would make the waypoint that one track).

    Parameters
    ----------
    catalogue : Catalogue
        Must carry ``tag_probs`` and ``tag_labels``.
    label : str
        A tag label, case-insensitive (e.g. ``"ambient"``).
    top : int
        How many tracks make the point (fewer when the library is smaller).

    Returns
    -------
    np.ndarray, float32, shape (d,)
        A unit vector.

    Raises
    ------
    LibraryEmptyError
        The catalogue is empty.
    PlaylistError
        The catalogue has no tag probabilities.
    UnknownTagError
        ``label`` is not one of the model's tags (the message lists the valid labels).
    """
    _check_library(catalogue)
    labels = [str(x) for x in catalogue.tag_labels]
    if catalogue.tag_probs is None or not labels:
        raise PlaylistError("this library has no tag probabilities; rescan it with a tagging model")
    wanted = label.strip().casefold()
    matches = [j for j, x in enumerate(labels) if x.casefold() == wanted]
    if not matches:
        raise UnknownTagError(f"unknown tag {label!r}; valid tags: {', '.join(labels)}")
    probs = np.asarray(catalogue.tag_probs, dtype=np.float32)[:, matches[0]]
    m = min(int(top), len(probs))
    best = np.argpartition(-probs, m - 1)[:m]
    w = np.maximum(probs[best], 1e-6)
    point = (w[:, None] * catalogue.vectors[best]).sum(axis=0)
    return l2_normalise(point)


def tag_track(catalogue: Catalogue, label: str, *, exclude: Sequence[int] = (),
              max_duration_s: float | None = None) -> int:
    """The track that stands for a tag waypoint: the one nearest to :func:`tag_point`.

    Chosen from the tag alone (and the tracks to leave out), so a ``tag:`` waypoint is the
    same track whatever the playlist's length or noise.

    Parameters
    ----------
    catalogue : Catalogue
    label : str
        A tag label, case-insensitive.
    exclude : sequence of int
        Track ids not to choose (e.g. the other waypoints).
    max_duration_s : float, optional
        Leave out tracks longer than this.

    Returns
    -------
    int
        A track id.

    Raises
    ------
    LibraryEmptyError, PlaylistError, UnknownTagError
        As :func:`tag_point`; PlaylistError also when every track is left out.
    """
    point = tag_point(catalogue, label)
    order = np.argsort(-(catalogue.vectors @ point), kind="stable")
    skip = {int(t) for t in exclude}
    dur = np.asarray(catalogue.duration_s, dtype=np.float32)
    for r in order:
        tid = int(catalogue.ids[int(r)])
        if tid in skip:
            continue
        if max_duration_s is not None and dur[int(r)] > float(max_duration_s):
            continue
        return tid
    raise PlaylistError(f"no track is left to stand for tag:{label}")


def step_distances(catalogue: Catalogue, ids: Sequence[int], transitions: bool = False) -> list[float]:
    """Cosine distance of each step of a playlist, aligned with its entries.

    Parameters
    ----------
    catalogue : Catalogue
    ids : sequence of int
        Track ids of the playlist, in order.
    transitions : bool
        Measure from the outro vector of the previous track to the intro vector of each track
        (when the catalogue has them) instead of between track vectors.

    Returns
    -------
    list of float
        ``len(ids)`` values: 0.0 for the first track, then ``1 - cos`` of the step from the
        previous track (as :attr:`PlaylistEntry.distance`).

    Raises
    ------
    TrackNotFoundError
        An id is not in the catalogue.
    """
    if len(ids) == 0:
        return []
    rows = np.asarray([_row(catalogue, i) for i in ids], dtype=np.int64)
    if transitions and catalogue.intro is not None and catalogue.outro is not None:
        a, b = catalogue.outro[rows[:-1]], catalogue.intro[rows[1:]]
    else:
        a, b = catalogue.vectors[rows[:-1]], catalogue.vectors[rows[1:]]
    d = 1.0 - np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    return [0.0] + [float(max(0.0, x)) for x in d]
