"""The contract every front end stands on: one method table, a transport-free dispatcher.

* ``docs/protocol.md``'s method list is the method table's;
* the dispatcher answers through an in-process transport (no socket) with the same replies,
  errors and notifications the daemon sends;
* the client's methods are the table's, with the Engine's signatures.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from deejai.engine.errors import ConfigError, DaemonError, LibraryEmptyError, PlaylistError
from deejai.engine.methods import DOC_BEGIN, DOC_END, markdown_table
from deejai.engine.rpc import Client, Dispatcher, InProcessTransport
from deejai.engine.rpc.dispatch import contract
from deejai.engine.service import ENGINE_METHODS, Engine
from tests.audiogen import make_library

ROOT = Path(__file__).resolve().parents[1]


def test_protocol_document_lists_the_method_table():
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    start, end = text.index(DOC_BEGIN) + len(DOC_BEGIN), text.index(DOC_END)
    assert text[start:end].strip() == markdown_table(contract()).strip(), (
        "docs/protocol.md is out of date: run `python -m deejai.engine.methods`")
    names = {m.name for m in contract()}
    assert {"playlist.join", "library.scan", "engine.ping", "engine.status"} <= names


def test_every_public_engine_method_is_in_the_table_or_local():
    """A public Engine method is on the wire, or one of the few that only make sense in
    process (events by callback, waiting, closing)."""
    local = {"subscribe", "wait_scan", "close", "send"}
    public = {n for n, v in vars(Engine).items() if callable(v) and not n.startswith("_")}
    assert public == {m.attr for m in ENGINE_METHODS.values()} | local


@pytest.fixture
def local_client():
    engine = Engine(scan_executor="thread")
    transport = InProcessTransport(Dispatcher(engine))
    client = Client(transport, transport.address, timeout=60)
    yield client, engine
    client.close()
    engine.close()


def test_in_process_transport_speaks_the_protocol(local_client):
    client, engine = local_client
    assert client.ping()["pong"] is True
    assert client.scan_status() == {"job": None, "state": "idle"}
    with pytest.raises(LibraryEmptyError):
        client.join(waypoints=[1, 2])
    with pytest.raises(PlaylistError, match="two waypoints"):
        client.join(["only one"])
    with pytest.raises(DaemonError, match="method not found"):
        client.call("library.drop_all")
    with pytest.raises(ConfigError, match="/no/such/folder"):
        client.scan(paths=["/no/such/folder"])


@pytest.mark.parametrize("params, name, message", [
    ({"waypoints": ["a", "b"], "n": "eight"}, "n", "n: expected `int`, got `str`"),
    ({"waypoints": ["a", "b"], "n": True}, "n", "n: expected `int`, got `bool`"),
    ({"waypoints": [["a"], "b"]}, "waypoints", "at `waypoints[0]`"),
    ({"waypoints": ["a", "b"], "seed": 1.5}, "seed", "seed: expected `int | null`"),
    ({"waypoints": ["a", "b"], "colour": "red"}, "colour", "unexpected parameter 'colour'"),
    ({}, "waypoints", "missing required parameter 'waypoints'"),
])
def test_parameters_are_checked_against_the_table(params, name, message):
    engine = Engine()
    transport = InProcessTransport(Dispatcher(engine))
    transport.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "playlist.join",
                               "params": params}).encode() + b"\n")
    reply = json.loads(next(transport.lines()))
    assert reply["error"]["code"] == -32602
    assert message in reply["error"]["message"]
    assert reply["error"]["data"] == {"param": name}
    transport.close()
    engine.close()


def test_numbers_accept_integers(local_client):
    """An integer where a number is expected is fine (the call then fails for its own
    reason: the library is empty)."""
    client, _ = local_client
    with pytest.raises(LibraryEmptyError):
        client.join(waypoints=["a", "b"], noise=1, max_duration_s=300)


def test_notifications_reach_an_in_process_subscriber(local_client, tmp_path):
    client, _ = local_client
    make_library(tmp_path / "music", n=2, seconds=3.0)
    events = client.events(timeout=120)
    job = client.scan(paths=[str(tmp_path / "music")], workers=1)["job"]
    seen = []
    for event, params in events:
        assert params["job"] == job
        seen.append(event)
        if event == "scan.finished":
            break
    assert seen[-1] == "scan.finished" and "scan.progress" in seen
    assert client.scan_status(job)["state"] == "finished"
    assert [t["title"] for t in client.tracks()] != []


def test_client_signatures_are_the_engines(local_client):
    client, engine = local_client
    for method in ENGINE_METHODS.values():
        assert inspect.signature(getattr(client, method.attr)) == inspect.signature(
            getattr(engine, method.attr)), method.name


# ------------------------------------------------------------------------------ layers
FORBIDDEN = ("deejai.plugins", "deejai.ui_cli", "deejai.ui_kivy", "click", "kivy", "pystray")


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    """Every module an engine file imports (top level or inside functions), absolute."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return out


