"""Where deejai keeps its files, and its settings.

Paths follow the XDG base directory specification through platformdirs. ``DEEJAI_HOME`` puts
everything under one folder (tests and portable installs use it)::

    $DEEJAI_HOME/config/settings.toml
    $DEEJAI_HOME/data/library.sqlite   (the index sidecar files sit beside it)
    $DEEJAI_HOME/state/deejai.log
    $DEEJAI_HOME/run/deejai.sock

Settings are read from ``settings.toml`` (TOML). Environment variables ``DEEJAI_<KEY>``
(upper case, dots as ``__``) override single keys, e.g. ``DEEJAI_WORKERS=1`` or
``DEEJAI_MPD__HOST=musicbox``.
"""
from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deejai.engine.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Paths", "paths", "load_settings", "DEFAULTS", "APP_NAME"]

APP_NAME = "deejai"

#: Default settings; ``settings.toml`` and ``DEEJAI_*`` variables override them.
DEFAULTS: dict[str, Any] = {
    "model": "msd-musicnn-v2",  # deejai.models.DEFAULT_MODEL
    "workers": 0,  # 0: one per CPU core
    "scan_executor": "process",  # "thread" where processes cannot be started (phones)
    "music_dirs": [],
    "mpd": {"host": "localhost", "port": 6600, "music_directory": ""},
}


@dataclass(frozen=True)
class Paths:
    """The folders deejai uses. Nothing is created until :meth:`ensure` is called."""

    config_dir: Path
    data_dir: Path
    state_dir: Path
    runtime_dir: Path

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.toml"

    @property
    def library_file(self) -> Path:
        return self.data_dir / "library.sqlite"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "deejai.log"

    @property
    def socket_file(self) -> Path:
        return self.runtime_dir / "deejai.sock"

    def ensure(self) -> "Paths":
        """Create the folders (the runtime folder with mode 0700) and return self."""
        for d in (self.config_dir, self.data_dir, self.state_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.chmod(self.runtime_dir, 0o700)
        except OSError:  # pragma: no cover - e.g. a filesystem without modes
            pass
        return self


def paths() -> Paths:
    """Return the folders for this user, honouring ``DEEJAI_HOME``.

    Returns
    -------
    Paths
        ``DEEJAI_HOME/{config,data,state,run}`` when ``DEEJAI_HOME`` is set; else the
        platformdirs user folders, and ``$XDG_RUNTIME_DIR/deejai`` for the socket (falling
        back to a per-user folder in the state dir where ``XDG_RUNTIME_DIR`` is unset).
    """
    home = os.environ.get("DEEJAI_HOME")
    if home:
        root = Path(home).expanduser()
        return Paths(root / "config", root / "data", root / "state", root / "run")
    import platformdirs

    state = Path(platformdirs.user_state_dir(APP_NAME))
    runtime_base = os.environ.get("XDG_RUNTIME_DIR")
    runtime = Path(runtime_base) / APP_NAME if runtime_base else state / "run"
    return Paths(
        Path(platformdirs.user_config_dir(APP_NAME)),
        Path(platformdirs.user_data_dir(APP_NAME)),
        state,
        runtime,
    )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(text: str, like: Any) -> Any:
    if isinstance(like, bool):
        return text.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(like, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"expected an integer, got {text!r}") from None
    if isinstance(like, list):
        return [p for p in text.split(os.pathsep) if p]
    return text


def load_settings(p: Paths | None = None) -> dict[str, Any]:
    """Read the settings: defaults, then ``settings.toml``, then ``DEEJAI_*`` variables.

    Raises
    ------
    ConfigError
        When the settings file is not valid TOML.
    """
    p = p or paths()
    settings = copy.deepcopy(DEFAULTS)
    if p.settings_file.is_file():
        try:
            with open(p.settings_file, "rb") as fh:
                settings = _merge(settings, tomllib.load(fh))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p.settings_file}: not valid TOML ({exc})") from None
    reserved = {"HOME", "SOCKET", "PLUGINS", "DEBUG"}
    for name, value in os.environ.items():
        if not name.startswith("DEEJAI_") or name[7:] in reserved:
            continue
        keys = name[7:].lower().split("__")
        node = settings
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                break
        else:
            node[keys[-1]] = _coerce(value, node.get(keys[-1], ""))
    return settings
