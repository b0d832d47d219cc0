"""The error tree and the configuration (paths, settings file, environment overrides)."""
from __future__ import annotations

import pytest

from deejai.engine import config
from deejai.engine.errors import (
    AmbiguousTrackError,
    AudioError,
    ConfigError,
    DaemonError,
    DeejaiError,
    InvalidParamsError,
    LibraryEmptyError,
    TrackNotFoundError,
    error_from_code,
)


def test_error_codes_are_unique_and_in_the_server_range():
    seen = {}

    def walk(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from walk(sub)

    for cls in walk(DeejaiError):
        # InvalidParamsError is JSON-RPC's own "invalid params", as for a mistyped value
        assert -32099 <= cls.code <= -32000 or (cls is InvalidParamsError and cls.code == -32602), cls
        if "code" not in cls.__dict__:  # shares its parent's code on purpose
            continue
        assert cls.code not in seen, (cls, seen.get(cls.code))
        seen[cls.code] = cls


def test_error_round_trips_through_its_code():
    err = AmbiguousTrackError("intro", [{"id": 1, "label": "A - Intro"}, {"id": 2, "label": "B - Intro"}])
    back = error_from_code(err.code, str(err), err.data())
    assert isinstance(back, AmbiguousTrackError)
    assert str(back) == str(err)
    assert back.candidates == err.candidates
    assert back.exit_code == 2
    assert isinstance(error_from_code(-32099, "odd"), DaemonError)
    assert isinstance(error_from_code(TrackNotFoundError.code, "x"), TrackNotFoundError)


def test_audio_error_names_the_file_and_reason():
    err = AudioError("/music/a b.mp3", "not an audio file")
    assert str(err) == "/music/a b.mp3: not an audio file"
    assert "deejai scan" in str(LibraryEmptyError())


def test_paths_under_deejai_home(deejai_home):
    p = config.paths()
    assert p.library_file == deejai_home / "data" / "library.sqlite"
    assert p.socket_file.parent == deejai_home / "run"
    p.ensure()
    assert (p.runtime_dir.stat().st_mode & 0o777) == 0o700


def test_paths_follow_xdg_without_deejai_home(monkeypatch, tmp_path):
    monkeypatch.delenv("DEEJAI_HOME")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    p = config.paths()
    assert p.socket_file == tmp_path / "run" / "deejai" / "deejai.sock"
    assert p.data_dir == tmp_path / "data" / "deejai"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert config.paths().runtime_dir.name == "run"


def test_settings_file_and_environment(monkeypatch):
    from deejai.plugins.mpd import MpdSettings

    p = config.paths().ensure()
    p.settings_file.write_text('workers = 3\n[mpd]\nhost = "box"\n')
    s = config.load_settings(p, sections={"mpd": MpdSettings})
    assert s["workers"] == 3 and s["mpd"]["host"] == "box" and s["mpd"]["port"] == 6600
    monkeypatch.setenv("DEEJAI_WORKERS", "1")
    monkeypatch.setenv("DEEJAI_MPD__PORT", "6601")
    s = config.load_settings(p, sections={"mpd": MpdSettings})
    assert s["workers"] == 1 and s["mpd"]["port"] == 6601
    assert config.DEFAULTS["workers"] == 0  # defaults are never mutated
    monkeypatch.setenv("DEEJAI_WORKERS", "many")
    with pytest.raises(ConfigError):
        config.load_settings(p)


def test_bad_settings_file_is_a_config_error():
    p = config.paths().ensure()
    p.settings_file.write_text("workers = = 3\n")
    with pytest.raises(ConfigError, match="settings.toml"):
        config.load_settings(p)