def test_the_engine_imports_no_plugin_no_ui_and_no_toolkit():
    """A static walk of every module of deejai.engine: no edge to plugins, UIs, click, Kivy or
    pystray, even inside a function."""
    engine_dir = ROOT / "engine"
    files = sorted(engine_dir.rglob("*.py"))
    assert len(files) > 15
    bad = []
    for path in files:
        rel = path.relative_to(engine_dir).with_suffix("")
        parts = ["deejai", "engine", *rel.parts]
        package = ".".join(parts[:-1] if parts[-1] != "__init__" else parts[:-1])
        for line, name in _imports(path, package):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN):
                bad.append(f"engine/{path.relative_to(engine_dir)}:{line} imports {name}")
    assert bad == []


def test_the_import_walk_sees_imports_inside_functions(tmp_path):
    """The check above would catch a lazy import (it did: service.py imported the plugin
    manager inside Engine.export)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from deejai.plugins import manager\n    import click\n")
    assert [n for _, n in _imports(f, "deejai.engine")] == ["deejai.plugins", "click"]


def test_the_built_in_exporters_do_not_import_the_plugin_manager():
    """The old cycle plugins/exporters.py <-> plugins/manager.py is gone."""
    names = [n for _, n in _imports(ROOT / "plugins" / "exporters.py", "deejai.plugins")]
    assert not any(n.startswith("deejai.plugins.manager") for n in names), names


def test_the_tray_launches_the_kivy_app_and_never_imports_it():
    for path in sorted((ROOT / "plugins" / "tray").glob("*.py")):
        names = [n for _, n in _imports(path, "deejai.plugins.tray")]
        assert not any(n == "kivy" or n.startswith(("deejai.ui_kivy", "kivy.")) for n in names), (
            path.name, names)
    from deejai.plugins.tray import desktop

    app = desktop.kivy_app_command("radio")
    if app is not None:
        assert app[1:] == ["-m", "deejai.ui_kivy.app", "--screen", "radio"]


def test_front_ends_do_not_recognise_errors_by_text_or_class_name():
    """Connection errors are typed; no front end reads a message or a class name to decide."""
    import re

    pattern = re.compile(r"in str\((exc|e|err|error)\)|type\([^)]*\)\.__name__ *[=!]=|"
                         r"__name__ == \"Client\"|type\((exc|e|err|error)\) is (not )?\w+Error")
    hits = []
    for folder in ("ui_cli", "ui_kivy", "plugins/tray", "engine/rpc"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    hits.append(f"{folder}/{path.name}:{no}: {line.strip()}")
    assert hits == []


# ------------------------------------------------------------------------------ public API
def test_the_public_api_is_small_and_documented():
    import deejai.engine as api

    assert sorted(api.__all__) == sorted([
        "Engine", "connect", "Playlist", "PlaylistEntry", "DeejaiError", "ConfigError",
        "TrackNotFoundError", "AmbiguousTrackError", "LibraryEmptyError", "PlaylistError",
        "DaemonError", "DaemonNotRunning", "ConnectionLost", "AuthenticationFailed"])
    for name in api.__all__:
        obj = getattr(api, name)
        assert (obj.__doc__ or "").strip() or issubclass(obj, api.DeejaiError), name
    assert api.Engine is Engine and api.connect.__module__ == "deejai.engine.rpc.connect"
    for err in ("DaemonNotRunning", "ConnectionLost", "AuthenticationFailed"):
        assert issubclass(getattr(api, err), api.DaemonError)
        assert getattr(api, err).hint  # says what to do next
    with pytest.raises(AttributeError):
        api.Library  # plumbing is not the API


def test_importing_the_api_stays_light():
    import subprocess
    import sys

    code = ("import sys, deejai.engine as e; "
            "print(sorted(m for m in ('numpy', 'deejai.engine.service', 'deejai.engine.rpc', "
            "'msgspec') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_connect_falls_back_as_asked(tmp_path, monkeypatch):
    """No daemon: an error by default, an Engine in process when asked, the typed error."""
    from deejai.engine import DaemonNotRunning, connect

    monkeypatch.setenv("DEEJAI_SOCKET", str(tmp_path / "nobody.sock"))
    with pytest.raises(DaemonNotRunning, match="deejai serve"):
        connect(timeout=0.5)
    engine = connect(timeout=0.5, fallback="in-process")
    try:
        assert isinstance(engine, Engine)
    finally:
        engine.close()
    built = []
    connect(timeout=0.5, fallback="in-process",
            engine_factory=lambda: built.append(1) or "engine")
    assert built == [1]
