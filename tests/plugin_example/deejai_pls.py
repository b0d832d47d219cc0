"""A deejai plugin: export playlists as PLS files, and ``deejai pls-show`` to list one."""
import configparser
import os

import click

from deejai.plugins import Exporter, hookimpl


def render_pls(playlist, base_dir):
    """Render a playlist as PLS (the Winamp/SHOUTcast INI-style format), UTF-8 bytes."""
    lines = ["[playlist]"]
    for number, entry in enumerate(playlist.entries, start=1):
        length = round(entry.duration_s) if entry.duration_s > 0 else -1
        lines += [
            f"File{number}={os.path.abspath(entry.path)}",
            f"Title{number}={entry.label}",
            f"Length{number}={length}",
        ]
    lines += [f"NumberOfEntries={len(playlist.entries)}", "Version=2", ""]
    return "\n".join(lines).encode("utf-8")


@hookimpl
def register_exporters():
    return [Exporter(name="pls", extension="pls", media_type="audio/x-scpls", render=render_pls)]


@hookimpl
def register_commands(cli):
    @cli.command(name="pls-show")
    @click.argument("pls_file", type=click.Path(exists=True, dir_okay=False))
    def pls_show(pls_file):
        """List the tracks of the PLS playlist PLS_FILE."""
        parser = configparser.ConfigParser(interpolation=None)
        with open(pls_file, encoding="utf-8") as fh:
            parser.read_file(fh)
        section = parser["playlist"]
        for number in range(1, section.getint("NumberOfEntries") + 1):
            seconds = section.getint(f"Length{number}")
            length = f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 0 else "?:??"
            click.echo(f"{number}. {section[f'Title{number}']} ({length})")
