"""``deejai scan``, ``deejai status`` and ``deejai tracks``: the library from the command line.

All three go through the Engine facade (:func:`deejai.ui_cli.common.get_engine`): the daemon
when it runs, else an in-process engine. ``scan`` starts a background scan job and follows its
``scan.progress`` events with a progress bar (files done/total, tracks per second, ETA, errors)
until ``scan.finished``, then prints what changed. Ctrl-C cancels an in-process scan — the
tracks analysed so far are committed — and detaches from a daemon's scan, which goes on.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any

import click

from deejai.ui_cli.common import echo_json, err_console, format_duration, get_engine, uses_daemon

__all__ = ["scan", "status", "tracks", "EXIT_SCAN_STOPPED"]

#: Exit status of ``deejai scan`` when the daemon running the scan stopped (or died) before the
#: scan finished: what was analysed is kept, and the next ``deejai scan`` goes on from there.
EXIT_SCAN_STOPPED = 3

_REPORT_FIELDS = ("added", "updated", "moved", "removed", "unchanged", "errors", "duplicates")


def _eta(eta_s: float | None) -> str:
    return "-" if eta_s is None else format_duration(eta_s)


class _Follower:
    """Collects a job's events from any thread; the command's thread waits on it."""

    def __init__(self) -> None:
        self.job: str | None = None
        self.progress: dict[str, Any] = {}
        self.finished = threading.Event()
        self.final: dict[str, Any] | None = None
        self._early: list[tuple[str, dict]] = []
        self._lock = threading.Lock()

    def __call__(self, event: str, params: dict) -> None:
        with self._lock:
            if self.job is None:  # events that arrive before eng.scan() returned the job id
                self._early.append((event, params))
                return
        self._handle(event, params)

    def start(self, job: str) -> None:
        with self._lock:
            self.job = job
            early, self._early = self._early, []
        for event, params in early:
            self._handle(event, params)

    def _handle(self, event: str, params: dict) -> None:
        if params.get("job") != self.job:
            return
        if event == "scan.progress":
            self.progress = dict(params)
        elif event == "scan.finished":
            self.final = dict(params)
            self.finished.set()


def _wait(eng: Any, follower: _Follower, job: str, show: Any, *,
          until_progress: bool = False) -> Any:
    """Wait for the job to end, calling ``show(progress)``; returns the final scan_status.

    ``until_progress``: return None as soon as the job reports progress (still running)."""
    last_poll = time.monotonic()
    while not follower.finished.wait(0.2):
        if until_progress and follower.progress:
            return None
        show(follower.progress)
        if time.monotonic() - last_poll >= 1.0:  # in case an event was lost (daemon restart)
            last_poll = time.monotonic()
            st = eng.scan_status(job)
            if st.get("state") != "running":
                return st
            if not follower.progress and not until_progress:
                follower.progress = st
    show(follower.progress)
    return eng.scan_status(job)


@click.command("scan")
@click.argument("paths", nargs=-1, type=click.Path(path_type=str))
@click.option("-j", "--jobs", "workers", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: the 'workers' setting, else one per CPU core).")
@click.option("--retry-errors", is_flag=True,
              help="Analyse again files that failed before, even if they did not change.")
@click.option("-k", "--patches", type=click.IntRange(min=0), default=None, metavar="K",
              help="Patches (~3 s each) analysed per track: fewer is faster, more is closer to "
                   "the whole track; 0 = every patch (default: the 'patches' setting, else 16).")
@click.option("--prune", is_flag=True,
              help="Also remove the tracks under folders that are missing, empty or cannot be "
                   "read (by default they are kept: an unmounted drive loses nothing).")
@click.option("--executor", metavar="ADDRESS",
              help="Analyse on the workers of a running Dask cluster, e.g. "
                   "tcp://10.0.0.2:8786 (see docs/cluster.md); 'local' (default: the "
                   "'executor' setting) analyses on this machine.")
@click.option("--ship-audio/--no-ship-audio", "ship_audio", default=None,
              help="With --executor: send each file to the workers instead of letting them "
                   "read it by path (for workers that do not share the music's filesystem).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and no report.")
@click.option("--json", "as_json", is_flag=True, help="Print the final scan status as JSON.")
@click.pass_context
def scan(ctx: click.Context, paths: tuple[str, ...], workers: int | None, retry_errors: bool,
         patches: int | None, prune: bool, executor: str | None, ship_audio: bool | None,
         quiet: bool, as_json: bool) -> None:
    """Scan music folders PATHS into the library.

    Without PATHS: the 'music_dirs' setting, else the folders of the last scan, else your
    music folder (~/Music). The first scan analyses every audio file; later scans only look
    at new, changed, moved and removed files. Files that cannot be analysed are listed by
    `deejai status --errors`.

    Exit status: 0 when the scan finished; 3 when the daemon running it stopped before the
    end (what it analysed is kept; scan again to go on); 130 after Ctrl-C.

    A track is removed only when its file is known to be gone. Tracks under a folder that
    cannot be read, an empty folder or a missing folder (an unmounted drive) are kept, and
    the report says so; --prune removes them. Files that come back get their old ids back.

    With --executor, the files are analysed on a Dask cluster (`dask scheduler`, then
    `dask worker ADDRESS --nworkers N --nthreads 1` on each machine, with the same deejai);
    this machine still walks the folders and writes the library.

    \b
    Examples:
      deejai scan ~/Music
      deejai scan -j 2 ~/Music /media/usb/music
      deejai scan --prune /media/usb/music    # the drive is gone for good
      deejai scan --executor tcp://10.0.0.2:8786 /srv/music
      deejai scan --executor tcp://10.0.0.2:8786 --ship-audio ~/Music
    """
    from deejai.engine.errors import ConnectionLost, DeejaiError

    for p in paths:
        if not prune and not os.path.exists(p):
            # a typo, or a drive that is not mounted: nothing is removed either way
            raise click.BadParameter(
                f"{p!r} does not exist (nothing is removed; --prune removes the tracks the "
                "library holds under it)", param_hint="PATHS")
    eng = get_engine(ctx)
    follower = _Follower()
    unsubscribe = eng.subscribe(follower)
    tracks_before = 0
    try:
        # absolute paths: a daemon does not share this shell's working folder
        roots = [os.path.abspath(p) for p in paths] or _default_roots(eng, quiet or as_json)
        if uses_daemon(eng):
            tracks_before = int(eng.status().get("tracks") or 0)
        # only what was asked for: an older daemon knows none of these
        options: dict[str, Any] = {"prune": True} if prune else {}
        if executor is not None:
            options["executor"] = executor
        if ship_audio is not None:
            options["ship_audio"] = ship_audio
        job = eng.scan(paths=roots, workers=workers, retry_errors=retry_errors,
                       patches=patches, **options)["job"]
        follower.start(job)
        live = not quiet and not as_json
        if live and executor and executor.strip() not in ("local", "process", "thread"):
            err_console().print(f"analysing on the Dask cluster at {executor.strip()}",
                                highlight=False)
        final = _follow(eng, follower, job, live)
    except ConnectionLost:
        _daemon_went_away(tracks_before)
        ctx.exit(EXIT_SCAN_STOPPED)
    finally:
        try:
            unsubscribe()
        except DeejaiError:  # the connection is gone already
            pass
    summary = final.get("summary") or {}
    if final.get("state") == "failed":
        raise DeejaiError(final.get("error") or "the scan failed")
    interrupted = bool(final.pop("interrupted", False))
    if as_json:
        echo_json(final)
    elif not quiet:
        _report(summary, final)
    if interrupted:
        ctx.exit(130)


def _daemon_went_away(tracks_before: int) -> None:
    """Say that the daemon stopped mid-scan and how many new tracks its library kept."""
    from deejai.engine.config import paths
    from deejai.engine.library import Library

    console = err_console()
    console.print()  # below the progress bar
    kept = None
    try:
        with Library(paths().library_file) as lib:
            kept = max(0, int(lib.stats().get("tracks") or 0) - tracks_before)
    except Exception:  # the library is elsewhere (a daemon with another home) or locked
        pass
    done = f"{kept} new tracks kept" if kept is not None else "what it analysed is kept"
    console.print(f"the scan was stopped: the daemon went away before it finished; {done}. "
                  "Run `deejai scan` again to go on from there.", highlight=False, markup=False)


def _default_roots(eng: Any, quiet: bool) -> list[str] | None:
    """What ``deejai scan`` scans without folders: None (the engine's ``music_dirs``), the
    last scan's folders, or the platform's music folder; says which on stderr.

    Raises
    ------
    ConfigError
        When none of them exists.
    """
    import platformdirs

    from deejai.engine.config import load_settings
    from deejai.engine.errors import ConfigError

    configured = load_settings().get("music_dirs") or []
    if configured:
        roots, why = None, "the 'music_dirs' setting"
        shown = [str(p) for p in configured]
    else:
        last = (eng.status().get("last_scan") or {}).get("roots") or []
        music = platformdirs.user_music_dir()
        if last:
            roots, why = [str(r) for r in last], "the folders of the last scan"
        elif music and os.path.isdir(music):
            roots, why = [music], "your music folder; set 'music_dirs' in settings.toml to choose"
        else:
            raise ConfigError("no music folder to scan: give one (`deejai scan ~/Music`) or set "
                              "music_dirs in settings.toml")
        shown = roots
    if not quiet:
        err_console().print(f"scanning {', '.join(shown)} ({why})", highlight=False, markup=False)
    return roots


def _follow(eng: Any, follower: _Follower, job: str, live: bool) -> dict[str, Any]:
    console = err_console()
    if not live:
        try:
            return _wait(eng, follower, job, lambda p: None)
        except KeyboardInterrupt:
            return _interrupted(eng, follower, job, console)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    # no bar before the scan reports progress: a scan refused at once (a damaged library)
    # prints its one error line and nothing else
    try:
        final = _wait(eng, follower, job, lambda p: None, until_progress=True)
    except KeyboardInterrupt:
        return _interrupted(eng, follower, job, console)
    if final is not None:
        return final
    with Progress(
        TextColumn("[bold]scanning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TextColumn("{task.fields[errors]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("scan", total=None, rate="", eta="-", errors="")
        noted = [False]

        def show(p: dict[str, Any]) -> None:
            if not p:
                return
            if int(p.get("reanalyse") or 0) and not noted[0]:
                noted[0] = True
                bar.console.print(
                    f"{p['reanalyse']} tracks are analysed again with the model {p.get('model')} "
                    "(they have no vector of it yet: the library holds an older model's, or was "
                    "recovered; playlists use the vectors there are until every track has one)",
                    highlight=False)
            errors = int(p.get("errors") or 0)
            bar.update(
                task,
                completed=int(p.get("done") or 0),
                total=int(p.get("total") or 0) or None,
                rate=f"{float(p.get('rate') or 0.0):.1f} tracks/s",
                eta=_eta(p.get("eta_s")),
                errors=f"[red]{errors} errors[/red]" if errors else "0 errors",
            )

        try:
            return _wait(eng, follower, job, show)
        except KeyboardInterrupt:
            bar.stop()
            return _interrupted(eng, follower, job, console)


def _interrupted(eng: Any, follower: _Follower, job: str, console: Any) -> dict[str, Any]:
    if uses_daemon(eng):
        console.print(f"the scan goes on in the daemon (job {job}); follow it with `deejai status`")
        raise SystemExit(130)
    console.print("cancelling the scan; committing the tracks analysed so far (Ctrl-C again to quit)")
    eng.cancel_scan(job)
    try:
        final = _wait(eng, follower, job, lambda p: None)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    return {**final, "interrupted": True}


def _report(summary: dict[str, Any], final: dict[str, Any]) -> None:
    from rich.table import Table

    from deejai.ui_cli.common import console

    out = console()
    title = "scan cancelled" if final.get("state") == "cancelled" else "scan finished"
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name in _REPORT_FIELDS + (("reanalysed",) if summary.get("reanalysed") else ()):
        value = int(summary.get(name) or 0)
        style = "red" if name == "errors" and value else None
        table.add_row(name, f"[{style}]{value}[/{style}]" if style else str(value))
    table.add_row("time", format_duration(summary.get("elapsed_s")))
    out.print(table)
    for name, label in (("restored", "tracks came back with their old ids"),
                        ("retried", "files were tried again in a fresh worker (a worker died)")):
        if summary.get(name):
            out.print(f"{summary[name]} {label}", highlight=False)
    from rich.markup import escape

    for line in summary.get("skipped") or []:
        out.print(f"[yellow]skipped:[/yellow] {escape(line)}", highlight=False)
    for line in summary.get("kept_why") or []:
        out.print(f"[yellow]kept:[/yellow] {escape(line)}", highlight=False)
    if summary.get("errors"):
        out.print("see the failed files with `deejai status --errors`")


@click.command("status")
@click.option("--errors", "show_errors", is_flag=True, help="List the files that failed to scan.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, show_errors: bool, as_json: bool) -> None:
    """Show the library: tracks, hours, errors, duplicates, model, index and the last scan."""
    eng = get_engine(ctx)
    info = eng.status()
    failed = eng.tracks(errors=True, limit=None) if show_errors else None
    if as_json:
        if failed is not None:
            info = {**info, "error_tracks": failed}
        echo_json(info)
        return
    from rich.table import Table

    from deejai.ui_cli.common import console

    out = console()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("library", str(info.get("library_file") or info.get("path") or ""))
    table.add_row("tracks", f"{info.get('tracks', 0)} ({float(info.get('hours') or 0):.1f} hours)")
    table.add_row("errors", str(info.get("errors", 0)))
    table.add_row("duplicates", str(info.get("duplicates", 0)))
    if info.get("removed"):
        table.add_row("removed", f"{info['removed']} (kept in case their files come back)")
    table.add_row("model", str(info.get("model") or "-"))
    migration = info.get("migration")
    if migration and migration.get("done", 0) < migration.get("total", 0):
        table.add_row("new model", f"{migration['done']}/{migration['total']} tracks analysed "
                      f"with {migration['model']}; playlists use {migration.get('serving')} "
                      "until `deejai scan` has done the rest")
    index = info.get("index") or {}
    if index.get("damaged"):
        table.add_row("index", "damaged; the next playlist or scan rebuilds it")
    elif index.get("kind"):
        table.add_row("index", f"{index['kind']}, {index.get('ntotal', 0)} vectors"
                      + ("" if index.get("fresh") else " (stale)"))
    else:
        table.add_row("index", "not loaded")
    table.add_row("database", f"{int(info.get('size') or 0) / 1e6:.1f} MB")
    table.add_row("daemon", _daemon_line(ctx, eng))
    last = info.get("last_scan")
    if last:
        s = last.get("summary") or {}
        changes = ", ".join(f"{s.get(k, 0)} {k}" for k in _REPORT_FIELDS if s.get(k))
        cancelled = " - cancelled before it finished; `deejai scan` goes on" if s.get(
            "cancelled") else ""
        table.add_row("last scan", f"{last.get('finished') or last.get('started')}"
                      + (f" ({changes})" if changes else "") + cancelled)
    else:
        table.add_row("last scan", "never: run `deejai scan ~/Music`")
    job = info.get("scan") or {}
    if job.get("state") == "running":
        table.add_row("scanning", f"{job.get('done', 0)}/{job.get('total', 0)} files, "
                      f"ETA {_eta(job.get('eta_s'))}")
    out.print(table)
    if failed is not None:
        if not failed:
            out.print("no failed files")
        for t in failed:
            again = " (retried by the next scan)" if t.get("error_kind") == "transient" else ""
            out.print(f"[red]{t['path']}[/red]: {t.get('error') or 'unknown error'}{again}",
                      highlight=False)


def _daemon_line(ctx: click.Context, eng: Any) -> str:
    """Whether a daemon answered this command, in words."""
    if uses_daemon(eng):
        try:
            pid = eng.ping().get("pid")
        except Exception:  # it answered status a moment ago; say so without the pid
            pid = None
        return f"running (pid {pid})" if pid else "running"
    if (ctx.find_root().obj or {}).get("no_daemon"):
        return "not asked (--no-daemon)"
    return "not running (`deejai serve` starts it)"


@click.command("tracks")
@click.argument("query", nargs=-1)
@click.option("-n", "--limit", type=click.IntRange(min=0), default=50, show_default=True,
              help="At most this many tracks (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the tracks as a JSON list.")
@click.pass_context
def tracks(ctx: click.Context, query: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List tracks whose artist, title, album or path contain every word of QUERY.

    \b
    Examples:
      deejai tracks                 # the first 50 tracks
      deejai tracks battle epic     # tracks matching both words
    """
    eng = get_engine(ctx)
    rows = eng.tracks(query=" ".join(query) or None, limit=limit or None)
    if as_json:
        echo_json(rows)
        return
    from rich.table import Table

    from deejai.ui_cli.common import console

    out = console()
    if not rows:
        out.print("no tracks match" if query else "the library is empty: run `deejai scan ~/Music`")
        return
    table = Table(show_lines=False)
    table.add_column("id", justify="right")
    table.add_column("artist")
    table.add_column("title")
    table.add_column("album")
    table.add_column("time", justify="right")
    for t in rows:
        title = t.get("title") or os.path.splitext(os.path.basename(t.get("path") or ""))[0]
        table.add_row(str(t["id"]), t.get("artist") or "", title, t.get("album") or "",
                      format_duration(t.get("duration_s")))
    out.print(table)
