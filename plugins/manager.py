"""Load deejai's plugins and build the registries the rest of deejai reads.

:func:`get_plugin_manager` returns one cached :class:`DeejaiPluginManager` (a
``pluggy.PluginManager``). Building it:

1. registers the built-in plugins (:data:`BUILTIN_PLUGINS`) by importing their modules and
   calling ``pm.register`` - the same hooks a third-party plugin implements (Datasette's habit);
2. loads the setuptools entry points of the group ``deejai`` that the selection allows: the
   ``DEEJAI_PLUGINS`` environment variable (comma-separated entry-point names; ``*`` or unset:
   all; ``-``: none), else the ``plugins`` setting of ``settings.toml`` (a list of names, or the
   same string form);
3. calls every data hook of every plugin once and checks what comes back. A plugin that fails to
   import, raises in a hook, or returns the wrong types is unregistered, recorded with the
   reason, and announced with ONE warning (a :class:`PluginWarning` through :mod:`warnings` and
   the same text on the ``deejai.plugins`` logger); the other plugins keep working (Mopidy's
   habit with extensions).

``deejai plugins`` (:mod:`deejai.ui_cli.plugins`) prints :func:`plugin_report`.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
import threading
import warnings
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pluggy

from deejai.engine.errors import ConfigError, PluginError
from deejai.plugins import hookspecs
from deejai.plugins.hookspecs import PROJECT_NAME, Exporter, FrontEnd, Sink

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "PluginWarning",
    "PluginInfo",
    "DisabledPlugin",
    "DeejaiPluginManager",
    "get_plugin_manager",
    "reset_plugin_manager",
    "exporters",
    "get_exporter",
    "exporter_for_path",
    "sinks",
    "get_sink",
    "rpc_methods",
    "frontends",
    "plugin_report",
    "install_commands",
    "write_playlist",
    "render_playlist",
    "build_engine",
    "send_to_sink",
    "settings_sections",
    "load_settings",
]

log = logging.getLogger("deejai.plugins")

#: Entry-point group third-party plugins declare (``[project.entry-points.deejai]``).
ENTRY_POINT_GROUP = PROJECT_NAME

#: Built-in plugins: plugin name -> module, registered before any entry point.
BUILTIN_PLUGINS: dict[str, str] = {
    "exporters": "deejai.plugins.exporters",
    "mpd": "deejai.plugins.mpd",
    "tray": "deejai.plugins.tray",
}

#: The hooks that return data, in the order they are called.
DATA_HOOKS = ("register_exporters", "register_sinks", "register_rpc_methods", "register_frontends",
              "register_settings")
ALL_HOOKS = ("register_commands", *DATA_HOOKS)


class PluginWarning(UserWarning):
    """Issued once for each plugin that is disabled; the message names it and says why."""


class _PluginFailure(Exception):
    """Internal: a plugin misbehaved; ``str()`` is the reason recorded for it."""


@dataclass
class PluginInfo:
    """A loaded plugin, as :func:`plugin_report` lists it.

    Attributes
    ----------
    name : str
        Plugin name (the entry-point name, or the built-in's short name).
    source : str
        ``"built-in"`` or ``"entry point"``.
    module : str
        Module (or object path) that was registered.
    distribution, version : str or None
        Installed distribution that declared the entry point, and its version.
    hooks : list of str
        Hooks the plugin implements.
    provides : dict of str to list of str
        Names it contributed: ``commands``, ``exporters``, ``sinks``, ``rpc_methods``,
        ``frontends``, ``settings`` (sections; empty lists omitted).
    """

    name: str
    source: str
    module: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    provides: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DisabledPlugin:
    """A plugin that is not running, and why.

    Attributes
    ----------
    name, source, module, distribution, version
        As in :class:`PluginInfo` (``module`` is the entry point's value).
    reason : str
        One line: what failed (import, a hook raising, wrong return types, a name clash).
    """

    name: str
    source: str
    module: str
    reason: str
    distribution: str | None = None
    version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Contributions:
    exporters: list[Exporter] = field(default_factory=list)
    sinks: list[Sink] = field(default_factory=list)
    rpc_methods: dict[str, Callable[..., Any]] = field(default_factory=dict)
    frontends: list[FrontEnd] = field(default_factory=list)
    settings: dict[str, type] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({type(value).__name__})"


def _check_items(hook: str, result: Any, cls: type, fields: dict[str, type | str]) -> list:
    """Check that ``result`` is a list of ``cls`` whose fields have the right types."""
    if not isinstance(result, (list, tuple)):
        raise _PluginFailure(
            f"{hook}() returned {_describe(result)}, expected a list of {cls.__name__}"
        )
    for item in result:
        if not isinstance(item, cls):
            raise _PluginFailure(
                f"{hook}() returned an item {_describe(item)}, expected "
                f"deejai.plugins.{cls.__name__}"
            )
        for attr, kind in fields.items():
            value = getattr(item, attr)
            ok = callable(value) if kind == "callable" else isinstance(value, kind) and value != ""
            if not ok:
                expected = "a callable" if kind == "callable" else "a non-empty str"
                raise _PluginFailure(
                    f"{hook}() returned {cls.__name__} with {attr}={_describe(value)}, "
                    f"expected {expected}"
                )
    return list(result)


class DeejaiPluginManager(pluggy.PluginManager):
    """A ``pluggy.PluginManager`` for deejai that remembers what each plugin provides.

    Use :func:`get_plugin_manager` rather than building one; the constructor only adds the
    hook specs, :meth:`load` registers and checks the plugins.
    """

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.disabled: dict[str, DisabledPlugin] = {}
        self.skipped: dict[str, str] = {}
        self._contributions: dict[str, _Contributions] = {}
        self._installed_on: weakref.WeakSet = weakref.WeakSet()

    # -- loading ---------------------------------------------------------------------------

    def load(self, selection: set[str] | None, builtins: dict[str, str] | None = None) -> None:
        """Register the built-ins and the selected entry points, then check every plugin.

        Parameters
        ----------
        selection : set of str or None
            Entry-point names to load; ``None`` loads all of them.
        builtins : dict of str to str, optional
            Plugin name -> module of the built-in plugins (default :data:`BUILTIN_PLUGINS`).
        """
        for name, module in (BUILTIN_PLUGINS if builtins is None else builtins).items():
            info = PluginInfo(name=name, source="built-in", module=module, version=_own_version())
            self._load_one(info, lambda module=module: importlib.import_module(module))
        for ep in _entry_points():
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                source="entry point",
                module=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            if selection is not None and ep.name not in selection:
                self.skipped[ep.name] = "not selected (DEEJAI_PLUGINS or the plugins setting)"
                continue
            if ep.name in self.infos or ep.name in self.disabled:
                # recorded under "name (distribution)": the plugin that owns the name stays
                self._disable(info, f"the name {ep.name!r} is already used by another plugin",
                              key=f"{ep.name} ({info.distribution or ep.value})")
                continue
            self._load_one(info, ep.load)
        found = {ep.name for ep in _entry_points()}
        for name in sorted((selection or set()) - found - set(self.infos) - set(self.disabled)):
            self.skipped[name] = "selected, but no installed package has this entry point"
            log.warning("deejai plugin %r is selected but not installed", name)

    def _load_one(self, info: PluginInfo, load: Callable[[], Any]) -> None:
        try:
            plugin = load()
        except (Exception, SystemExit) as exc:
            self._disable(info, f"failed to import: {type(exc).__name__}: {exc}")
            return
        try:
            self.register(plugin, name=info.name)
        except Exception as exc:  # pluggy.PluginValidationError, ValueError (registered twice)
            self._disable(info, f"cannot be registered: {type(exc).__name__}: {exc}")
            return
        try:
            info.hooks = self._implemented_hooks(plugin)
            contributions = self._collect(plugin)
        except _PluginFailure as exc:
            self._disable(info, str(exc), plugin)
            return
        self.infos[info.name] = info
        self._contributions[info.name] = contributions
        info.provides = {
            key: names
            for key, names in (
                ("commands", contributions.commands),
                ("exporters", [e.name for e in contributions.exporters]),
                ("sinks", [s.name for s in contributions.sinks]),
                ("rpc_methods", list(contributions.rpc_methods)),
                ("frontends", [f.name for f in contributions.frontends]),
                ("settings", list(contributions.settings)),
            )
            if names
        }

    def _implemented_hooks(self, plugin: Any) -> list[str]:
        hooks = []
        for caller in self.get_hookcallers(plugin) or []:
            if caller.spec is None:
                raise _PluginFailure(
                    f"implements {caller.name!r}, which is not a deejai hook "
                    f"(known: {', '.join(ALL_HOOKS)})"
                )
            hooks.append(caller.name)
        return sorted(hooks)

    def _call(self, plugin: Any, hook: str, **kwargs: Any) -> list[Any]:
        """Call ``hook`` on ``plugin`` alone; a raise becomes a :class:`_PluginFailure`."""
        others = [p for p in self.get_plugins() if p is not plugin]
        caller = self.subset_hook_caller(hook, remove_plugins=others)
        try:
            return caller(**kwargs)
        except (Exception, SystemExit) as exc:
            raise _PluginFailure(f"{hook}() raised {type(exc).__name__}: {exc}") from exc

    def _collect(self, plugin: Any) -> _Contributions:
        out = _Contributions()
        for result in self._call(plugin, "register_exporters"):
            out.exporters += _check_items(
                "register_exporters",
                result,
                Exporter,
                {"name": str, "extension": str, "media_type": str, "render": "callable"},
            )
        for exporter in out.exporters:
            if exporter.extension.startswith("."):
                raise _PluginFailure(
                    f"register_exporters() returned Exporter {exporter.name!r} with extension "
                    f"{exporter.extension!r}; give it without the dot"
                )
        for result in self._call(plugin, "register_sinks"):
            out.sinks += _check_items(
                "register_sinks", result, Sink, {"name": str, "send": "callable"}
            )
        for result in self._call(plugin, "register_rpc_methods"):
            if not isinstance(result, dict):
                raise _PluginFailure(
                    f"register_rpc_methods() returned {_describe(result)}, expected a dict of "
                    "method name -> callable"
                )
            for key, value in result.items():
                if not isinstance(key, str) or not key or not callable(value):
                    raise _PluginFailure(
                        f"register_rpc_methods() returned {key!r}: {_describe(value)}, "
                        "expected a method name -> callable(engine, **params)"
                    )
            out.rpc_methods.update(result)
        for result in self._call(plugin, "register_frontends"):
            out.frontends += _check_items(
                "register_frontends",
                result,
                FrontEnd,
                {"name": str, "description": str, "run": "callable"},
            )
        import msgspec

        for result in self._call(plugin, "register_settings"):
            if not isinstance(result, dict) or not all(
                    isinstance(k, str) and k and isinstance(v, type)
                    and issubclass(v, msgspec.Struct) for k, v in result.items()):
                raise _PluginFailure(
                    f"register_settings() returned {_describe(result)}, expected a dict of "
                    "section name -> msgspec.Struct class")
            for name, schema in result.items():
                try:
                    schema()
                except Exception as exc:
                    raise _PluginFailure(f"register_settings() section {name!r}: the schema "
                                         f"has no defaults ({exc})") from None
            out.settings.update(result)
        # register_commands is checked against a scratch group, so that a broken plugin shows in
        # the report even when no command line was built (the daemon).
        try:
            import click
        except ImportError:  # an app without the command line (a phone build): nothing to check
            return out

        scratch = click.Group("deejai")
        out.commands = self._install_commands(plugin, scratch)
        return out

    def _install_commands(self, plugin: Any, group: "Any", reserved: Iterable[str] = ()) -> list[str]:
        """Call ``register_commands`` of ``plugin`` on ``group``; undo its changes on failure."""
        import click

        before = dict(group.commands)
        reserved = set(reserved)
        try:
            self._call(plugin, "register_commands", cli=group)
            added = [name for name in group.commands if group.commands[name] is not before.get(name)]
            for name in added:
                command = group.commands[name]
                if not isinstance(command, click.Command):
                    raise _PluginFailure(
                        f"register_commands() added {name!r} as {_describe(command)}, "
                        "expected a click.Command"
                    )
                if name in before or name in reserved:
                    raise _PluginFailure(
                        f"register_commands() added the command {name!r}, which deejai already has"
                    )
            if set(before) - set(group.commands):
                raise _PluginFailure("register_commands() removed commands from the deejai group")
        except _PluginFailure:
            group.commands.clear()
            group.commands.update(before)
            raise
        return sorted(added)

    def _disable(self, info: PluginInfo, reason: str, plugin: Any = None,
                 key: str | None = None) -> None:
        """Unregister a plugin, record why (under ``key``, default its name), and warn once."""
        if plugin is not None and self.is_registered(plugin):
            self.unregister(plugin)
        if key is None:
            key = info.name
            self.infos.pop(info.name, None)
            self._contributions.pop(info.name, None)
        self.disabled[key] = DisabledPlugin(
            name=info.name,
            source=info.source,
            module=info.module,
            reason=reason,
            distribution=info.distribution,
            version=info.version,
        )
        where = f" ({info.distribution} {info.version})" if info.distribution else ""
        message = f"deejai plugin {info.name!r}{where} disabled: {reason}"
        log.warning(message)
        warnings.warn(message, PluginWarning, stacklevel=2)

    # -- registries ------------------------------------------------------------------------

    def _merged(self, attr: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        owner: dict[str, str] = {}
        for plugin_name, contributions in self._contributions.items():
            items = getattr(contributions, attr)
            pairs = items.items() if isinstance(items, dict) else ((i.name, i) for i in items)
            for key, value in pairs:
                if key in owner:
                    log.info("%s %r of plugin %r replaces the one of %r", attr, key, plugin_name,
                             owner[key])
                out[key] = value
                owner[key] = plugin_name
        return out

    def exporters(self) -> dict[str, Exporter]:
        """Exporter name -> :class:`Exporter`, from every loaded plugin (later plugins win)."""
        return self._merged("exporters")

    def sinks(self) -> dict[str, Sink]:
        """Sink name -> :class:`Sink`, from every loaded plugin."""
        return self._merged("sinks")

    def rpc_methods(self) -> dict[str, Callable[..., Any]]:
        """JSON-RPC method name -> ``callable(engine, **params)``, from every loaded plugin."""
        return self._merged("rpc_methods")

    def frontends(self) -> dict[str, FrontEnd]:
        """Front-end name -> :class:`FrontEnd`, from every loaded plugin."""
        return self._merged("frontends")

    def settings_sections(self) -> dict[str, type]:
        """Section name -> settings schema, from every loaded plugin."""
        return self._merged("settings")

    def install_commands(self, cli: Any) -> list[str]:
        """Run every loaded plugin's ``register_commands`` hook on the real command group.

        A plugin that raises, adds something that is not a ``click.Command``, or adds a command
        deejai already has (including the lazily loaded ones) is disabled and its changes undone.

        Returns
        -------
        list of str
            The command names the plugins added (none when this group already has them).
        """
        import click

        if cli in self._installed_on:
            return []
        self._installed_on.add(cli)
        reserved: set[str] = set()
        try:
            reserved.update(cli.list_commands(click.Context(cli)))
        except Exception:  # pragma: no cover - a group whose listing needs more context
            reserved.update(cli.commands)
        added: list[str] = []
        for name in list(self._contributions):
            plugin = self.get_plugin(name)
            try:
                added += self._install_commands(plugin, cli, reserved - set(cli.commands))
            except _PluginFailure as exc:
                self._disable(self.infos[name], str(exc), plugin)
        return added

    def report(self) -> dict[str, Any]:
        """What is loaded, disabled and skipped, JSON-serialisable (see :func:`plugin_report`)."""
        return {
            "loaded": [info.to_dict() for info in self.infos.values()],
            "disabled": [d.to_dict() for d in self.disabled.values()],
            "skipped": [{"name": n, "reason": r} for n, r in self.skipped.items()],
        }


def _own_version() -> str | None:
    try:
        return importlib.metadata.version("deejai")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a tree
        return None


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    seen: set[tuple[str, str]] = set()
    out = []
    for ep in eps:  # the same distribution found twice on sys.path lists its entry points twice
        key = (ep.name, ep.value)
        if key not in seen:
            seen.add(key)
            out.append(ep)
    return out


def _parse_selection(value: Any, origin: str) -> set[str] | None:
    """``*``/unset -> None (all); ``-`` -> empty set; ``a,b`` or ``["a", "b"]`` -> names."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if value in ("", "*"):
            return None
        if value == "-":
            return set()
        return {part.strip() for part in value.split(",") if part.strip()}
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        if "*" in value:
            return None
        return {v.strip() for v in value if v.strip() and v.strip() != "-"}
    raise ConfigError(
        f"{origin}: expected a list of plugin names, '*' or '-', got {_describe(value)}"
    )


def _selection() -> set[str] | None:
    env = os.environ.get("DEEJAI_PLUGINS")
    if env is not None:
        return _parse_selection(env, "DEEJAI_PLUGINS")
    from deejai.engine.config import load_settings, paths

    return _parse_selection(load_settings().get("plugins"), str(paths().settings_file))


_lock = threading.Lock()
_manager: DeejaiPluginManager | None = None


def get_plugin_manager() -> DeejaiPluginManager:
    """Return the process's plugin manager, building it on the first call.

    Returns
    -------
    DeejaiPluginManager
        Built-ins and selected entry points registered and checked; the same object on later
        calls until :func:`reset_plugin_manager`.

    Raises
    ------
    ConfigError
        When ``DEEJAI_PLUGINS`` or the ``plugins`` setting is not a list of names (or the
        settings file is not valid TOML).

    Warns
    -----
    PluginWarning
        Once for each plugin that is disabled.
    """
    global _manager
    with _lock:
        if _manager is None:
            pm = DeejaiPluginManager()
            pm.load(_selection())
            _manager = pm
        return _manager


def reset_plugin_manager() -> None:
    """Forget the cached manager; the next :func:`get_plugin_manager` loads plugins again."""
    global _manager
    with _lock:
        _manager = None


def exporters() -> dict[str, Exporter]:
    """Exporter name -> :class:`~deejai.plugins.hookspecs.Exporter` of all loaded plugins."""
    return get_plugin_manager().exporters()


def get_exporter(name: str) -> Exporter:
    """The exporter called ``name`` (see :meth:`deejai.engine.export.Exporters.get`).

    Raises
    ------
    ConfigError
        When no loaded plugin provides it; the message lists the known formats.
    """
    return _exporters().get(name)


def exporter_for_path(path: str | os.PathLike[str]) -> Exporter:
    """The exporter whose extension matches ``path``'s (case-insensitive).

    Raises
    ------
    ConfigError
        When the extension is missing or no exporter writes it; the message names the file and
        lists the known extensions.
    """
    return _exporters().for_path(path)


def _exporters() -> Any:
    from deejai.engine.export import Exporters

    return Exporters(exporters())


def sinks() -> dict[str, Sink]:
    """Sink name -> :class:`~deejai.plugins.hookspecs.Sink` of all loaded plugins."""
    return get_plugin_manager().sinks()


def get_sink(name: str) -> Sink:
    """The sink called ``name``; raises :class:`PluginError` listing the known ones."""
    known = sinks()
    try:
        return known[name]
    except KeyError:
        raise PluginError(
            f"no plugin provides the sink {name!r}; known sinks: {', '.join(sorted(known)) or 'none'}"
        ) from None


def rpc_methods() -> dict[str, Callable[..., Any]]:
    """JSON-RPC method name -> ``callable(engine, **params)`` of all loaded plugins."""
    return get_plugin_manager().rpc_methods()


def frontends() -> dict[str, FrontEnd]:
    """Front-end name -> :class:`~deejai.plugins.hookspecs.FrontEnd` of all loaded plugins."""
    return get_plugin_manager().frontends()


def settings_sections() -> dict[str, type]:
    """Section name -> settings schema (``msgspec.Struct``) of all loaded plugins."""
    return get_plugin_manager().settings_sections()


def load_settings(p: Any = None) -> Any:
    """The settings with the loaded plugins' sections checked against their schemas; see
    :func:`deejai.engine.config.load_settings`."""
    from deejai.engine.config import load_settings as load

    return load(p, sections=settings_sections())


def plugin_report() -> dict[str, Any]:
    """What is loaded and what is not.

    Returns
    -------
    dict
        ``{"loaded": [PluginInfo dicts], "disabled": [DisabledPlugin dicts],
        "skipped": [{"name", "reason"}]}``; ``loaded`` entries carry ``name``, ``source``,
        ``module``, ``distribution``, ``version``, ``hooks`` and ``provides``; ``disabled`` ones
        a one-line ``reason``.
    """
    return get_plugin_manager().report()


def install_commands(cli: Any) -> list[str]:
    """Add the plugins' commands to the ``deejai`` click group ``cli`` (``register_commands``).

    Returns the names added; see :meth:`DeejaiPluginManager.install_commands`.
    """
    return get_plugin_manager().install_commands(cli)


def write_playlist(playlist: Any, path: str | os.PathLike[str], format: str | None = None) -> Path:
    """Write ``playlist`` atomically with a loaded exporter; returns the absolute path.

    ``~`` is expanded and a relative ``path`` made absolute here, at the edge (a Python caller
    of the plugin API); see :meth:`deejai.engine.export.Exporters.write`.
    """
    target = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
    return _exporters().write(playlist, target, format=format)[0]


def render_playlist(playlist: Any, format: str, base_dir: str | os.PathLike[str] | None = None
                    ) -> bytes:
    """Render ``playlist`` (a Playlist or its dict) with the loaded exporter ``format``; see
    :meth:`deejai.engine.export.Exporters.render`."""
    return _exporters().render(playlist, format, base_dir)


def send_to_sink(name: str, playlist: Any, settings: Any = None, **options: Any) -> dict[str, Any]:
    """Send ``playlist`` (a Playlist or its dict) to the sink ``name``, in this process.

    The sink receives its own section of the settings (``[mpd]`` for ``mpd``), not the whole
    settings.

    Parameters
    ----------
    name : str
    playlist : Playlist or dict
    settings : Settings or dict, optional
        Default: :func:`load_settings`.
    **options
        The sink's options (``host``, ``mode``...).

    Raises
    ------
    PluginError
        No such sink, or the sink failed unexpectedly.
    DeejaiError
        What the sink raises (``SinkError``, ``ConfigError``).
    """
    from deejai.engine.export import send_playlist

    sink = get_sink(name)
    if settings is None:
        settings = load_settings()
    section = settings.get(name) if hasattr(settings, "get") else None
    return send_playlist(sink, name, playlist, section, **options)


def build_engine(**options: Any) -> Any:
    """The composition root of an in-process Engine: one with the loaded plugins' exporters
    and sinks (the engine itself never imports plugins).

    Parameters
    ----------
    **options
        Passed to :class:`deejai.engine.service.Engine` (``paths``, ``settings``,
        ``index_backend``, ``scan_executor``).
    """
    from deejai.engine.config import paths as default_paths
    from deejai.engine.service import Engine

    if options.get("settings") is None:
        options["settings"] = load_settings(options.get("paths") or default_paths())
    return Engine(exporters=exporters(), sinks=sinks(), **options)


def settings_doc(path: str | os.PathLike[str]) -> None:
    """Rewrite the generated key list of ``docs/settings.md`` at ``path`` from the schemas:
    the engine's and the loaded plugins' sections."""
    from deejai.engine.config import DOC_BEGIN, DOC_END, CoreSettings, settings_markdown

    doc = Path(path)
    text = doc.read_text(encoding="utf-8")
    start, end = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
    table = settings_markdown({"": CoreSettings, **settings_sections()})
    doc.write_text(text[:start] + "\n" + table + text[end:], encoding="utf-8")


if __name__ == "__main__":  # DEEJAI_PLUGINS=- python -m deejai.plugins.manager docs/settings.md
    import sys

    settings_doc(sys.argv[1] if len(sys.argv) > 1 else "docs/settings.md")
