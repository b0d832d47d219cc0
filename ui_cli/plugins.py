"""``deejai plugins``: what is loaded, what each plugin provides, and why anything is not."""
from __future__ import annotations

import json
import warnings

import click

__all__ = ["plugins"]


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def plugins(as_json: bool) -> None:
    """List the plugins: loaded ones with their hooks, disabled ones with the reason.

    \b
    Plugins are installed packages with an entry point in the group "deejai";
    DEEJAI_PLUGINS=name,name (or "-" for none) or the "plugins" setting chooses which load.
    """
    from deejai.plugins.manager import PluginWarning, plugin_report

    with warnings.catch_warnings():
        # the report below gives each reason; the log line on stderr is enough besides
        warnings.simplefilter("ignore", PluginWarning)
        report = plugin_report()
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    table = Table(title="Loaded plugins", title_justify="left", expand=False)
    table.add_column("plugin", style="bold", no_wrap=True)
    table.add_column("source")
    table.add_column("hooks (register_*)")
    table.add_column("provides", overflow="fold")
    for info in report["loaded"]:
        source = info["distribution"] or info["source"]
        if info.get("version"):
            source = f"{source} {info['version']}"
        hooks = ", ".join(h.removeprefix("register_") for h in info["hooks"])
        provides = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in info["provides"].items())
        table.add_row(escape(info["name"]), escape(source), escape(hooks or "-"),
                      escape(provides or "-"))
    console.print(table)
    if report["disabled"]:
        console.print()
        console.print("[bold red]Disabled plugins[/]")
        for item in report["disabled"]:
            dist = " ".join(filter(None, (item.get("distribution"), item.get("version"))))
            where = f" ({dist})" if dist else ""
            console.print(
                f"  [bold]{escape(item['name'])}[/]{escape(where)}: {escape(item['reason'])}",
                soft_wrap=True,
            )
    if report["skipped"]:
        console.print()
        console.print("[bold]Not loaded[/]")
        for item in report["skipped"]:
            console.print(f"  {escape(item['name'])}: {escape(item['reason'])}", soft_wrap=True)
