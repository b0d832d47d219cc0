"""How many patches does a track vector need? Prints figures; asserts nothing.

For every audio file under DIR the model embeds every non-overlapping patch (the reference,
as musicnn's extractor cuts a track). For k = 4, 8, 16, 32 the k-patch track vector is the
L2-normalised mean of k of those patches spread evenly from the first to the last, the same
spread :func:`deejai.engine.audio.patch_starts` uses (nearest reference patch to each spread
start, so no extra inference is needed; a patch lies at most half a patch, ~1.5 s, from where
``analyse`` would put it). Printed per k:

- cosine: mean cosine between the k-patch vector and the all-patch vector of the same track;
- top-5 overlap: mean fraction of a track's 5 nearest neighbours (cosine, among the other
  tracks) under the all-patch vectors that are also among its 5 nearest under k-patch vectors;
- cost/track: seconds per track of ``analyse(path, model, k=k)`` (decode + mel + inference +
  hash) measured on the first ``--timed`` tracks, one interpreter thread unless ``--threads``.

A last row, "all, shifted", is a second all-patch vector from patches starting half a patch
later: two equally good analyses of the whole track. Its overlap with the reference is the
noise floor of the top-5 measure on this corpus (neighbours at nearly equal distances swap
places under any small change), which a k-patch vector cannot be expected to beat.

The default k is the smallest with top-5 overlap >= 0.95 (``DEFAULT_PATCHES`` in
``deejai.engine.analyse`` records the choice).

Usage::

    python benchmarks/patches.py DIR [--limit N] [--every N] [--timed 5] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = {".mp3", ".flac", ".ogg", ".opus", ".wav", ".m4a", ".aac", ".wma", ".aiff"}
KS = (4, 8, 16, 32, 64)


def audio_files(root: Path, limit: int | None, every: int = 1) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    files = files[::every]
    return files[:limit] if limit else files


def top_n(vectors: np.ndarray, n: int) -> list[set[int]]:
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :n]
    return [set(map(int, row)) for row in order]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--limit", type=int, default=None, help="analyse only the first N files")
    ap.add_argument("--every", type=int, default=1,
                    help="take every N-th file (a spread-out sample of a big folder)")
    ap.add_argument("--timed", type=int, default=5, help="files timed per k for the cost column")
    ap.add_argument("--threads", type=int, default=1, help="interpreter threads")
    ap.add_argument("--neighbours", type=int, default=5)
    ap.add_argument("--model", default="msd-musicnn")
    ap.add_argument("--no-shifted", action="store_true",
                    help="skip the half-patch-shifted all-patch row (halves the run time)")
    args = ap.parse_args(argv)

    from deejai.engine import audio
    from deejai.engine.analyse import DEFAULT_PATCHES, analyse
    from deejai.engine.catalogue import l2_normalise
    from deejai.engine.errors import DeejaiError
    from deejai.engine.model import Model

    model = Model(args.model, threads=args.threads)
    files = audio_files(args.dir, args.limit, args.every)
    print(f"{len(files)} files under {args.dir}; model {model.card.name}, "
          f"{args.threads} interpreter thread(s), os.cpu_count()={os.cpu_count()}")

    ref, by_k, names, shifted = [], {k: [] for k in KS}, [], []
    n_patches = 0
    t_all = 0.0
    for i, path in enumerate(files):
        t0 = time.perf_counter()
        try:
            patches, _, duration = audio.load_patches(path, model.card, None)
        except DeejaiError as exc:
            print(f"  skipped: {exc}")
            continue
        emb = model.predict(patches)["embedding"]
        t_all += time.perf_counter() - t0
        n = emb.shape[0]
        n_patches += n
        ref.append(l2_normalise(emb.mean(axis=0)))
        for k in KS:
            idx = np.unique(np.round(np.linspace(0, n - 1, min(k, n))).astype(int))
            by_k[k].append(l2_normalise(emb[idx].mean(axis=0)))
        names.append(path.name)
        if not args.no_shifted:
            y, _ = audio.decode(path, model.card.sample_rate_hz)
            mel = audio.log_mel(y, model.card)
            P = model.card.patch_frames
            starts = np.arange(P // 2, mel.shape[0] - P + 1, P)
            if len(starts):
                emb2 = model.predict(np.stack([mel[s:s + P] for s in starts]))["embedding"]
                shifted.append(l2_normalise(emb2.mean(axis=0)))
            else:
                shifted.append(ref[-1])
        if (i + 1) % 5 == 0:
            print(f"  {i + 1}/{len(files)} files, {n_patches} patches, {t_all:.0f} s", flush=True)
    if len(ref) < args.neighbours + 1:
        print("not enough files for a neighbour comparison")
        return 1
    ref_v = np.stack(ref)
    ref_nn = top_n(ref_v, args.neighbours)

    timed = files[: args.timed]
    print(f"\n{len(ref)} tracks, {n_patches} patches in all "
          f"({n_patches / len(ref):.1f} per track); cost timed on {len(timed)} track(s)")
    print(f"{'k':>12} {'cosine':>8} {'min cos':>8} {'top-%d overlap' % args.neighbours:>15} "
          f"{'cost/track s':>13}")
    chosen = None
    rows = [*KS, "all"] + ([] if args.no_shifted else ["all, shifted"])
    for k in rows:
        if k == "all":
            cos = np.ones(len(ref))
            overlap = 1.0
        else:
            v = np.stack(shifted) if k == "all, shifted" else np.stack(by_k[k])
            cos = np.sum(v * ref_v, axis=1)
            nn = top_n(v, args.neighbours)
            overlap = float(np.mean([len(a & b) / args.neighbours for a, b in zip(nn, ref_nn)]))
        t0 = time.perf_counter()
        for path in timed if k != "all, shifted" else []:
            analyse(path, model, k=0 if k == "all" else k)
        cost = (time.perf_counter() - t0) / max(1, len(timed))
        print(f"{k!s:>12} {cos.mean():8.4f} {cos.min():8.4f} {overlap:15.3f} {cost:13.2f}",
              flush=True)
        if chosen is None and isinstance(k, int) and overlap >= 0.95:
            chosen = k
    print(f"\nchosen default k (smallest with top-{args.neighbours} overlap >= 0.95): "
          f"{chosen if chosen is not None else 'all'}; DEFAULT_PATCHES is {DEFAULT_PATCHES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
