"""deejai's plugin system (pluggy, entry-point group ``deejai``) and the built-in plugins.

A plugin is a module whose functions are marked with :data:`hookimpl`, installed with an entry
point in the group ``deejai``; ``docs/plugins.md`` walks through a complete one. The hooks
(:mod:`deejai.plugins.hookspecs`) add CLI commands, playlist exporters, sinks (places a playlist
is sent to, such as MPD), JSON-RPC methods for the daemon, and front ends.

Modules:

``hookspecs``
    the hook specifications and the :class:`Exporter`, :class:`Sink`, :class:`FrontEnd` types.
``manager``
    :func:`~deejai.plugins.manager.get_plugin_manager` and the registries built from it
    (``exporters()``, ``exporter_for_path()``, ``sinks()``, ``rpc_methods()``, ``frontends()``,
    ``plugin_report()``, ``install_commands()``). A plugin that fails to import, raises in a
    hook or returns the wrong types is disabled with one warning; the others keep working.
``exporters``
    built-in plugin: m3u8, xspf and json playlist files, and :func:`write_playlist`.
``mpd``
    built-in plugin: the ``mpd`` sink (python-mpd2, extra ``mpd``).
``tray``
    built-in plugin: the system tray front end and the ``deejai tray`` command (extra ``tray``).
``options``
    click options (``--to-mpd`` ...) a playlist command applies to push its result to a sink.
"""
from deejai.plugins.hookspecs import Exporter, FrontEnd, Sink, hookimpl

__all__ = ["hookimpl", "Exporter", "Sink", "FrontEnd"]
