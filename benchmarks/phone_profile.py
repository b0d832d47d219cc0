"""The phone profile's analysis path against the desktop's: time per track and agreement.

Same files, same run, one thread (the process pinned to one CPU, BLAS and the TFLite
interpreter at one thread), each track analysed three ways in turn:

* **desktop**: FFmpeg (PyAV) decoding, soxr "HQ" resampling, LiteRT — what ``deejai scan`` runs;
* **phone**: FFmpeg (PyAV) decoding, the NumPy polyphase resampler, LiteRT — the code path of
  the phone profile (``tests/phoneprofile.py``), with this machine's NumPy (OpenBLAS);
* **phone, no BLAS**: the same, with the resampler's matrix products forced through NumPy's
  own loops (a strided filter row makes ``matmul`` skip BLAS), as in python-for-android's
  NumPy, which is built without BLAS.

Printed: seconds per track (decode = open + read + decode, resample, inference, total) for each way,
the phone/desktop ratios, and the cosine of each track's phone vector to its desktop vector
(min, mean, the worst track).

This approximates a phone; it does not measure one. A phone core adds a constant factor on top
of the "phone, no BLAS" figures, different for each part: see ``docs/mobile.md`` ("What a phone
core costs") for the factors and why.

Usage::

    python benchmarks/phone_profile.py DIR [--limit N] [--per-track]
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

AUDIO_EXTENSIONS = {".mp3", ".flac", ".ogg", ".opus", ".wav", ".m4a", ".aac"}
WAYS = ("desktop", "phone", "phone, no BLAS")


def audio_files(root: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    return files[:limit] if limit else files


def pin_one_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


@contextlib.contextmanager
def way(name: str):
    """Switch the resampler (and its BLAS use) for one of :data:`WAYS`."""
    from deejai.engine.decode import resample

    saved_bank = resample._polyphase_bank
    if name == "desktop":
        os.environ.pop("DEEJAI_RESAMPLER", None)
    else:
        os.environ["DEEJAI_RESAMPLER"] = "numpy"
    if name == "phone, no BLAS":
        @functools.lru_cache(maxsize=8)
        def strided_bank(up: int, down: int):
            bank, half = saved_bank(up, down)
            wide = np.zeros((bank.shape[0], 2 * bank.shape[1]), dtype=np.float32)
            wide[:, ::2] = bank
            return wide[:, ::2], half  # same taps, stride 2: matmul takes NumPy's own loop

        resample._polyphase_bank = strided_bank
    resample._soxr.cache_clear()
    try:
        yield resample.resampler_name()
    finally:
        resample._polyphase_bank = saved_bank
        os.environ.pop("DEEJAI_RESAMPLER", None)
        resample._soxr.cache_clear()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--per-track", action="store_true", help="print every track's figures")
    args = parser.parse_args(argv)

    from deejai.engine.analyse import analyse
    from deejai.engine.errors import DeejaiError
    from deejai.engine.model import load_model

    files = audio_files(args.folder, args.limit)
    if not files:
        print(f"no audio files under {args.folder}", file=sys.stderr)
        return 1
    pinned = pin_one_cpu()
    model = load_model(threads=1)
    print(f"{len(files)} files; {pinned}; model {model.card.name} ({model.variant}, "
          f"{model.backend.name}); numpy {np.__version__}")
    for name in WAYS:  # warm-up: imports, the interpreter's first invoke, the filter banks
        with way(name):
            analyse(files[0], model)
    rows = []
    for path in files:
        row = {"path": path}
        for name in WAYS:
            with way(name) as resampler:
                t0 = time.perf_counter()
                try:
                    result = analyse(path, model)
                except DeejaiError as exc:
                    print(f"skip {path.name}: {exc}", file=sys.stderr)
                    row = None
                    break
                total = time.perf_counter() - t0
            t = result.timings_s
            row[name] = {"total": total, "decode": t.get("decode", 0.0),
                         "resample": t.get("resample", 0.0), "inference": t.get("inference", 0.0),
                         "vector": result.vector, "resampler": resampler,
                         "duration_s": result.duration_s}
        if row is not None:
            rows.append(row)
            if args.per_track:
                d, p, q = (row[w] for w in WAYS)
                cos = float(d["vector"] @ p["vector"])
                print(f"  {path.name[:48]:48s} desktop {d['total']:.3f} s  phone {p['total']:.3f} s"
                      f"  no-BLAS {q['total']:.3f} s  cosine {cos:.5f}")
    if not rows:
        return 1
    hours = sum(r["desktop"]["duration_s"] for r in rows) / 3600
    print(f"\n{len(rows)} tracks, {hours:.2f} h of audio; seconds per track (mean, median):")
    print(f"  {'':16s} {'decode':>14s} {'resample':>14s} {'inference':>14s} {'total':>14s}")
    means = {}
    for name in WAYS:
        parts = {k: [r[name][k] for r in rows] for k in ("decode", "resample", "inference", "total")}
        means[name] = {k: statistics.fmean(v) for k, v in parts.items()}
        cells = "".join(f" {statistics.fmean(v):7.3f} {statistics.median(v):6.3f}"
                        for v in parts.values())
        print(f"  {name:16s}{cells}  ({rows[0][name]['resampler']})")
    for name in WAYS[1:]:
        print(f"  {name} / desktop: total x{means[name]['total'] / means['desktop']['total']:.2f}, "
              f"resample x{means[name]['resample'] / max(means['desktop']['resample'], 1e-9):.2f}")
    cosines = [(float(r["desktop"]["vector"] @ r["phone"]["vector"]), r["path"].name) for r in rows]
    no_blas = [float(r["phone"]["vector"] @ r["phone, no BLAS"]["vector"]) for r in rows]
    values = [c for c, _ in cosines]
    worst = min(cosines)
    print(f"\ncosine(phone vector, desktop vector) per track: min {worst[0]:.5f} ({worst[1]}), "
          f"mean {statistics.fmean(values):.6f}; tracks below 0.999: "
          f"{sum(c < 0.999 for c in values)}")
    print(f"cosine(phone, phone no-BLAS): min {min(no_blas):.6f} (the same arithmetic, another loop)")
    model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
