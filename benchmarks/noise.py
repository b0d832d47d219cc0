"""What ``noise`` does to a join: distinct paths per seed, and how much longer their steps get.

Prints figures, asserts nothing. For ``--pairs`` random (A, B) pairs and each noise value, the
join A -> B with ``-n`` tracks between is made with seeds 1..``--seeds``; per noise value it
prints the mean number of distinct paths among those seeds, the share of pairs with at least
``--seeds // 2`` distinct paths, and the ratio of a noisy path's mean step to the noise-0
path's (mean and worst over all pairs and seeds), with the share of pairs whose every path
stays within 10% of it. Radio gets the same figures (distinct playlists of ``--radio-n``
tracks from one seed track).

The issue's yardstick: on the 88-track corpus, ``--noise 0.2`` with 8 seeds gives at least 4
distinct playlists, each within 10% of the noise-0 path's mean step.

Libraries: ``--home DIR`` (a scanned DEEJAI_HOME, as ``benchmarks/paths.py``) or
``--synthetic N`` clustered vectors.

Usage::

    python benchmarks/noise.py --home ~/deejai-corpus-home
    python benchmarks/noise.py --home ~/deejai-corpus-home --from "battle-epic" --to "nebula"
    python benchmarks/noise.py --synthetic 20000
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def mean_step(cat, ids) -> float:
    from deejai.engine import playlist as pl

    return float(np.mean(pl.step_distances(cat, ids)[1:]))


def figures(label: str, runs: list[tuple[int, list[float]]], seeds: int) -> None:
    """``runs``: per pair, (distinct paths, noisy mean step / noise-0 mean step per seed)."""
    distinct = np.asarray([d for d, _ in runs], dtype=float)
    ratios = np.concatenate([np.asarray(r) for _, r in runs]) if runs else np.zeros(1)
    within = np.mean([max(r) <= 1.10 for _, r in runs]) if runs else 0.0
    print(f"  {label:<12} distinct {distinct.mean():4.1f} of {seeds} (min {distinct.min():.0f}; "
          f">= {seeds // 2} in {np.mean(distinct >= seeds // 2):6.1%} of pairs)   "
          f"mean step x{ratios.mean():.3f} (worst x{ratios.max():.3f}; all within 10% in "
          f"{within:6.1%} of pairs)")


def main(argv: list[str] | None = None) -> None:
    from paths import random_pairs, real_library, synthetic_library

    from deejai.engine import playlist as pl

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=None, help="DEEJAI_HOME of a scanned library")
    ap.add_argument("--synthetic", type=int, default=None, metavar="N")
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("-n", type=int, default=8, help="tracks between the ends")
    ap.add_argument("--radio-n", type=int, default=10)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.1, 0.2, 0.5, 1.0, 2.0])
    ap.add_argument("--from", dest="start", default=None,
                    help="a query for one pair's start (with --to): report that pair only")
    ap.add_argument("--to", dest="end", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.home:
        cat, index = real_library(args.home)
        label = f"library at {args.home}"
    else:
        cat, index = synthetic_library(args.synthetic or 20_000, 200, 200, args.seed, "flat")
        label = "synthetic library"
    if args.start and args.end:
        from deejai.engine.config import paths
        from deejai.engine.library import Library
        from deejai.engine.resolve import resolve_track

        records = Library(paths().library_file).records()
        pairs = [(resolve_track(args.start, records), resolve_track(args.end, records))]
    else:
        pairs = random_pairs(cat.ids, args.pairs, args.seed)
    print(f"{label}: {len(cat)} tracks; "
          f"{len(pairs)} pairs, n={args.n} between, seeds 1-{args.seeds}")
    seeds = range(1, args.seeds + 1)
    for noise in args.noise:
        print(f"noise {noise:g}")
        runs = []
        for a, b in pairs:
            base = mean_step(cat, pl.join(cat, index, [a, b], args.n))
            paths = [pl.join(cat, index, [a, b], args.n, noise=noise, seed=s) for s in seeds]
            runs.append((len({tuple(p) for p in paths}), [mean_step(cat, p) / base for p in paths]))
        figures("join", runs, args.seeds)
        runs = []
        for a, _ in pairs:
            base = mean_step(cat, pl.radio(cat, index, [a], args.radio_n))
            lists = [pl.radio(cat, index, [a], args.radio_n, noise=noise, seed=s) for s in seeds]
            runs.append((len({tuple(p) for p in lists}), [mean_step(cat, p) / base for p in lists]))
        figures("radio", runs, args.seeds)


if __name__ == "__main__":
    main()
