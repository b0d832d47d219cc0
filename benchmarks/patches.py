"""How many patches does a track vector need? Judged by what a listener notices. Prints
figures; asserts nothing.

The task measure is **album precision@5**: for each track, the share of its 5 nearest
neighbours (cosine of track vectors, among all other tracks) from the same album. Albums
come from the tags; only albums of >= 3 tracks give queries (every track is a candidate
neighbour), and sound effects under 10 s are left out. A vector that keeps a track near its
album mates keeps the playlists that join the dots through them.

For k = 4, 8, 16, 32 and "all" (every non-overlapping patch, as musicnn's extractor cuts a
track) every file is analysed with exactly the patches ``analyse(path, model, k=k)`` uses
(no approximation), by the default model (``msd-musicnn-v2``), and once more with every patch
by musicnn's fp32 graph (``msd-musicnn``), the reference the int8 model is held to. Printed
per k: album P@5, the paired bootstrap 95 % confidence interval of its difference to "all"
(queries resampled with replacement, ``--bootstrap`` rounds), and the seconds per track of the
analysis on one core (decode + inference + hash, summed ``TrackAnalysis.timings_s``).

The rule (``DEFAULT_PATCHES`` in ``deejai.engine.audio`` records the choice): the default k is
the smallest k whose CI of the difference includes 0 and whose P@5 is within 0.01 of all
patches.

Usage::

    python benchmarks/patches.py DIR [--every N] [--bootstrap 2000]
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

KS = (4, 8, 16, 32)
MIN_ALBUM = 3
MIN_SECONDS = 10.0


def album_precision(vectors: np.ndarray, albums: list[str], queries: np.ndarray,
                    n: int = 5) -> np.ndarray:
    """Per query track, the share of its ``n`` nearest other tracks from its own album."""
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    lab = np.asarray(albums, dtype=object)
    return np.array([np.mean(lab[order[q]] == lab[q]) for q in queries])


def bootstrap_ci(diff: np.ndarray, rounds: int, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, diff.shape[0], size=(rounds, diff.shape[0]))
    means = diff[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--every", type=int, default=1, help="take every N-th file")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap rounds")
    ap.add_argument("--no-reference", action="store_true",
                    help="skip musicnn's fp32 all-patch reference (faster)")
    args = ap.parse_args(argv)

    from deejai.engine.analyse import analyse, read_tags
    from deejai.engine.audio import DEFAULT_PATCHES, info
    from deejai.engine.model import Model
    from deejai.engine.scan import limit_threads, walk

    limit_threads()
    files = [f.path for f in walk([args.dir])][::args.every]
    model = Model(batch_size=64)
    reference = None if args.no_reference else Model("msd-musicnn", batch_size=64)
    kept, albums = [], []
    for path in files:
        try:
            if info(path).duration_s < MIN_SECONDS:
                continue
        except Exception as exc:  # noqa: BLE001 - a bad file in a benchmark folder
            print(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        album = (read_tags(path).get("album") or "").strip()
        kept.append(path)
        albums.append(album)
    sizes = Counter(albums)
    queries = np.array([i for i, a in enumerate(albums) if a and sizes[a] >= MIN_ALBUM])
    print(f"{len(kept)} tracks (>= {MIN_SECONDS:.0f} s) of {len(files)} files; "
          f"{len(queries)} queries in {sum(1 for a, n in sizes.items() if a and n >= MIN_ALBUM)} "
          f"albums of >= {MIN_ALBUM} tracks; model {model.card.name} [{model.variant}]")

    vectors: dict[str, np.ndarray] = {}
    cost: dict[str, float] = {}
    for k in (*KS, "all"):
        t0, spent, vecs = time.perf_counter(), 0.0, []
        for path in kept:
            a = analyse(path, model, k=0 if k == "all" else k)
            vecs.append(a.vector)
            spent += a.timings_s["total"]
        vectors[str(k)] = np.stack(vecs)
        cost[str(k)] = spent / len(kept)
        print(f"  k={k}: {time.perf_counter() - t0:.0f} s", flush=True)
    if reference is not None:
        vecs = [analyse(path, reference, k=0).vector for path in kept]
        vectors["reference"] = np.stack(vecs)

    p_all = album_precision(vectors["all"], albums, queries)
    print(f"\nalbum precision@5 ({len(queries)} queries; CI: paired bootstrap, "
          f"{args.bootstrap} rounds)")
    print(f"{'k':>10} {'P@5':>7} {'diff to all':>12} {'95% CI of diff':>20} {'s/track':>9}")
    chosen = None
    for k in (*KS, "all"):
        p = album_precision(vectors[str(k)], albums, queries)
        diff = p - p_all
        lo, hi = bootstrap_ci(diff, args.bootstrap)
        ok = lo <= 0.0 <= hi and abs(p.mean() - p_all.mean()) <= 0.01
        if ok and chosen is None and k != "all":
            chosen = k
        ci = f"{lo:+.3f}..{hi:+.3f}" if k != "all" else "-"
        print(f"{k:>10} {p.mean():7.3f} {diff.mean():+12.3f} {ci:>20} {cost[str(k)]:9.3f}"
              + ("   <- passes the rule" if ok and k != "all" else ""))
    if reference is not None:
        p_ref = album_precision(vectors["reference"], albums, queries)
        d = p_all - p_ref
        lo, hi = bootstrap_ci(d, args.bootstrap)
        print(f"{'fp32 all':>10} {p_ref.mean():7.3f}   (musicnn fp32, every patch; v2 all minus "
              f"this: {d.mean():+.3f}, CI {lo:+.3f}..{hi:+.3f})")
        if chosen is not None:
            dk = album_precision(vectors[str(chosen)], albums, queries) - p_ref
            lo, hi = bootstrap_ci(dk, args.bootstrap)
            print(f"v2 at k={chosen} minus fp32 all: {dk.mean():+.3f} (CI {lo:+.3f}..{hi:+.3f})")
    print(f"\nsmallest k by the rule: {chosen if chosen is not None else 'all'}; "
          f"DEFAULT_PATCHES is {DEFAULT_PATCHES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
