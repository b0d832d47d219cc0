"""Daemon round-trip latency and throughput over the Unix socket.

Builds a library of synthetic tracks (clustered random vectors, written through
:class:`deejai.engine.library.Library`, no audio), starts a real ``deejai serve`` process on
it, and prints:

* ``playlist.join`` (two waypoints, ``n`` tracks between) round-trip latency from one client:
  p50 / p90 / p99 / max over ``--requests`` calls (target: p50 < 20 ms on 10,000 tracks);
* ``--clients`` clients at once, each in its own thread with its own connection, asking for
  playlists in a loop for ``--seconds``: requests per second, errors (target 0), and the
  daemon's resident memory before and after (``--clients 0`` skips this);
* the stall test (issue 14): one client keeps ``--stall-batches`` batches of 100
  ``playlist.join`` outstanding while another asks ``engine.status`` in a loop for
  ``--stall-seconds``: p50 / p99 / max of the status round trip, and the flood's joins per
  second (``--stall-seconds 0`` skips this).

Usage::

    python benchmarks/rpc.py                      # 10,000 tracks, 50 clients, 30 s
    python benchmarks/rpc.py --tracks 2000 --clients 10 --seconds 5
    python benchmarks/rpc.py --requests 0 --clients 0 --stall-seconds 20   # the stall only
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from deejai.models import DEFAULT_MODEL


def build_library(home: Path, n_tracks: int, dim: int = 200, n_tags: int = 50,
                  clusters: int = 40, seed: int = 0) -> float:
    """Write ``n_tracks`` synthetic tracks into ``home``'s library; returns seconds taken."""
    from deejai.engine.catalogue import l2_normalise
    from deejai.engine.config import paths
    from deejai.engine.library import Library

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    t0 = time.perf_counter()
    with Library(paths().library_file) as lib, lib.transaction():
        for i in range(n_tracks):
            c = i % clusters
            patches = centres[c] + 0.6 * rng.standard_normal((4, dim)).astype(np.float32)
            vec = l2_normalise(patches.mean(axis=0))
            artist = f"Artist {i % 500}"
            lib.save_analysis(SimpleNamespace(
                path=f"/bench/{artist}/{i:05d} track {i}.mp3",
                size=4_000_000 + i, mtime_ns=1_700_000_000_000_000_000 + i,
                duration_s=float(120 + (i * 37) % 240),
                tags={"artist": artist, "title": f"Track {i}", "album": f"Album {i % 900}"},
                audio_hash=f"{rng.integers(0, 2**63):016x}{i:08x}",
                model=DEFAULT_MODEL,
                patch_vectors=patches,
                vector=vec,
                intro=l2_normalise(patches[0]),
                outro=l2_normalise(patches[-1]),
                tag_probs=rng.random(n_tags).astype(np.float32),
            ))
    return time.perf_counter() - t0


