"""``deejai doctor``: check the library's files; rebuild a damaged database.

It runs in this process, on the files, never through the daemon: recovering replaces the
database file, so the daemon must be stopped first (``deejai stop``).
"""
from __future__ import annotations

import click

__all__ = ["doctor"]


@click.command("doctor")
@click.option("--recover", is_flag=True,
              help="Rebuild a damaged database from what it still holds (the damaged file is "
                   "kept beside it); then run `deejai scan` to analyse what was lost.")
@click.option("--reset", is_flag=True,
              help="Move an emptied (0-byte) or damaged database aside and start a new, "
                   "empty library.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def doctor(ctx: click.Context, recover: bool, reset: bool, as_json: bool) -> None:
    """Check the library: the database (SQLite's integrity check), its state file and the
    vector index files.

    \b
    A damaged database is never written to; deejai says so in one line and points here:
      deejai doctor              # what is wrong (exit status 1 when something is)
      deejai stop                # recovery replaces the file: stop the daemon first
      deejai doctor --recover    # rebuild it; the damaged file is kept beside it
      deejai scan                # analyse again the tracks whose rows were lost
    Index files (library.<model>.index.npz) are caches: a damaged one is rebuilt by the next
    playlist or scan, with one warning line.
    """
    from deejai.engine import doctor as doc
    from deejai.engine.config import paths
    from deejai.engine.errors import ConfigError, DaemonNotRunning, DeejaiError
    from deejai.engine.scan import scan_lock
    from deejai.ui_cli.common import echo_json

    if recover and reset:
        raise ConfigError("give --recover or --reset, not both")
    db = paths().library_file
    report = doc.diagnose(db)
    if recover or reset:
        from deejai.engine.rpc import connect

        try:
            client = connect()
        except DaemonNotRunning:
            client = None
        except DeejaiError:  # a daemon that refuses us is still a daemon
            client = True
        if client is not None:
            if client is not True:
                client.close()
            raise DeejaiError("the daemon is running: stop it first (`deejai stop`), since "
                              "this replaces the library file it has open")
        with scan_lock(_LockTarget(db)):
            if recover:
                if report["database"] != "damaged":
                    click.echo(f"{db}: nothing to recover ({report['database']})")
                    return
                result = doc.recover(db)
                if as_json:
                    echo_json(result)
                    return
                expected = result.get("expected")
                of = f" of {expected}" if isinstance(expected, int) else ""
                click.echo(f"recovered {result['tracks']}{of} tracks with {result['method']} "
                           f"into {db}; the damaged file is kept as {result['kept']}")
                for line in result["lost"]:
                    click.echo(f"  lost: {line}")
                click.echo("run `deejai scan` to analyse again the tracks whose rows were lost")
                return
            result = doc.reset(db)
            click.echo(f"{db}: a new library starts with the next command"
                       + (f"; the old file is kept as {result['kept']}" if result["kept"] else ""))
            return
    if as_json:
        echo_json(report)
    else:
        for line in doc.describe(report):
            click.echo(line)
    if report["database"] in ("damaged", "emptied") or any(
            not s["ok"] for s in report["sidecars"]):
        ctx.exit(1)


class _LockTarget:
    """What :func:`deejai.engine.scan.scan_lock` needs of a library: its path (the database
    need not be openable)."""

    def __init__(self, path) -> None:
        self.path = path
