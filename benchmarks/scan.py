"""Scan throughput and memory on a real folder of music.

Prints figures, asserts nothing. In a temporary library (never the user's), it measures

1. the **first scan** of DIR with ``--workers`` processes and the default settings (model,
   patches per track): tracks per second (analysis phase and whole scan), audio hours analysed
   per minute, the share of analysis time spent in decoding, resampling, the mel front end,
   inference and hashing (summed ``TrackAnalysis.timings_s``), and the peak resident memory
   (RSS) of the main process and of each worker, sampled every 50 ms with psutil. In the same
   run, unless ``--no-old``, the same first scan with the previous default (``msd-musicnn``,
   musicnn's fp32 graph, 32 patches per track), for the ratio; ``--configs 2x1,1x2,3x1`` adds
   first scans with other workers x interpreter-threads layouts;
2. an **unchanged rescan** of DIR: seconds, and seconds per 1000 files;
3. an **unchanged rescan of a 10,000-file library**: ``--copies`` hard links (symbolic links
   where hard links are impossible) of the analysed files under new names, entered into the
   library with the vectors of their originals; the rescan is timed and every ``open`` of a
   file under the scanned folders is counted with a Python audit hook (it must be 0: an
   unchanged file is never opened).

Usage::

    python benchmarks/scan.py ~/Music/some-albums --workers 2
    python benchmarks/scan.py DIR --copies 0 --configs 2x1,1x2,3x1   # skip part 3
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path


class RssSampler(threading.Thread):
    """Peak RSS (bytes) of this process and of each child process, sampled in a thread."""

    def __init__(self, interval_s: float = 0.05) -> None:
        super().__init__(daemon=True)
        import psutil

        self.me = psutil.Process()
        self.interval_s = interval_s
        self.main_peak = 0
        self.child_peak: dict[int, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        import psutil

        while not self._halt.is_set():
            try:
                self.main_peak = max(self.main_peak, self.me.memory_info().rss)
                for child in self.me.children(recursive=True):
                    try:
                        if "resource_tracker" in " ".join(child.cmdline()):
                            continue
                        rss = child.memory_info().rss
                    except psutil.Error:
                        continue
                    self.child_peak[child.pid] = max(self.child_peak.get(child.pid, 0), rss)
            except psutil.Error:
                pass
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def mb(n: float) -> str:
    return f"{n / 2**20:.0f} MB"


def first_scan(lib, folder: Path, *, workers: int, threads: int, patches, model, label: str):
    """One first scan of ``folder`` into ``lib``; prints its figures, returns the analyses."""
    from deejai.engine.scan import scan

    analyses = []
    first_progress: list[tuple[float, int]] = []
    last_print = [0.0]

    def on_progress(done, total, errors, rate, eta):
        now = time.monotonic()
        if done >= 1:  # (time, done) of every result after the first: the steady state
            first_progress.append((now, done))
        if now - last_print[0] > 10 or done == total:
            last_print[0] = now
            eta_txt = "-" if eta is None else f"{eta:.0f} s"
            print(f"  {done}/{total} files, {errors} errors, {rate:.2f} tracks/s, ETA {eta_txt}",
                  flush=True)

    sampler = RssSampler()
    sampler.start()
    t0 = time.monotonic()
    s1 = scan(lib, [folder], workers=workers, threads=threads, on_progress=on_progress,
              on_result=analyses.append, patches=patches, model=model)
    wall = time.monotonic() - t0
    sampler.stop()
    done = s1.added + s1.updated + s1.errors
    if len(first_progress) >= 2:
        (t_a, d_a), (t_b, d_b) = first_progress[0], first_progress[-1]
        steady = (d_b - d_a) / max(t_b - t_a, 1e-9)
    else:
        steady = float("nan")
    hours = sum(a.duration_s for a in analyses) / 3600
    k = analyses[0].patch_vectors.shape[0] if analyses else "?"
    print(f"\n{label}: model {s1.model}, patches per track: "
          f"{'default' if patches is None else patches}")
    print(f"  files {s1.files}: {s1.added} added, {s1.errors} errors, {s1.duplicates} duplicates")
    print(f"  wall time {wall:.1f} s (model loading, walk and commits included)")
    print(f"  throughput {done / wall:.2f} tracks/s overall; "
          f"{steady:.2f} tracks/s from the first to the last result (models loaded)")
    print(f"  audio {hours:.2f} hours -> {hours / (wall / 60):.2f} audio hours per minute")
    keys = ("decode", "resample", "mel", "inference", "hash")
    sums = {key: sum(float(a.timings_s.get(key, 0.0)) for a in analyses) for key in keys}
    total = sum(float(a.timings_s.get("total", 0.0)) for a in analyses) or 1.0
    n = max(len(analyses), 1)
    shares = ", ".join(f"{key} {100 * v / total:.0f}% ({1000 * v / n:.0f} ms)"
                       for key, v in sums.items())
    print(f"  analysis time per track {total / n:.3f} s in a worker (first track: {k} patches): "
          f"{shares}")
    peaks = sorted(sampler.child_peak.values(), reverse=True)
    print(f"  peak RSS: main process {mb(sampler.main_peak)}; workers "
          + (", ".join(mb(p) for p in peaks[:workers]) if peaks else "-")
          + (f" ({len(peaks)} worker processes seen)" if peaks else ""))
    return analyses, s1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="a folder of audio files")
    ap.add_argument("--workers", "-j", type=int, default=None, help="worker processes (default: CPU cores)")
    ap.add_argument("--copies", type=int, default=10_000, help="files in the rescan test (0: skip)")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="where the temporary library and links go (default: a new temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--patches", "-k", type=int, default=None,
                    help="patches per track (default: the analysis default, DEFAULT_PATCHES)")
    ap.add_argument("--configs", default="",
                    help="extra first scans with WORKERSxTHREADS layouts, e.g. 2x1,1x2,3x1")
    ap.add_argument("--no-old", action="store_true",
                    help="skip the first scan with the previous default (msd-musicnn, k=32)")
    args = ap.parse_args()

    from deejai.engine.index import open_index
    from deejai.engine.library import Library
    from deejai.engine.pool import default_workers
    from deejai.engine.scan import scan
    from deejai.models import DEFAULT_MODEL

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="deejai-bench-scan-"))
    work.mkdir(parents=True, exist_ok=True)
    workers = args.workers or default_workers()
    lib = Library(work / "library.sqlite")
    from deejai.engine.analyse import DEFAULT_PATCHES

    k = DEFAULT_PATCHES if args.patches is None else args.patches
    print(f"library {lib.path}; {workers} workers; {os.cpu_count()} CPU cores; "
          f"{k or 'every'} patches per track; model {DEFAULT_MODEL}")

    # ---------------------------------------------------------------- 1. first scan
    analyses, s1 = first_scan(lib, args.dir, workers=workers, threads=1, patches=args.patches,
                              model=None, label=f"first scan (default: {workers} workers x 1 thread)")
    layouts = [c for c in (args.configs.split(",") if args.configs else []) if c]
    for layout in layouts:
        w, t = (int(x) for x in layout.lower().split("x"))
        other = Library(work / f"library-{w}x{t}.sqlite")
        first_scan(other, args.dir, workers=w, threads=t, patches=args.patches, model=None,
                   label=f"first scan, {w} workers x {t} threads")
        other.close()
    if not args.no_old:
        old = Library(work / "library-old.sqlite")
        first_scan(old, args.dir, workers=workers, threads=1, patches=32, model="msd-musicnn",
                   label=f"first scan, the previous default (msd-musicnn fp32, k=32, "
                         f"{workers} workers)")
        old.close()

    # ---------------------------------------------------------------- 2. unchanged rescan
    t0 = time.monotonic()
    s2 = scan(lib, [args.dir], workers=workers)
    dt = time.monotonic() - t0
    print("\nunchanged rescan")
    print(f"  {s2.unchanged} unchanged of {s2.files} files in {dt:.3f} s "
          f"({1000 * dt / max(s2.files, 1):.3f} s per 1000 files)")

    # ---------------------------------------------------------------- 3. 10,000-file rescan
    if args.copies > 0 and analyses:
        big = work / "links"
        ok = [a for a in analyses]
        made = 0
        kind = "hard links"
        t0 = time.monotonic()
        with lib.transaction():
            for i in range(args.copies):
                src = ok[i % len(ok)]
                folder = big / f"{i // 500:03d}"
                folder.mkdir(parents=True, exist_ok=True)
                dst = folder / f"{i:05d} {os.path.basename(src.path)}"
                try:
                    os.link(src.path, dst)
                except OSError:
                    os.symlink(src.path, dst)
                    kind = "symbolic links"
                st = os.stat(dst)
                lib.save_analysis(dataclasses.replace(src, path=str(dst), size=st.st_size,
                                                      mtime_ns=st.st_mtime_ns))
                made += 1
        print(f"\n{made} {kind} entered into the library in {time.monotonic() - t0:.1f} s")
        open_index(lib, DEFAULT_MODEL)  # bring the sidecar up to date outside the timing

        roots = [str(args.dir.resolve()), str(big.resolve())]
        opened: list[str] = []

        def audit(event: str, event_args: tuple) -> None:
            if event == "open" and event_args and isinstance(event_args[0], (str, bytes, os.PathLike)):
                p = os.fsdecode(event_args[0])
                if any(p.startswith(r) for r in roots):
                    opened.append(p)

        sys.addaudithook(audit)
        t0 = time.monotonic()
        s3 = scan(lib, [args.dir, big], workers=workers)
        dt = time.monotonic() - t0
        print(f"unchanged rescan of {s3.files} files: {dt:.2f} s "
              f"({1000 * dt / max(s3.files, 1):.3f} s per 1000 files), "
              f"{s3.unchanged} unchanged, {len(opened)} files opened, "
              f"{s3.duplicates} duplicates marked")
    lib.close()
    if not args.keep and args.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
