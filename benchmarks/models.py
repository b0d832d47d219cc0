"""Model speed and fidelity: musicnn fp32 (v1), the re-laid-out fp32 graph and v2 (int8).

Prints figures, asserts nothing.

1. **Speed**: milliseconds per patch of ``msd-musicnn`` (v1, log-mel in, musicnn's own graph),
   ``msd-musicnn-v2`` variant ``fp32`` (PCM in, re-laid out, exact) and variant ``int8`` (the
   default), at batch 1/8/32 and 1/2 interpreter threads. Runs are interleaved (every
   configuration once per round, ``--rounds`` rounds, best round reported) so that a machine
   whose load changes affects them all alike. v2's figures include its in-graph log-mel; v1's
   do not (its NumPy log-mel costs extra, see ``benchmarks/analyse.py``).
2. **Fidelity** of v2 to musicnn on real music (``DIR``): the same ``--patches`` patch
   positions of every track through v1 (deejai's NumPy log-mel) and through v2 (PCM): cosine
   per patch and per track (mean of the patch embeddings; mean and min), and the share of each
   track's top-5 tags (mean probability) that v2 keeps. Both variants of v2 are reported.

Usage::

    python benchmarks/models.py ~/Music --rounds 5
    python benchmarks/models.py DIR --speed-only
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

V1, V2 = "msd-musicnn", "msd-musicnn-v2"


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1),
                                        1e-12)


def speed(rounds: int, batches: list[int], threads: list[int]) -> None:
    from deejai.engine.model import Model

    configs = [(name, variant, b, t) for name, variant in ((V1, None), (V2, "fp32"), (V2, "int8"))
               for t in threads for b in batches]
    models = {}
    rng = np.random.default_rng(0)
    inputs = {}
    for name, variant, b, t in configs:
        key = (name, variant, t)
        if key not in models:
            models[key] = Model(name, variant=variant, threads=t, batch_size=max(batches))
        card = models[key].card
        if (name, b) not in inputs:
            shape = (b, *card.input_shape)
            x = rng.standard_normal(shape).astype(np.float32)
            inputs[(name, b)] = np.abs(x) * 2 if card.input_kind == "log_mel" else 0.1 * x
    best = {c: float("inf") for c in configs}
    for _ in range(rounds):
        for c in configs:
            name, variant, b, t = c
            m, x = models[(name, variant, t)], inputs[(name, b)]
            m.batch_size = b
            m.predict(x)  # warm (resizes the input tensor for this batch)
            n = max(2, 64 // b)
            t0 = time.perf_counter()
            for _ in range(n):
                m.predict(x)
            best[c] = min(best[c], (time.perf_counter() - t0) / n / b * 1000)
    print(f"\nms per patch (best of {rounds} interleaved rounds)")
    print(f"{'model':<28} {'threads':>7} " + " ".join(f"{'batch ' + str(b):>9}" for b in batches))
    for name, variant in ((V1, None), (V2, "fp32"), (V2, "int8")):
        label = name + (f" [{variant}]" if variant else " (v1, fp32)")
        for t in threads:
            print(f"{label:<28} {t:>7} " + " ".join(f"{best[(name, variant, b, t)]:9.2f}"
                                                  for b in batches))
    v1 = best[(V1, None, batches[0], threads[0])]
    for variant in ("fp32", "int8"):
        print(f"v2 [{variant}] vs v1 at batch {batches[0]}, {threads[0]} thread: "
              f"{v1 / best[(V2, variant, batches[0], threads[0])]:.2f}x faster")


def fidelity(folder: Path, k: int, every: int) -> None:
    from deejai.engine import audio
    from deejai.engine.model import Model
    from deejai.engine.scan import walk

    files = [f.path for f in walk([folder])][::every]
    v1 = Model(V1, batch_size=32)
    v2 = {v: Model(V2, variant=v, batch_size=32) for v in ("int8", "fp32")}
    per_patch = {v: [] for v in v2}
    per_track = {v: [] for v in v2}
    top5 = {v: [] for v in v2}
    skipped = 0
    t0 = time.perf_counter()
    for i, path in enumerate(files, 1):
        try:
            with audio.open_reader(path, v1.card.sample_rate_hz) as reader:
                mel, _, dur = audio.load_patches(path, v1.card, k, reader=reader)
                pcm, _, _ = audio.load_pcm_patches(path, v2["int8"].card, k, reader=reader)
        except Exception as exc:  # noqa: BLE001 - a bad file in a benchmark folder
            print(f"  skipped {path}: {exc}", file=sys.stderr)
            skipped += 1
            continue
        ref = v1.predict(mel)
        for v, m in v2.items():
            out = m.predict(pcm)
            per_patch[v].append(_cos(ref["embedding"], out["embedding"]))
            per_track[v].append(float(_cos(ref["embedding"].mean(0), out["embedding"].mean(0))))
            a = set(np.argsort(-ref["tags"].mean(0))[:5])
            b = set(np.argsort(-out["tags"].mean(0))[:5])
            top5[v].append(len(a & b) / 5)
        if i % 10 == 0:
            print(f"  {i}/{len(files)} tracks ({time.perf_counter() - t0:.0f} s)", flush=True)
    n = len(per_track["int8"])
    print(f"\nfidelity to musicnn (v1 fp32, NumPy log-mel) on {n} tracks of {folder} "
          f"({'every' if not k else k} patches per track; {skipped} skipped)")
    print(f"{'v2 variant':<10} {'patch cos mean':>15} {'patch cos min':>14} "
          f"{'track cos mean':>15} {'track cos min':>14} {'top-5 tags kept':>16}")
    for v in ("int8", "fp32"):
        pp = np.concatenate(per_patch[v])
        print(f"{v:<10} {pp.mean():15.5f} {pp.min():14.5f} {np.mean(per_track[v]):15.5f} "
              f"{np.min(per_track[v]):14.5f} {np.mean(top5[v]):16.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, nargs="?", help="a folder of music (for the fidelity part)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--patches", "-k", type=int, default=16,
                    help="patches per track in the fidelity part (0: every patch)")
    ap.add_argument("--every", type=int, default=1, help="use every Nth file")
    ap.add_argument("--speed-only", action="store_true")
    args = ap.parse_args()
    from deejai.engine.model import has_int8_dot_product

    print(f"CPU int8 dot product: {has_int8_dot_product()}")
    speed(args.rounds, [int(b) for b in args.batches.split(",")],
          [int(t) for t in args.threads.split(",")])
    if args.dir is not None and not args.speed_only:
        fidelity(args.dir, args.patches, args.every)


if __name__ == "__main__":
    main()
