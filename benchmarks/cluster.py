"""The cost of Dask: the same first scan on the local worker pool and on a Dask cluster.

Prints figures, asserts nothing. In temporary libraries (never the user's), in one run and on
the same files, it alternates first scans of DIR

* ``local``: the local worker pool, ``--workers`` processes;
* ``dask``: a ``distributed.LocalCluster`` on the loopback with as many worker processes (one
  thread each), the workers reading the files by path;
* ``dask+ship`` (unless ``--no-ship``): the same cluster, each file's bytes sent with its task
  (``--ship-audio``);

``--repeat`` times each, and reports per configuration the median of

* **steady tracks/s**: tracks finished after every worker had finished one, divided by the
  seconds they took (start-up — spawning, loading the model — is left out of both);
* **start-up s**: from the start of the scan (or of connecting to the cluster) to the first
  result;
* **CPU-s per track**: CPU seconds of every process (this one, the pool's workers, the
  cluster's scheduler and workers) per track, over the same steady part: on a busy machine
  less noisy than the time;
* the **Dask overhead per track**: how much longer a track takes on the cluster than in the
  pool, in percent of the pool's time (the target: under 10 %).

Then a **paper estimate** for an archive of ``--archive`` tracks on ``--machines`` machines of
``--cores`` cores, from the pool's measured seconds per track per process and the measured
overhead: the hours of computing; the single SQLite writer's measured commit rate (it must keep
up with the whole cluster) and the scheduler's load (distributed's documentation: about 1 ms
of overhead per task); and the bytes the file server (or ``--ship-audio``) must carry, with
the hours that takes on a 1 and a 10 Gbit/s link.

The figures depend on the machine and on what else runs on it: the script prints the load
average before and after. Usage::

    python benchmarks/cluster.py /path/to/music --workers 2 --repeat 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and every process below it: the local
    pool's workers, the LocalCluster's scheduler (in this process) and worker processes."""
    import psutil

    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system  # reaped children too
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.Error:
            continue
        total += c.user + c.system
    return total


def load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux
        return "?"


