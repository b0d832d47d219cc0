"""The plugin manager with real entry points: the example plugin, broken ones, selection, CLI.

Plugins are "installed" the way an installer lays out a wheel (PEP 376/427): the module next to
a ``<name>-<version>.dist-info`` folder with ``METADATA`` and ``entry_points.txt``, in a folder
put on ``sys.path`` (or ``PYTHONPATH`` for a subprocess). :mod:`importlib.metadata` finds them
exactly as it finds a pip-installed distribution; the example's ``entry_points.txt`` is written
from ``tests/plugin_example/pyproject.toml`` itself.
"""
from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
import warnings
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from deejai.engine.catalogue import Playlist, PlaylistEntry
from deejai.engine.errors import ConfigError, PluginError
from deejai.plugins import manager
from deejai.plugins.manager import write_playlist
from deejai.plugins.manager import PluginWarning

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = Path(__file__).resolve().parent / "plugin_example"
BUILTINS = set(manager.BUILTIN_PLUGINS)


def install_dist(
    target: Path, name: str, version: str, entry_points: dict[str, str], modules: dict[str, str]
) -> Path:
    """Lay out a distribution in ``target`` as an installer would, and return ``target``.

    Parameters
    ----------
    entry_points : dict
        Entry-point name -> object reference, all in the group ``deejai``.
    modules : dict
        Module name -> source text, written as ``<name>.py``.
    """
    target.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (target / f"{module}.py").write_text(source, encoding="utf-8")
    dist_info = target / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = ["[deejai]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (dist_info / "INSTALLER").write_text("deejai-tests\n", encoding="utf-8")
    return target


def install_example(target: Path) -> Path:
    """Install tests/plugin_example from what its pyproject.toml declares."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text(encoding="utf-8"))
    meta = project["project"]
    modules = {
        m: (EXAMPLE / f"{m}.py").read_text(encoding="utf-8")
        for m in project["tool"]["setuptools"]["py-modules"]
    }
    return install_dist(target, meta["name"], meta["version"], meta["entry-points"]["deejai"],
                        modules)


BROKEN_IMPORT = """\
import deejai_dependency_that_is_not_installed  # noqa: F401
"""

BROKEN_HOOK = """\
from deejai.plugins import Sink, hookimpl


def _send(playlist, settings, **options):
    return {}


@hookimpl
def register_sinks():
    return [Sink("half-sink", _send)]


@hookimpl
def register_frontends():
    raise RuntimeError("the disk is on fire")
"""

JUNK = """\
from deejai.plugins import hookimpl


@hookimpl
def register_sinks():
    return ["not a sink"]
"""


@pytest.fixture(scope="session")
def example_site(tmp_path_factory) -> Path:
    return install_example(tmp_path_factory.mktemp("site-example"))


@pytest.fixture(scope="session")
def broken_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site-broken")
    install_dist(site, "deejai-broken-import", "0.1", {"broken_import": "deejai_broken_import"},
                 {"deejai_broken_import": BROKEN_IMPORT})
    install_dist(site, "deejai-broken-hook", "0.2", {"broken_hook": "deejai_broken_hook"},
                 {"deejai_broken_hook": BROKEN_HOOK})
    install_dist(site, "deejai-junk", "0.3", {"junk": "deejai_junk"}, {"deejai_junk": JUNK})
    return site


@pytest.fixture(autouse=True)
def fresh_manager(monkeypatch):
    """Each test builds its own plugin manager, from the entry points visible to it."""
    monkeypatch.delenv("DEEJAI_PLUGINS", raising=False)
    manager.reset_plugin_manager()
    yield
    manager.reset_plugin_manager()


@pytest.fixture
def with_example(monkeypatch, example_site) -> Path:
    monkeypatch.syspath_prepend(str(example_site))
    return example_site


@pytest.fixture
def with_broken(monkeypatch, broken_site) -> Path:
    monkeypatch.syspath_prepend(str(broken_site))
    return broken_site


def _playlist(tmp_path: Path) -> Playlist:
    return Playlist(
        entries=[
            PlaylistEntry(id=1, path=str(tmp_path / "a" / "Frontiers.mp3"), artist="Nexuiz",
                          title="Frontiers", duration_s=183.4),
            PlaylistEntry(id=2, path=str(tmp_path / "b" / "Ambient 4.mp3"), title="",
                          duration_s=0.0),
        ],
        kind="radio",
    )


def _loaded(report: dict) -> dict[str, dict]:
    return {p["name"]: p for p in report["loaded"]}


def _disabled(report: dict) -> dict[str, dict]:
    return {p["name"]: p for p in report["disabled"]}


# --- built-ins ------------------------------------------------------------------------------


def test_builtins_register_through_the_hooks():
    pm = manager.get_plugin_manager()
    assert pm is manager.get_plugin_manager()  # cached
    import deejai.plugins.exporters as exporters_module
    import deejai.plugins.mpd as mpd_module

    assert pm.get_plugin("exporters") is exporters_module
    assert pm.get_plugin("mpd") is mpd_module
    loaded = _loaded(manager.plugin_report())
    assert loaded["exporters"]["source"] == "built-in"
    assert loaded["exporters"]["hooks"] == ["register_exporters"]
    assert loaded["exporters"]["provides"]["exporters"] == ["m3u8", "xspf", "json"]
    assert loaded["mpd"]["hooks"] == ["register_rpc_methods", "register_settings",
                                      "register_sinks"]
    assert set(manager.exporters()) >= {"m3u8", "xspf", "json"}
    assert "mpd" in manager.sinks()
    assert manager.sinks()["mpd"].send is mpd_module.send
    assert {"sink.mpd.send"} <= set(manager.rpc_methods())
    # playlist.formats is the Engine's own method now: it lists the exporters it was handed
    formats = manager.build_engine().formats()
    assert {"name": "xspf", "extension": "xspf", "media_type": "application/xspf+xml"} in formats


def test_exporter_lookup_errors_are_one_line_config_errors(tmp_path):
    assert manager.exporter_for_path("trip.M3U8").name == "m3u8"
    assert manager.get_exporter("XSPF").name == "xspf"
    with pytest.raises(ConfigError, match=r"trip\.wav: no playlist format writes '\.wav' files; "
                                          r"known: \.json, \.m3u8, \.xspf"):
        manager.exporter_for_path("trip.wav")
    with pytest.raises(ConfigError, match="files without an extension"):
        manager.exporter_for_path(tmp_path / "trip")
    with pytest.raises(ConfigError, match=r"unknown playlist format 'pls'; known formats: "
                                          r"json, m3u8, xspf"):
        manager.get_exporter("pls")
    with pytest.raises(PluginError, match="no plugin provides the sink 'spotify'; known sinks: mpd"):
        manager.get_sink("spotify")


def test_no_plugins_disabled_without_third_party_ones():
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)
        report = manager.plugin_report()
    assert report["disabled"] == []


# --- the example plugin (tests/plugin_example, docs/plugins.md) -----------------------------


def test_example_plugin_loads_from_its_entry_point(with_example, tmp_path):
    loaded = _loaded(manager.plugin_report())
    pls = loaded["pls"]
    assert pls["source"] == "entry point"
    assert pls["distribution"] == "deejai-pls"
    assert pls["version"] == "1.0.0"
    assert pls["module"] == "deejai_pls"
    assert pls["hooks"] == ["register_commands", "register_exporters"]
    assert pls["provides"] == {"commands": ["pls-show"], "exporters": ["pls"]}

    # the plugin's exporter is used like a built-in one, chosen by extension
    assert manager.exporter_for_path(tmp_path / "x.PLS").media_type == "audio/x-scpls"
    playlist = _playlist(tmp_path)
    out = write_playlist(playlist, tmp_path / "trip.pls")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(out, encoding="utf-8")
    section = parser["playlist"]
    assert section.getint("NumberOfEntries") == 2
    assert section["File1"] == playlist.entries[0].path
    assert section["Title1"] == "Nexuiz - Frontiers"
    assert section.getint("Length1") == 183
    assert section["Title2"] == "Ambient 4"
    assert section.getint("Length2") == -1


def test_example_plugin_command_is_installed_on_the_cli(with_example, tmp_path):
    from deejai.ui_cli.main import LazyGroup

    group = LazyGroup("deejai")
    provided = [c for p in manager.plugin_report()["loaded"]
                for c in p["provides"].get("commands", [])]
    assert "pls-show" in provided
    assert manager.install_commands(group) == provided
    assert manager.install_commands(group) == []  # once per group
    pls_file = write_playlist(_playlist(tmp_path), tmp_path / "trip.pls")
    result = CliRunner().invoke(group, ["pls-show", str(pls_file)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["1. Nexuiz - Frontiers (3:03)", "2. Ambient 4 (?:??)"]


def test_docs_show_the_example_plugin_verbatim():
    doc = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(\w+)\n(.*?)```", doc, flags=re.S)
    python_blocks = [body for lang, body in blocks if lang == "python"]
    toml_blocks = [body for lang, body in blocks if lang == "toml"]
    assert (EXAMPLE / "deejai_pls.py").read_text(encoding="utf-8") in python_blocks
    assert (EXAMPLE / "pyproject.toml").read_text(encoding="utf-8") in toml_blocks


FULL = """\
import click
from deejai.plugins import Exporter, FrontEnd, Sink, hookimpl

SENT = []


@hookimpl
def register_commands(cli):
    @cli.command(name="full-hello")
    def hello():
        click.echo("hello from full")


@hookimpl
def register_exporters():
    return [Exporter("txt", "txt", "text/plain",
                     lambda playlist, base_dir: "\\n".join(e.path for e in playlist.entries).encode())]


@hookimpl
def register_sinks():
    return (Sink("memory", lambda playlist, settings, **options: SENT.append(playlist) or {}),)


@hookimpl
def register_rpc_methods():
    return {"full.echo": lambda engine, **params: {"engine": engine, **params}}


@hookimpl
def register_frontends():
    return [FrontEnd("full-ui", "a front end that returns at once", lambda **options: options)]
"""


def test_a_plugin_can_provide_every_hook(tmp_path, monkeypatch):
    install_dist(tmp_path / "site", "deejai-full", "2.0", {"full": "deejai_full"},
                 {"deejai_full": FULL})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    full = _loaded(manager.plugin_report())["full"]
    assert full["hooks"] == ["register_commands", "register_exporters", "register_frontends",
                             "register_rpc_methods", "register_sinks"]
    assert full["provides"] == {"commands": ["full-hello"], "exporters": ["txt"],
                                "sinks": ["memory"], "rpc_methods": ["full.echo"],
                                "frontends": ["full-ui"]}
    playlist = _playlist(tmp_path)
    out = write_playlist(playlist, tmp_path / "list.TXT")
    assert out.read_text().splitlines() == [e.path for e in playlist.entries]
    assert manager.sinks()["memory"].send(playlist, {}) == {}
    assert manager.rpc_methods()["full.echo"]("ENGINE", n=3) == {"engine": "ENGINE", "n": 3}
    assert manager.frontends()["full-ui"].run(x=1) == {"x": 1}
    group = click.Group("deejai")
    manager.install_commands(group)
    result = CliRunner().invoke(group, ["full-hello"])
    assert result.exit_code == 0 and result.output == "hello from full\n"


# --- broken plugins -------------------------------------------------------------------------


def test_broken_plugins_are_disabled_with_one_warning_each(with_example, with_broken, caplog):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = manager.plugin_report()
    plugin_warnings = [str(w.message) for w in caught if issubclass(w.category, PluginWarning)]
    assert len(plugin_warnings) == 3
    for name in ("broken_import", "broken_hook", "junk"):
        assert len([m for m in plugin_warnings if f"deejai plugin {name!r}" in m]) == 1
        assert len([r for r in caplog.records
                    if r.name == "deejai.plugins" and f"plugin {name!r}" in r.getMessage()]) == 1

    disabled = _disabled(report)
    assert set(disabled) == {"broken_import", "broken_hook", "junk"}
    assert disabled["broken_import"]["reason"] == (
        "failed to import: ModuleNotFoundError: No module named "
        "'deejai_dependency_that_is_not_installed'"
    )
    assert disabled["broken_import"]["distribution"] == "deejai-broken-import"
    assert disabled["broken_hook"]["reason"] == (
        "register_frontends() raised RuntimeError: the disk is on fire"
    )
    assert disabled["junk"]["reason"].startswith(
        "register_sinks() returned an item 'not a sink' (str), expected deejai.plugins.Sink"
    )
    # what a disabled plugin registered before it failed is gone; the rest keeps working
    assert "half-sink" not in manager.sinks()
    assert set(_loaded(report)) == BUILTINS | {"pls"}
    assert set(manager.exporters()) == {"m3u8", "xspf", "json", "pls"}
    pm = manager.get_plugin_manager()
    assert pm.get_plugin("broken_hook") is None and pm.get_plugin("junk") is None


JUNK_CASES = {
    "exporters_dict": (
        "from deejai.plugins import hookimpl\n"
        "@hookimpl\ndef register_exporters():\n    return {'m3u': None}\n",
        "register_exporters() returned {'m3u': None} (dict), expected a list of Exporter",
    ),
    "render_not_callable": (
        "from deejai.plugins import Exporter, hookimpl\n"
        "@hookimpl\ndef register_exporters():\n"
        "    return [Exporter('m3u', 'm3u', 'audio/x-mpegurl', 'render')]\n",
        "register_exporters() returned Exporter with render='render' (str), expected a callable",
    ),
    "extension_with_dot": (
        "from deejai.plugins import Exporter, hookimpl\n"
        "@hookimpl\ndef register_exporters():\n"
        "    return [Exporter('m3u', '.m3u', 'audio/x-mpegurl', lambda p, d: b'')]\n",
        "register_exporters() returned Exporter 'm3u' with extension '.m3u'; give it without",
    ),
    "rpc_list": (
        "from deejai.plugins import hookimpl\n"
        "@hookimpl\ndef register_rpc_methods():\n    return ['x.y']\n",
        "register_rpc_methods() returned ['x.y'] (list), expected a dict",
    ),
    "rpc_not_callable": (
        "from deejai.plugins import hookimpl\n"
        "@hookimpl\ndef register_rpc_methods():\n    return {'x.y': 42}\n",
        "register_rpc_methods() returned 'x.y': 42 (int), expected",
    ),
    "frontend_bad_description": (
        "from deejai.plugins import FrontEnd, hookimpl\n"
        "@hookimpl\ndef register_frontends():\n    return [FrontEnd('tray2', 3, print)]\n",
        "register_frontends() returned FrontEnd with description=3 (int), expected a non-empty",
    ),
    "unknown_hook": (
        "from deejai.plugins import hookimpl\n"
        "@hookimpl\ndef register_exportrs():\n    return []\n",
        "implements 'register_exportrs', which is not a deejai hook",
    ),
    "wrong_hook_arguments": (
        "from deejai.plugins import hookimpl\n"
        "@hookimpl\ndef register_commands(cli, colour):\n    pass\n",
        "cannot be registered: PluginValidationError",
    ),
    "command_not_a_command": (
        "from deejai.plugins import hookimpl\n"
        "@hookimpl\ndef register_commands(cli):\n    cli.commands['oops'] = print\n",
        "register_commands() added 'oops' as <built-in function print>",
    ),
    "import_exits": (
        "import sys\nsys.exit('needs a GPU')\n",
        "failed to import: SystemExit: needs a GPU",
    ),
}


@pytest.mark.parametrize("case", sorted(JUNK_CASES))
def test_junk_is_disabled_with_the_reason(case, tmp_path, monkeypatch):
    source, reason = JUNK_CASES[case]
    module = f"deejai_junk_{case}"
    install_dist(tmp_path / "site", f"deejai-junk-{case}", "0.1", {case: module}, {module: source})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.warns(PluginWarning, match=f"deejai plugin '{case}'") as caught:
        report = manager.plugin_report()
    assert len([w for w in caught if issubclass(w.category, PluginWarning)]) == 1
    disabled = _disabled(report)
    assert list(disabled) == [case]
    assert reason in disabled[case]["reason"]
    assert set(_loaded(report)) == BUILTINS
    assert set(manager.exporters()) == {"m3u8", "xspf", "json"}


def test_a_command_clashing_with_a_deejai_command_disables_the_plugin(tmp_path, monkeypatch):
    source = textwrap.dedent("""\
        import click
        from deejai.plugins import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command(name="plugins")
            def plugins():
                click.echo("not the real one")
    """)
    install_dist(tmp_path / "site", "deejai-clash", "0.1", {"clash": "deejai_clash"},
                 {"deejai_clash": source})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from deejai.ui_cli.main import LazyGroup

    group = LazyGroup("deejai")
    assert "clash" in _loaded(manager.plugin_report())  # a scratch group has no "scan"
    with pytest.warns(PluginWarning, match="'plugins', which deejai already has"):
        assert "plugins" not in manager.install_commands(group)
    assert "plugins" not in group.commands  # undone: the lazy built-in is still the one
    assert "clash" in _disabled(manager.plugin_report())


def test_a_second_plugin_with_a_taken_name_is_disabled(tmp_path, monkeypatch):
    source = "from deejai.plugins import hookimpl\n"
    install_dist(tmp_path / "site", "deejai-impostor", "0.1", {"mpd": "deejai_impostor"},
                 {"deejai_impostor": source})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.warns(PluginWarning, match="'mpd' is already used by another plugin"):
        report = manager.plugin_report()
    assert _loaded(report)["mpd"]["source"] == "built-in"
    assert "mpd" in manager.sinks()
    [impostor] = report["disabled"]
    assert impostor["name"] == "mpd" and impostor["distribution"] == "deejai-impostor"


# --- selection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, loaded, skipped",
    [
        ("*", {"pls"}, set()),
        ("", {"pls"}, set()),
        ("pls", {"pls"}, {"broken_import", "broken_hook", "junk"}),
        (" pls , not_installed ", {"pls"},
         {"broken_import", "broken_hook", "junk", "not_installed"}),
        ("-", set(), {"pls", "broken_import", "broken_hook", "junk"}),
    ],
)
def test_deejai_plugins_env_selects_entry_points(value, loaded, skipped, with_example,
                                                  with_broken, monkeypatch):
    monkeypatch.setenv("DEEJAI_PLUGINS", value)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        report = manager.plugin_report()
    assert set(_loaded(report)) - BUILTINS == loaded
    assert {s["name"] for s in report["skipped"]} == skipped
    if skipped >= {"broken_import", "broken_hook", "junk"}:
        assert report["disabled"] == []  # never imported
    reasons = {s["name"]: s["reason"] for s in report["skipped"]}
    if "not_installed" in reasons:
        assert reasons["not_installed"] == (
            "selected, but no installed package has this entry point")
        assert reasons["junk"] == "not selected (DEEJAI_PLUGINS or the plugins setting)"


def test_plugins_setting_selects_and_env_wins(with_example, with_broken, deejai_home,
                                              monkeypatch):
    from deejai.engine.config import paths

    settings = paths().ensure().settings_file
    settings.write_text('plugins = ["pls"]\n', encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)  # the broken ones are not even imported
        report = manager.plugin_report()
    assert "pls" in _loaded(report)
    assert {s["name"] for s in report["skipped"]} == {"broken_import", "broken_hook", "junk"}

    manager.reset_plugin_manager()
    monkeypatch.setenv("DEEJAI_PLUGINS", "-")
    assert {s["name"] for s in manager.plugin_report()["skipped"]} >= {"pls"}

    manager.reset_plugin_manager()
    monkeypatch.delenv("DEEJAI_PLUGINS")
    settings.write_text("plugins = 3\n", encoding="utf-8")
    # the settings schema refuses it first: a string, a list of names or nothing
    with pytest.raises(ConfigError, match=r"settings\.toml: expected `str \| array \| null`, "
                                          r"got `int` - at `plugins`"):
        manager.get_plugin_manager()


# --- deejai plugins -------------------------------------------------------------------------


def _run_cli(args: list[str], sites: list[Path]) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, sites), env.get("PYTHONPATH", "")])
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "deejai.ui_cli.main", *args],
        capture_output=True, text=True, env=env, timeout=120, cwd=str(ROOT),
    )


def test_deejai_plugins_lists_loaded_and_disabled(example_site, broken_site):
    proc = _run_cli(["plugins"], [example_site, broken_site])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") == 5}
    assert {"exporters", "mpd", "pls"} <= set(rows)
    assert "deejai-pls 1.0.0" in rows["pls"] and "commands, exporters" in rows["pls"]
    assert "commands: pls-show" in rows["pls"]
    assert "Disabled plugins" in out
    assert ("broken_import (deejai-broken-import 0.1): failed to import: ModuleNotFoundError: "
            "No module named 'deejai_dependency_that_is_not_installed'") in out
    assert ("broken_hook (deejai-broken-hook 0.2): register_frontends() raised RuntimeError: "
            "the disk is on fire") in out
    assert "junk (deejai-junk 0.3): register_sinks() returned an item 'not a sink'" in out
    # and one warning line per broken plugin on stderr
    for name in ("broken_import", "broken_hook", "junk"):
        assert proc.stderr.count(f"deejai plugin '{name}'") == 1, proc.stderr


def test_deejai_plugins_json(example_site, broken_site):
    proc = _run_cli(["plugins", "--json"], [example_site, broken_site])
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert _loaded(report)["pls"]["provides"] == {"commands": ["pls-show"], "exporters": ["pls"]}
    assert set(_disabled(report)) == {"broken_import", "broken_hook", "junk"}
    assert _disabled(report)["broken_hook"]["version"] == "0.2"


def test_deejai_plugins_in_process_without_third_party_plugins():
    result = CliRunner().invoke(click.Group(commands={"plugins": _plugins_command()}),
                                ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [p["name"] for p in report["loaded"]] == list(manager.BUILTIN_PLUGINS)
    assert report["disabled"] == [] and report["skipped"] == []


def _plugins_command() -> click.Command:
    from deejai.ui_cli.plugins import plugins

    return plugins

