"""The ``deejai`` command: a click group whose subcommands load lazily.

Each subcommand lives in its own module of :mod:`deejai.ui_cli` and is imported only when it
runs, so ``deejai --help`` does not import the TFLite runtime, FAISS or librosa.
Errors derived from :class:`deejai.engine.errors.DeejaiError` are printed as one line on
stderr (``deejai: error: ...``) and the command exits with the error's ``exit_code``;
``--debug`` (or ``DEEJAI_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from deejai.engine.errors import DeejaiError

__all__ = ["cli", "main", "LAZY_COMMANDS"]

#: command name -> "module:attribute" inside deejai.ui_cli
LAZY_COMMANDS: dict[str, str] = {
    "analyse": "analyse:analyse",
    "scan": "library:scan",
    "status": "library:status",
    "tracks": "library:tracks",
    "playlist": "playlist:playlist",
    "radio": "playlist:radio",
    "serve": "daemon:serve",
    "stop": "daemon:stop",
    "plugins": "plugins:plugins",
    "config": "config:config",
    "map": "map:map_command",
    "doctor": "doctor:doctor",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when the subcommand is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx))
        names.update(name for name in LAZY_COMMANDS if self._available(name))
        return sorted(names)

    @staticmethod
    def _available(name: str) -> bool:
        module = LAZY_COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(f"deejai.ui_cli.{module}") is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None or name not in LAZY_COMMANDS:
            return cmd
        module, attr = LAZY_COMMANDS[name].split(":")
        try:
            mod = importlib.import_module(f"deejai.ui_cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"deejai.ui_cli.{module}":
                return None
            raise
        return getattr(mod, attr, None)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, envvar="DEEJAI_DEBUG", help="Show tracebacks and debug logs.")
@click.option(
    "--no-daemon",
    is_flag=True,
    envvar="DEEJAI_NO_DAEMON",
    help="Run the engine in this process even when a daemon is running.",
)
@click.version_option(package_name="deejai", prog_name="deejai")
@click.pass_context
def cli(ctx: click.Context, debug: bool, no_daemon: bool) -> None:
    """deejai: playlists that flow, made on your own machine from your own music.

    \b
    Start with a scan, then ask for playlists:
      deejai scan ~/Music
      deejai playlist --from "battle epic" --to "ambient 4" -n 8 -o trip.m3u8
      deejai radio "frontiers" -n 20

    Tracks are named by path, by id, or by a short query over "artist - title - album";
    an ambiguous query lists the candidates instead of guessing.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["no_daemon"] = no_daemon


def _setup_logging(debug: bool) -> None:
    """Log warnings (e.g. a disabled plugin) as one line each on stderr; debug logs with --debug."""
    import logging
    import warnings

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("deejai: %(levelname)s: %(message)s"))
    root = logging.getLogger("deejai")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    root.propagate = False
    from deejai.plugins.manager import PluginWarning

    # the plugin manager both logs and warns; on the command line the log line is enough
    warnings.filterwarnings("ignore", category=PluginWarning)


def _install_plugin_commands() -> None:
    """Add the commands plugins register through the ``register_commands`` hook."""
    from deejai.plugins.manager import install_commands

    install_commands(cli)


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``deejai`` console script."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:]) or os.environ.get(
        "DEEJAI_DEBUG", ""
    ) not in ("", "0")
    try:
        _setup_logging(debug)
        _install_plugin_commands()
        return cli.main(args=argv, prog_name="deejai", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("deejai: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except DeejaiError as exc:
        if debug:
            raise
        click.echo(f"deejai: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("deejai: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
