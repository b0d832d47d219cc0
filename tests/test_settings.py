"""Settings with a schema: types, defaults, origins, no keys made up by the environment."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deejai.engine import config
from deejai.engine.errors import ConfigError
from deejai.plugins import manager
from deejai.plugins.mpd import MpdSettings
from deejai.plugins.tray import TraySettings

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = {"mpd": MpdSettings, "tray": TraySettings}


@pytest.fixture(autouse=True)
def builtins_only(monkeypatch):
    monkeypatch.setenv("DEEJAI_PLUGINS", "-")
    manager.reset_plugin_manager()
    yield
    manager.reset_plugin_manager()


def _write(text: str) -> config.Paths:
    p = config.paths().ensure()
    p.settings_file.write_text(text, encoding="utf-8")
    return p


def test_origins_say_default_file_or_environment(monkeypatch):
    p = _write('music_dirs = ["~/Music"]\n[mpd]\nhost = "box"\n')
    monkeypatch.setenv("DEEJAI_TRAY__JOIN_LENGTH", "12")
    s = config.load_settings(p, sections=SECTIONS)
    assert s.origins["music_dirs"] == "file" and s.origins["model"] == "default"
    assert s.origins["mpd.host"] == "file" and s.origins["mpd.port"] == "default"
    assert s.origins["tray.join_length"] == "environment" and s["tray"]["join_length"] == 12
    # a path is made absolute once, where it is read
    assert s["music_dirs"] == [os.path.expanduser("~/Music")]
    assert s.section("mpd") == {"host": "box", "port": 6600, "music_directory": "",
                                "password": ""}


def test_the_environment_cannot_create_keys(monkeypatch):
    monkeypatch.setenv("DEEJAI_TOKEN", "secret")
    monkeypatch.setenv("DEEJAI_COLOUR", "red")
    monkeypatch.setenv("DEEJAI_MPD__VOLUME", "11")
    monkeypatch.setenv("DEEJAI_NOSUCH__KEY", "1")
    s = config.load_settings(sections=SECTIONS)
    assert "token" not in s and "colour" not in s and "nosuch" not in s
    assert "volume" not in s["mpd"]
    assert not any("token" in k for k in s.origins)


@pytest.mark.parametrize("text, var, value, match", [
    ("workers = 'two'\n", None, None, r"settings.toml: expected `int`, got `str` - at `workers`"),
    ("scan_executor = 'cluster'\n", None, None, "scan_executor"),
    ("[mpd]\nport = 70000\n", None, None, r"\[mpd\].*port"),
    ("", "DEEJAI_TRAY__POLL_INTERVAL_S", "0", r"DEEJAI_TRAY__POLL_INTERVAL_S.*poll_interval_s"),
    ("", "DEEJAI_PATCHES", "-3", "patches"),
])
def test_a_wrong_value_is_a_one_line_error(monkeypatch, text, var, value, match):
    p = _write(text)
    if var:
        monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError, match=match) as info:
        config.load_settings(p, sections=SECTIONS)
    assert "\n" not in str(info.value)


def test_unknown_keys_are_ignored_with_one_warning(caplog):
    p = _write("colour = 'red'\n[mpd]\nvolume = 11\n[someplugin]\nx = 1\n")
    with caplog.at_level("WARNING", logger="deejai.engine.config"):
        s = config.load_settings(p, sections=SECTIONS)
        config.load_settings(p, sections=SECTIONS)
    assert "colour" not in s and "volume" not in s["mpd"]
    assert s["someplugin"] == {"x": 1}  # a section whose plugin is not loaded stays as it is
    warned = [r.getMessage() for r in caplog.records]
    assert sum("'colour'" in m for m in warned) == 1 and sum("'mpd.volume'" in m for m in warned) == 1


def test_plugins_declare_their_sections():
    assert {"mpd", "tray"} <= set(manager.settings_sections())
    report = {i["name"]: i for i in manager.plugin_report()["loaded"]}
    assert report["mpd"]["provides"]["settings"] == ["mpd"]
    s = manager.load_settings()
    assert s["tray"]["send_to"] == "open" and s["mpd"]["port"] == 6600


def test_settings_document_lists_every_key():
    text = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    start = text.index(config.DOC_BEGIN) + len(config.DOC_BEGIN)
    end = text.index(config.DOC_END)
    expected = config.settings_markdown({"": config.CoreSettings, **manager.settings_sections()})
    assert text[start:end].strip() == expected.strip(), (
        "docs/settings.md is out of date: run "
        "`DEEJAI_PLUGINS=- python -m deejai.plugins.manager docs/settings.md`")
    for key in ("workers", "music_dirs", "host", "poll_interval_s"):
        assert f"| `{key}` |" in text


def test_deejai_config_prints_values_and_origins(deejai_home):
    _write("workers = 3\n[mpd]\nhost = 'box'\n")
    env = {**os.environ, "DEEJAI_HOME": str(deejai_home), "DEEJAI_MPD__PORT": "6601",
           "DEEJAI_TOKEN": "x", "DEEJAI_PLUGINS": "-"}
    run = subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", "config"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("workers") and "= 3" in line and line.endswith("# file")
               for line in lines), run.stdout
    assert any(line.startswith("port") and "6601" in line and "DEEJAI_MPD__PORT" in line
               for line in lines)
    assert any(line.startswith("model") and line.endswith("# default") for line in lines)
    assert "[mpd]" in lines and "token" not in run.stdout
    run = subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", "config", "--json"],
                         env=env, capture_output=True, text=True, timeout=60)
    doc = json.loads(run.stdout)
    assert doc["mpd"]["host"] == {"value": "box", "origin": "file"}
    assert doc[""]["workers"] == {"value": 3, "origin": "file"}
