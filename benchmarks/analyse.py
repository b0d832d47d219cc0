"""Analysis throughput on one core: decode, mel, inference. Prints figures; asserts nothing.

For the audio files under DIR, ``deejai.engine.analyse.analyse`` runs with a one-thread
interpreter while the process is pinned to one CPU (``os.sched_setaffinity`` where the OS has
it). Printed per stage (decode = read + decode + resample, mel, inference, total): seconds per
track and audio-seconds per second (track duration / time), for the default number of patches
and for every patch (``k=0``, the work musicnn's extractor does).

When musicnn's TensorFlow package is importable by ``--reference-python`` (default: this
interpreter), the same files also go through the reference extractor
``musicnn.extractor.extractor(path, model="MSD_musicnn", extract_features=True)`` (librosa
load + mel, TensorFlow 1-style session, all non-overlapping 3 s patches) in a child process
pinned to the same CPU, and the ratio of the reference's time to deejai's all-patch time is
printed. Both sides are warmed up on the first file before timing (imports, the first
session, tensor allocation). TensorFlow stays out of deejai's own environment; point ``--reference-python`` at
one that has ``tensorflow`` and ``musicnn`` installed.

Usage::

    python benchmarks/analyse.py DIR [--limit 10] [--reference-python /path/to/python]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from deejai.models import DEFAULT_MODEL

AUDIO_EXTENSIONS = {".mp3", ".flac", ".ogg", ".opus", ".wav", ".m4a", ".aac", ".wma", ".aiff"}

REFERENCE_CODE = r"""
import json, os, sys, time, io, contextlib
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.compat.v1.layers needs tf-keras in TF 2.16+
os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
os.environ["TF_NUM_INTEROP_THREADS"] = "1"
try:
    t0 = time.perf_counter()
    from musicnn.extractor import extractor
    import_s = time.perf_counter() - t0
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)
out = {"import_s": import_s, "files": []}
with contextlib.redirect_stdout(io.StringIO()):  # warm-up: first session, graph, librosa caches
    extractor(sys.argv[1], model="MSD_musicnn", extract_features=True)
for path in sys.argv[1:]:
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        taggram, labels, features = extractor(path, model="MSD_musicnn", extract_features=True)
    out["files"].append({"path": path, "seconds": time.perf_counter() - t0,
                         "patches": int(taggram.shape[0]),
                         "tag_probs": [float(v) for v in taggram.mean(axis=0)]})
print(json.dumps(out))
"""


def audio_files(root: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    return files[:limit] if limit else files


def pin_one_cpu() -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def run_deejai(files: list[Path], model, k: int | None) -> dict:
    from deejai.engine.analyse import analyse
    from deejai.engine.errors import DeejaiError

    totals = {"decode": 0.0, "mel": 0.0, "inference": 0.0, "hash": 0.0, "total": 0.0}
    audio_s, patches, n = 0.0, 0, 0
    tag_probs = {}
    for path in files:
        try:
            a = analyse(path, model, k=k)
        except DeejaiError as exc:
            print(f"  skipped: {exc}")
            continue
        n += 1
        tag_probs[str(path)] = a.tag_probs
        audio_s += a.duration_s
        patches += len(a.patch_starts_s)
        for key in totals:
            totals[key] += a.timings_s.get(key, 0.0)
    return {"tracks": n, "audio_s": audio_s, "patches": patches, "timings": totals,
            "tag_probs": tag_probs}


def report(label: str, r: dict) -> None:
    n, audio_s = max(1, r["tracks"]), r["audio_s"]
    print(f"\n{label}: {r['tracks']} tracks, {audio_s / 60:.1f} min of audio, "
          f"{r['patches']} patches ({r['patches'] / n:.1f}/track)")
    print(f"  {'stage':<10} {'s/track':>9} {'audio-s/s':>11} {'ms/patch':>9}")
    for key, value in r["timings"].items():
        speed = audio_s / value if value > 0 else float("inf")
        print(f"  {key:<10} {value / n:9.3f} {speed:11.1f} {1000 * value / max(1, r['patches']):9.1f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--limit", type=int, default=10, help="files to analyse (0 = all)")
    ap.add_argument("--reference-python", default=sys.executable,
                    help="interpreter that can import musicnn and tensorflow")
    ap.add_argument("--reference-limit", type=int, default=3,
                    help="files the (slow) reference extractor runs on")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args(argv)

    print(pin_one_cpu())
    from deejai.engine.analyse import DEFAULT_PATCHES
    from deejai.engine.model import Model

    files = audio_files(args.dir, args.limit or None)
    model = Model(args.model, threads=1)
    print(f"model {model.card.name}, backend {model.backend.name}, batch {model.batch_size}, "
          f"1 thread; {len(files)} files under {args.dir}")
    run_deejai(files[:1], model, None)  # warm-up: lazy imports, tensor allocation, caches

    report(f"deejai, k={DEFAULT_PATCHES} (default)", run_deejai(files, model, DEFAULT_PATCHES))
    ref_files = files[: args.reference_limit]
    mine = run_deejai(ref_files, model, 0)
    report("deejai, every patch (k=0)", mine)

    print(f"\nreference: musicnn extractor via {args.reference_python} on {len(ref_files)} files")
    proc = subprocess.run([args.reference_python, "-c", REFERENCE_CODE, *map(str, ref_files)],
                          capture_output=True, text=True)
    try:
        ref = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        print(f"  failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        return 0
    if "error" in ref:
        print(f"  skipped: musicnn not importable ({ref['error']})")
        return 0
    ref_s = sum(f["seconds"] for f in ref["files"])
    ref_patches = sum(f["patches"] for f in ref["files"])
    n = max(1, len(ref["files"]))
    print(f"  import {ref['import_s']:.1f} s (not counted); {ref_s / n:.2f} s/track, "
          f"{mine['audio_s'] / ref_s:.1f} audio-s/s, {ref_patches} patches")
    import numpy as np

    for f in ref["files"]:
        if f["path"] not in mine["tag_probs"]:
            continue
        ref_probs = np.asarray(f["tag_probs"], dtype=float)
        name = Path(f["path"]).name
        if not np.isfinite(ref_probs).all():
            print(f"  agreement on {name}: reference gives NaN (its float16 mel overflows)")
            continue
        diff = np.abs(ref_probs - mine["tag_probs"][f["path"]]).max()
        print(f"  agreement on {name}: max |mean tag probability, reference - deejai| = "
              f"{diff:.4f}")
    deejai_s = mine["timings"]["total"]
    print(f"  deejai all patches: {deejai_s / n:.2f} s/track -> reference/deejai time ratio "
          f"{ref_s / deejai_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
