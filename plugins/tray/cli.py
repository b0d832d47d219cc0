"""``deejai tray``: run the tray icon, or install/remove its autostart entry."""
from __future__ import annotations

import click

__all__ = ["tray"]


@click.command("tray")
@click.option("--install-autostart", is_flag=True,
              help="Start the tray at login: write $XDG_CONFIG_HOME/autostart/deejai-tray.desktop.")
@click.option("--remove-autostart", is_flag=True, help="Remove that autostart entry.")
@click.option("--backend", type=click.Choice(["auto", "appindicator", "gtk", "xorg", "darwin", "win32"]),
              default="auto", show_default=True, envvar="PYSTRAY_BACKEND",
              help="pystray backend (xorg shows no menu: a click runs Join the dots…).")
@click.option("--wait-for-tray", "wait_for_tray_s", type=click.FloatRange(min=0), default=10.0,
              show_default=True, metavar="SECONDS",
              help="On X11, how long to wait for a panel's system tray to appear.")
def tray(install_autostart: bool, remove_autostart: bool, backend: str,
         wait_for_tray_s: float) -> None:
    """Show deejai in the system tray: scan, join the dots, radio, recent playlists.

    \b
    The tray talks to the daemon (`deejai serve`), and can start and stop it. The icon is
    blue when idle, amber with a progress ring while scanning, grey when the daemon is not
    running and red after an error. Without a desktop (no DISPLAY) it exits with status 1.
    """
    from deejai.plugins.tray import desktop

    if install_autostart and remove_autostart:
        raise click.UsageError("--install-autostart and --remove-autostart exclude each other")
    if install_autostart:
        path = desktop.install_autostart()
        click.echo(f"deejai: the tray starts at login ({path})", err=True)
        return
    if remove_autostart:
        path = desktop.remove_autostart()
        if path is None:
            click.echo("deejai: there was no autostart entry", err=True)
        else:
            click.echo(f"deejai: removed {path}", err=True)
        return
    from deejai.plugins.tray.app import run_tray

    run_tray(backend=backend, wait_for_tray_s=wait_for_tray_s)
