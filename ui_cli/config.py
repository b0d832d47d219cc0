"""``deejai config``: the effective settings, and where each value came from.

Every key of the schemas (the engine's, then each loaded plugin's section) is printed as TOML
with its origin: ``default``, ``file`` (``settings.toml``) or ``environment`` (a
``DEEJAI_*`` variable). ``--keys`` lists the keys with their types and help instead.
"""
from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["config"]


def _toml(value: Any) -> str:
    """A TOML value for the basic types settings have (JSON spells them the same way)."""
    return json.dumps(value, ensure_ascii=False)


@click.command("config")
@click.option("--json", "as_json", is_flag=True,
              help="Print {section: {key: {value, origin}}} as JSON.")
@click.option("--keys", is_flag=True, help="List every key with its type, default and help.")
def config(as_json: bool, keys: bool) -> None:
    """Show the effective settings and where each value came from.

    \b
    Values come from the defaults, then settings.toml, then DEEJAI_<KEY> variables
    (DEEJAI_<SECTION>__<KEY> for a section such as [mpd]). docs/settings.md lists every key.
    """
    from deejai.engine.config import describe_schema
    from deejai.plugins.manager import load_settings

    settings = load_settings()
    schemas = settings.schemas
    if keys:
        for name, schema in schemas.items():
            click.echo(f"[{name}]" if name else "# top level")
            for row in describe_schema(schema):
                default = "unset" if row["default"] is None else _toml(row["default"])
                click.echo(f"{row['key']}  ({row['type']}, default {default})")
                if row["help"]:
                    click.echo(f"    {row['help']}")
            click.echo()
        return
    doc: dict[str, dict[str, Any]] = {}
    for name, schema in schemas.items():
        values = settings.section(name) if name else settings
        doc[name] = {}
        for row in describe_schema(schema):
            key = row["key"]
            doc[name][key] = {"value": values.get(key),
                              "origin": settings.origins.get(f"{name}.{key}" if name else key,
                                                             "default")}
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    exists = "" if settings.file.is_file() else " (does not exist: every value is a default)"
    click.echo(f"# settings file: {settings.file}{exists}")
    for name, entries in doc.items():
        click.echo()
        if name:
            click.echo(f"[{name}]")
        width = max((len(k) for k in entries), default=0)
        lines = []
        for key, item in entries.items():
            if item["value"] is None:
                line = f"# {key} is unset"
            else:
                line = f"{key.ljust(width)} = {_toml(item['value'])}"
            origin = item["origin"]
            if origin == "environment":
                origin += f" (DEEJAI_{(name + '__') if name else ''}{key})".upper().replace(
                    "ENVIRONMENT (", "(")
            lines.append((line, origin))
        column = max(len(line) for line, _ in lines) + 2 if lines else 0
        for line, origin in lines:
            click.echo(f"{line.ljust(column)}# {origin}")