def start_daemon(home: Path) -> tuple[subprocess.Popen, str]:
    from deejai.engine.rpc import Client

    env = dict(os.environ, DEEJAI_HOME=str(home))
    env.pop("DEEJAI_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "deejai.ui_cli.main", "serve"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = str(home / "run" / "deejai.sock")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with status {proc.returncode}")
        client = Client.connect_or_none(sock, timeout=1.0)
        if client is not None:
            client.close()
            return proc, sock
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("the daemon did not start within 60 s")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def stall(sock: str, ids: list[int], *, seconds: float, n: int, batches: int,
          batch_size: int = 100) -> None:
    """Print engine.status latency from one connection while another floods the daemon with
    batches of ``batch_size`` playlist.join, keeping ``batches`` of them outstanding."""
    stop = threading.Event()
    joins = [0]
    errors: list[str] = []
    started = threading.Event()

    def flood() -> None:
        rng = np.random.default_rng(7)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        f = s.makefile("rb")

        def send_batch(k: int) -> None:
            pairs = [rng.choice(ids, 2, replace=False) for _ in range(batch_size)]
            s.sendall((json.dumps([
                {"jsonrpc": "2.0", "id": f"{k}-{i}", "method": "playlist.join",
                 "params": {"waypoints": [int(a), int(b)], "n": n}}
                for i, (a, b) in enumerate(pairs)]) + "\n").encode())

        sent = 0
        for _ in range(batches):
            send_batch(sent)
            sent += 1
        started.set()
        try:
            while not stop.is_set():
                line = f.readline()
                if not line:
                    break
                replies = json.loads(line)
                joins[0] += sum(1 for r in replies if "result" in r)
                errors.extend(r["error"]["message"] for r in replies if "error" in r)
                send_batch(sent)
                sent += 1
        finally:
            s.close()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    started.wait(30)
    time.sleep(1.0)  # let the flood queue up
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    f = s.makefile("rb")
    lat: list[float] = []
    joins0, t_start = joins[0], time.perf_counter()
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        t0 = time.perf_counter()
        s.sendall(b'{"jsonrpc":"2.0","id":%d,"method":"engine.status"}\n' % k)
        reply = json.loads(f.readline())
        lat.append(1000 * (time.perf_counter() - t0))
        if "result" not in reply:
            errors.append(str(reply))
        k += 1
        time.sleep(0.01)
    rate = (joins[0] - joins0) / (time.perf_counter() - t_start)
    stop.set()
    s.close()
    thread.join(60)
    print(f"engine.status while another client keeps {batches} batches of {batch_size} "
          f"playlist.join (n={n}) outstanding, {seconds:g} s: {len(lat)} calls, "
          f"p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms, "
          f"max {max(lat):.1f} ms; the flood ran at {rate:.0f} joins/s, "
          f"{len(errors)} errors")
    if errors:
        print("first errors:", *sorted(set(errors))[:3], sep="\n  ")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracks", type=int, default=10_000)
    ap.add_argument("--n", type=int, default=10, help="tracks between the two waypoints")
    ap.add_argument("--requests", type=int, default=500, help="sequential joins for latency")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--stall-seconds", type=float, default=10.0,
                    help="how long to measure engine.status under a flood of batches (0: skip)")
    ap.add_argument("--stall-batches", type=int, default=16,
                    help="batches of 100 playlist.join the flooding client keeps outstanding")
    ap.add_argument("--home", type=Path, default=None,
                    help="DEEJAI_HOME to use (default: a new temporary folder)")
    args = ap.parse_args(argv)

    import psutil

    from deejai.engine.rpc import Client

    tmp = None
    if args.home is None:
        tmp = tempfile.TemporaryDirectory(prefix="deejai-bench-rpc-")
        args.home = Path(tmp.name)
    home = args.home.resolve()
    os.environ["DEEJAI_HOME"] = str(home)
    os.environ.pop("DEEJAI_SOCKET", None)

    from deejai.engine.config import paths

    if not paths().library_file.exists():
        secs = build_library(home, args.tracks)
        print(f"library: {args.tracks} synthetic tracks written in {secs:.1f} s ({home})")
    proc, sock = start_daemon(home)
    daemon = psutil.Process(proc.pid)
    try:
        with Client.connect(sock) as c:
            ids = [t["id"] for t in c.tracks(limit=None)]
            print(f"daemon pid {proc.pid}, {len(ids)} tracks, python {sys.version.split()[0]}, "
                  f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
            t0 = time.perf_counter()
            c.join(waypoints=[ids[0], ids[-1]], n=args.n)
            print(f"first join (builds catalogue + index): {1000 * (time.perf_counter() - t0):.0f} ms")
        if args.stall_seconds > 0:
            stall(sock, ids, seconds=args.stall_seconds, n=args.n, batches=args.stall_batches)
        if args.requests > 0:
            run_latency(sock, ids, args)
        if args.clients > 0:
            run_load(sock, ids, args, daemon)
        with Client.connect(sock) as c:
            print(f"daemon alive after the load: pid {c.ping()['pid']}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if tmp is not None:
            tmp.cleanup()


def run_latency(sock: str, ids: list[int], args: argparse.Namespace) -> None:
    """Sequential joins over the socket, then the same in process."""
    from deejai.engine.rpc import Client
    from deejai.engine.service import Engine

    rng = np.random.default_rng(1)
    pairs = [tuple(int(x) for x in rng.choice(ids, 2, replace=False))
             for _ in range(args.requests)]
    with Client.connect(sock) as c:
        lat = []
        for a, b in pairs:
            t0 = time.perf_counter()
            pl = c.join(waypoints=[a, b], n=args.n)
            lat.append(1000 * (time.perf_counter() - t0))
            assert len(pl["entries"]) == args.n + 2
        print(f"playlist.join n={args.n} round trip over {args.requests} calls: "
              f"p50 {percentile(lat, 50):.2f} ms, p90 {percentile(lat, 90):.2f} ms, "
              f"p99 {percentile(lat, 99):.2f} ms, max {max(lat):.2f} ms")
        t0 = time.perf_counter()
        for _ in range(200):
            c.ping()
        print(f"engine.ping round trip: {1000 * (time.perf_counter() - t0) / 200:.3f} ms")
    # the same joins on an Engine in this process: what the socket adds is the difference
    with Engine() as engine:
        engine.join(waypoints=[ids[0], ids[-1]], n=args.n)
        local = []
        for a, b in pairs:
            t0 = time.perf_counter()
            engine.join(waypoints=[a, b], n=args.n)
            local.append(1000 * (time.perf_counter() - t0))
    print(f"the same joins in process (no daemon): p50 {percentile(local, 50):.2f} ms, "
          f"p99 {percentile(local, 99):.2f} ms; socket + JSON add "
          f"{percentile(lat, 50) - percentile(local, 50):.2f} ms at p50")


def run_load(sock: str, ids: list[int], args: argparse.Namespace, daemon) -> None:
    """``args.clients`` clients asking for playlists in a loop for ``args.seconds``."""
    from deejai.engine.rpc import Client

    rss_before = daemon.memory_info().rss
    counts = [0] * args.clients
    errors: list[str] = []
    stop_at = time.monotonic() + args.seconds
    barrier = threading.Barrier(args.clients + 1)

    def worker(k: int) -> None:
        r = np.random.default_rng(100 + k)
        try:
            client = Client.connect(sock, timeout=30)
        except Exception as exc:
            errors.append(f"connect: {exc}")
            barrier.wait()
            return
        barrier.wait()
        with client:
            while time.monotonic() < stop_at:
                a, b = (int(x) for x in r.choice(ids, 2, replace=False))
                try:
                    if k % 5 == 4:
                        pl = client.radio(seeds=[a], n=args.n)
                        ok = len(pl["entries"]) == args.n
                    else:
                        pl = client.join(waypoints=[a, b], n=args.n)
                        ok = len(pl["entries"]) == args.n + 2
                    if not ok:
                        errors.append("wrong playlist length")
                    counts[k] += 1
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True)
               for k in range(args.clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    cpu0 = daemon.cpu_times()
    for t in threads:
        t.join(args.seconds + 120)
    elapsed = time.perf_counter() - t0
    cpu1 = daemon.cpu_times()
    rss_after = daemon.memory_info().rss
    total = sum(counts)
    print(f"{args.clients} clients for {args.seconds:g} s (4/5 join, 1/5 radio, n={args.n}): "
          f"{total} playlists, {total / elapsed:.1f} requests/s, {len(errors)} errors, "
          f"per client min {min(counts)} max {max(counts)}")
    print(f"daemon CPU during the load: "
          f"{(cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed:.2f} cores")
    print(f"daemon RSS: before {rss_before / 2**20:.1f} MiB, after {rss_after / 2**20:.1f} MiB")
    if errors:
        print("first errors:", *sorted(set(errors))[:5], sep="\n  ")


if __name__ == "__main__":
    main()