class Clock:
    """``on_progress`` recorder: when each result arrived, and the CPU seconds used from the
    moment every worker had finished a track (``workers`` results) to the last result."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.t0 = time.monotonic()
        self.marks: list[tuple[float, int]] = []
        self.cpu: list[tuple[int, float]] = []  # (done, CPU seconds) when warm and at the end

    def __call__(self, done: int, total: int, errors: int, rate: float, eta) -> None:
        if not done:
            return
        self.marks.append((time.monotonic(), done))
        if (not self.cpu and done >= self.workers) or (done == total and len(self.cpu) == 1):
            self.cpu.append((done, cpu_seconds()))

    def figures(self) -> tuple[float, float, float]:
        """(steady tracks/s, seconds to the first result, steady CPU seconds per track)."""
        first = self.marks[0][0] - self.t0
        warm = next(((t, d) for t, d in self.marks if d >= self.workers), self.marks[0])
        t_end, d_end = self.marks[-1]
        steady = (d_end - warm[1]) / (t_end - warm[0]) if t_end > warm[0] else float("nan")
        cpu = float("nan")
        if len(self.cpu) == 2 and self.cpu[1][0] > self.cpu[0][0]:
            cpu = (self.cpu[1][1] - self.cpu[0][1]) / (self.cpu[1][0] - self.cpu[0][0])
        return steady, first, cpu


def run_local(folder: Path, workers: int, patches, tmp: Path, n: int):
    from deejai.engine.library import Library
    from deejai.engine.scan import scan

    clock, analyses = Clock(workers), []
    with Library(tmp / f"local-{n}.sqlite") as lib:
        s = scan(lib, [folder], workers=workers, patches=patches, update_index=False,
                 on_progress=clock, on_result=analyses.append)
    assert s.errors == 0, s
    return clock, s, analyses


def run_dask(folder: Path, address: str, workers: int, patches, tmp: Path, n: int, ship: bool):
    from deejai.engine.cluster import ClusterExecutor
    from deejai.engine.library import Library
    from deejai.engine.scan import scan

    clock = Clock(workers)  # connecting (the model check, the plugin) counts as start-up
    ex = ClusterExecutor(address, ship_audio=ship)
    try:
        with Library(tmp / f"dask-{n}-{ship}.sqlite") as lib:
            s = scan(lib, [folder], executor=ex, patches=patches, update_index=False,
                     on_progress=clock)
    finally:
        ex.shutdown()
    assert s.errors == 0, s
    return clock, s


def writer_rate(analyses, tmp: Path, copies: int = 10) -> float:
    """Tracks per second the single writer commits (batches of 32, as a scan does)."""
    import dataclasses

    from deejai.engine.library import Library

    items = [dataclasses.replace(a, path=f"/archive/{i}/{a.path}") for i in range(copies)
             for a in analyses]
    with Library(tmp / "writer.sqlite") as lib:
        t0 = time.perf_counter()
        for start in range(0, len(items), 32):
            with lib.transaction():
                for a in items[start:start + 32]:
                    lib.save_analysis(a)
        return len(items) / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                    help="processes of the pool, and of the cluster (default 2)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each configuration")
    ap.add_argument("--patches", type=int, default=None, help="patches per track (default 16)")
    ap.add_argument("--no-ship", action="store_true", help="skip the --ship-audio runs")
    ap.add_argument("--archive", type=int, default=500_000, help="tracks of the estimate")
    ap.add_argument("--machines", type=int, default=10)
    ap.add_argument("--cores", type=int, default=8)
    args = ap.parse_args(argv)

    import distributed

    from deejai.engine.scan import walk

    files = walk([args.folder])
    if not files:
        print(f"no audio files under {args.folder}")
        return 1
    size_b = sum(f.size for f in files)
    print(f"{len(files)} files, {size_b / 2**20:.0f} MB, under {args.folder}")
    print(f"{args.workers} processes x 1 thread; {os.cpu_count()} CPUs; load average {load()}")
    print("the machine may be shared with other work: the figures are only as quiet as it is")
    with tempfile.TemporaryDirectory(prefix="deejai-bench-cluster-") as tmpdir:
        tmp = Path(tmpdir)
        os.environ.setdefault("DEEJAI_HOME", str(tmp / "home"))
        cluster = distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0")
        results: dict[str, list[tuple[float, float, float]]] = {}
        durations: list[float] = []
        analyses = []
        try:
            configs = ["local", "dask"] + ([] if args.no_ship else ["dask+ship"])
            for n in range(args.repeat):
                for name in configs:
                    t0 = time.monotonic()
                    if name == "local":
                        clock, s, analyses = run_local(args.folder, args.workers, args.patches,
                                                       tmp, n)
                        durations = [a.duration_s for a in analyses]
                    else:
                        clock, s = run_dask(args.folder, cluster.scheduler_address,
                                            args.workers, args.patches, tmp, n,
                                            ship=name == "dask+ship")
                    wall = time.monotonic() - t0
                    steady, first, cpu = clock.figures()
                    results.setdefault(name, []).append((steady, first, wall, cpu))
                    print(f"  run {n + 1} {name:10s} {steady:6.2f} tracks/s steady, first result "
                          f"after {first:5.1f} s, {wall:6.1f} s in all, {cpu:.3f} CPU-s per "
                          f"track ({s.added} tracks)", flush=True)
        finally:
            cluster.close()
        print(f"load average after: {load()}")
        med = {k: tuple(statistics.median(x[i] for x in v) for i in range(4))
               for k, v in results.items()}
        print("\nmedian of", args.repeat, "runs:")
        print(f"  {'':10s} {'tracks/s':>9s} {'start-up s':>11s} {'whole scan s':>13s} "
              f"{'CPU-s/track':>12s}")
        for name, (steady, first, wall, cpu) in med.items():
            print(f"  {name:10s} {steady:9.2f} {first:11.1f} {wall:13.1f} {cpu:12.3f}")
        local = med["local"][0]
        print("Dask overhead per track, in % of the pool's (target < 10 %):")
        for name in med:
            if name == "local":
                continue
            over = (local / med[name][0] - 1.0) * 100.0
            # each run against the local run just before it: less exposed to a load that changes
            pairs = [(a[0] / b[0] - 1.0) * 100.0 for a, b in zip(results["local"], results[name])]
            cpu_over = (med[name][3] / med["local"][3] - 1.0) * 100.0
            print(f"  {name:10s} time {over:+.1f} % (median tracks/s); run by run "
                  f"{', '.join(f'{p:+.0f} %' for p in pairs)}; CPU {cpu_over:+.1f} % "
                  "(CPU-s per track, all processes)")
        # the cost of one track on one core: the pool's wall time per track and process (what
        # this machine gave, shared or not), and its CPU seconds per track (a core of its own)
        per_track_s = args.workers / local
        cpu_track_s = med["local"][3]
        mean_dur = statistics.fmean(durations) if durations else float("nan")
        print(f"\nper track: {per_track_s:.3f} process-seconds of wall time, {cpu_track_s:.3f} "
              f"CPU-seconds (mean track {mean_dur / 60:.1f} min, "
              f"{size_b / len(files) / 2**20:.1f} MB)")
        writer = writer_rate(analyses, tmp)
        print(f"single writer: {writer:.0f} tracks/s committed (batches of 32)")

        procs = args.machines * args.cores
        over = max(0.0, local / med["dask"][0] - 1.0, med["dask"][3] / cpu_track_s - 1.0)
        fast = procs / (cpu_track_s * (1.0 + over))   # tracks/s, dedicated cores
        slow = procs / (per_track_s * (1.0 + over))   # tracks/s, cores as busy as these
        hours = args.archive / fast / 3600, args.archive / slow / 3600
        total_b = args.archive * size_b / len(files)
        print(f"\npaper estimate: {args.archive:,} tracks like these on {args.machines} machines "
              f"x {args.cores} cores ({procs} Dask worker processes, 1 thread each), cores like "
              f"this machine's, Dask's overhead taken as {over * 100:.0f} %:")
        print(f"  computing: {fast:.0f} tracks/s -> {hours[0]:.1f} hours on cores of their own, "
              f"{slow:.0f} tracks/s -> {hours[1]:.1f} hours on cores as busy as these (one "
              f"process alone: {args.archive * cpu_track_s / 3600 / 24:.1f} to "
              f"{args.archive * per_track_s / 3600 / 24:.1f} days)")
        print(f"  the single writer needs {fast / writer * 100:.0f} % of its measured capacity; "
              f"the scheduler {fast:.0f} tasks/s (distributed's docs: about 1 ms of overhead "
              "per task, so ~1000 tasks/s)"
              + ("; the scheduler is then the limit" if fast > 1000 else ""))
        need = total_b / (hours[0] * 3600)
        print(f"  reading the music: {total_b / 2**40:.2f} TiB, up to {need / 1e6:.0f} MB/s to "
              "keep the workers busy, from the shared filesystem (or through the scheduler "
              "with --ship-audio)")
        for label, link in (("1 Gbit/s", 117e6), ("10 Gbit/s", 1170e6)):
            io_h = total_b / link / 3600
            lo, hi = max(io_h, hours[0]), max(io_h, hours[1])
            print(f"    a file server on {label} (~{link / 1e6:.0f} MB/s): {io_h:.1f} hours to "
                  f"read it -> the scan takes ~{lo:.1f} to {hi:.1f} hours"
                  f"{', bound by the network' if io_h >= hours[1] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
