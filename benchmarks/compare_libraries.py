"""Compare the track vectors of two deejai libraries (e.g. a phone's and a desktop's scan).

Tracks are matched by their audio hash (the same file has the same hash on every platform:
for MP3 the bytes between the tags), so the two libraries may keep the files at different
paths. Printed: tracks matched, the cosine of each pair of vectors (min, mean, how many below
0.999, the worst five) and what only one side has.

Usage::

    python benchmarks/compare_libraries.py PHONE.sqlite DESKTOP.sqlite [--model NAME]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np


def vectors_by_hash(path: Path, model: str) -> dict[str, tuple[str, np.ndarray]]:
    from deejai.engine.library import Library

    lib = Library(path)
    try:
        ids, vecs = lib.vectors(model)
        out = {}
        for i, v in zip(ids, vecs):
            row = lib.track(int(i))
            out[row["audio_hash"]] = (row["path"], v / max(float(np.linalg.norm(v)), 1e-12))
        return out
    finally:
        lib.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--model", default=None, help="model name (default: deejai's default)")
    args = parser.parse_args(argv)
    if args.model is None:
        from deejai.models import DEFAULT_MODEL

        args.model = DEFAULT_MODEL
    a, b = vectors_by_hash(args.first, args.model), vectors_by_hash(args.second, args.model)
    common = sorted(set(a) & set(b))
    print(f"{args.first}: {len(a)} vectors; {args.second}: {len(b)} vectors; "
          f"{len(common)} tracks in both (by audio hash), model {args.model}")
    if not common:
        return 1
    pairs = sorted((float(a[h][1] @ b[h][1]), a[h][0]) for h in common)
    values = [c for c, _ in pairs]
    print(f"cosine per track: min {values[0]:.5f}, mean {statistics.fmean(values):.6f}, "
          f"below 0.999: {sum(c < 0.999 for c in values)}")
    for c, path in pairs[:5]:
        print(f"  {c:.5f}  {path}")
    only_a, only_b = len(set(a) - set(b)), len(set(b) - set(a))
    if only_a or only_b:
        print(f"only in the first: {only_a}; only in the second: {only_b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
