"""Where deejai keeps its files, and its settings.

Paths follow the XDG base directory specification through platformdirs. ``DEEJAI_HOME`` puts
everything under one folder (tests and portable installs use it)::

    $DEEJAI_HOME/config/settings.toml
    $DEEJAI_HOME/data/library.sqlite   (the index sidecar files sit beside it)
    $DEEJAI_HOME/state/deejai.log
    $DEEJAI_HOME/run/deejai.sock

Settings have a schema: :class:`CoreSettings` for the engine's own keys (top level of the
file), and one :class:`msgspec.Struct` per plugin section (``[mpd]``, ``[tray]``), which each
plugin declares through the ``register_settings`` hook, as Mopidy extensions declare their
config schema. :func:`load_settings` reads the defaults, then ``settings.toml`` (TOML), then
environment variables ``DEEJAI_<KEY>`` (upper case, sections as ``<SECTION>__``), e.g.
``DEEJAI_WORKERS=1`` or ``DEEJAI_MPD__HOST=musicbox``; every value is checked against its type
and :attr:`Settings.origins` records where it came from. A variable can only override a key
the schema has (``DEEJAI_TOKEN`` is not a setting). ``deejai config`` prints the result and
``docs/settings.md`` lists every key.
"""
from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import msgspec

from deejai.engine.errors import ConfigError
from deejai.models import DEFAULT_MODEL

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Paths",
    "paths",
    "load_settings",
    "Settings",
    "CoreSettings",
    "PathText",
    "describe_schema",
    "settings_markdown",
    "DEFAULTS",
    "APP_NAME",
]

APP_NAME = "deejai"

log = logging.getLogger(__name__)

#: A setting that is a path: ``~`` is expanded and it is made absolute when read.
PathText = Annotated[str, msgspec.Meta(extra={"path": True})]


def _help(text: str, **constraints: Any) -> Any:
    return msgspec.Meta(description=text, **constraints)


class CoreSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The engine's settings: the top level of ``settings.toml``."""

    model: Annotated[str, _help("Model card name (a folder of deejai/models) or a model folder.")] \
        = DEFAULT_MODEL
    model_variant: Annotated[Literal["auto", "int8", "fp32"], _help(
        "Which file of a model with variants a scan runs: auto (int8 where the CPU has int8 "
        "dot products, else the faster of the two, measured once), int8 or fp32.")] = "auto"
    workers: Annotated[int, _help("Worker processes of a scan; 0: one per CPU core.", ge=0)] = 0
    max_workers: Annotated[int, _help(
        "Most worker processes a scan may start, whatever it asks for; 0: the CPU cores "
        "(a larger value lets a scan use more).", ge=0)] = 0
    scan_executor: Annotated[Literal["process", "thread"], _help(
        "Where a scan analyses files: worker processes, or threads (phones).")] = "process"
    executor: Annotated[str | None, _help(
        "A Dask scheduler's address (tcp://host:8786, tls://...) whose workers analyse the "
        "files of a scan (docs/cluster.md); unset or \"local\": this machine, as "
        "scan_executor says.")] = None
    ship_audio: Annotated[bool, _help(
        "With a Dask executor: send each file's bytes to the workers instead of letting them "
        "read it by path (clusters that do not share the music's filesystem).")] = False
    music_dirs: Annotated[list[PathText], _help(
        "Folders `deejai scan` scans when given none (environment: separated by the "
        "path separator).")] = msgspec.field(default_factory=list)
    patches: Annotated[Annotated[int, msgspec.Meta(ge=0)] | None, _help(
        "Patches (~3 s) analysed per track; 0: every patch; unset: the engine's default.")] \
        = None
    playlist_dir: Annotated[PathText, _help(
        "Folder the engine's playlist.export writes playlists to; a relative path given to it "
        "lands here. Empty: the playlists folder of the data folder.")] = ""
    export_dirs: Annotated[list[PathText], _help(
        "Further folders the engine's playlist.export may write playlists to (the command "
        "line and the apps write files themselves, wherever you tell them).")] \
        = msgspec.field(default_factory=list)
    plugins: Annotated[list[str] | str | None, _help(
        "Entry-point plugins to load: a list of names, \"*\" (all, the default) or \"-\" "
        "(none); DEEJAI_PLUGINS wins.")] = None


_warned: set[tuple[str, str]] = set()


def _warn_unknown(file: Path, key: str) -> None:
    """Warn once per process about an unknown key of the settings file."""
    if (str(file), key) not in _warned:
        _warned.add((str(file), key))
        log.warning("%s: unknown setting %r ignored", file, key)


#: Environment variables of deejai that are not settings.
_NOT_SETTINGS = {"HOME", "SOCKET", "PLUGINS", "DEBUG", "NO_DAEMON", "TOKEN"}


def _defaults(schema: type) -> dict[str, Any]:
    return msgspec.to_builtins(schema())


#: The engine's default settings (a copy; the schema is :class:`CoreSettings`).
DEFAULTS: dict[str, Any] = _defaults(CoreSettings)


class Settings(dict):
    """The effective settings: a dict (top-level keys, then one dict per section) whose
    values passed their schema.

    Attributes
    ----------
    origins : dict of str to str
        ``"key"`` or ``"section.key"`` -> ``"default"``, ``"file"`` or ``"environment"``.
    schemas : dict of str to type
        ``""`` (the core) and each section name -> its :class:`msgspec.Struct`.
    file : Path
        The settings file that was read (it may not exist).
    """

    origins: dict[str, str]
    schemas: dict[str, type]
    file: Path

    def section(self, name: str) -> dict[str, Any]:
        """The ``[name]`` section (empty when absent): what a sink or plugin receives."""
        value = self.get(name)
        return dict(value) if isinstance(value, Mapping) else {}


def describe_schema(schema: type) -> list[dict[str, Any]]:
    """``[{"key", "type", "default", "help"}]`` for each field of a settings schema."""
    info = msgspec.inspect.type_info(schema)
    out = []
    defaults = _defaults(schema)
    for f in info.fields:
        out.append({"key": f.name, "type": _type_text(f.type),
                    "default": defaults.get(f.name),
                    "help": _description(f.type)})
    return out


#: Where the generated key list of ``docs/settings.md`` starts and ends.
DOC_BEGIN = "<!-- settings: generated from the schemas; do not edit by hand -->"
DOC_END = "<!-- end of settings -->"


def settings_markdown(schemas: Mapping[str, type]) -> str:
    """One table per section (``""``: the top level) of every key: type, default, help."""
    import json

    parts = []
    for name, schema in schemas.items():
        parts.append(f"### {'[' + name + ']' if name else 'Top level'}\n")
        env = f"DEEJAI_{name.upper()}__<KEY>" if name else "DEEJAI_<KEY>"
        parts.append(f"Environment: `{env}`.\n")
        parts.append("| key | type | default | meaning |\n|---|---|---|---|")
        for row in describe_schema(schema):
            default = "unset" if row["default"] is None else f"`{json.dumps(row['default'])}`"
            parts.append(f"| `{row['key']}` | {row['type']} | {default} | {row['help']} |")
        parts.append("")
    return "\n".join(parts)


def _description(t: Any) -> str:
    while isinstance(t, msgspec.inspect.Metadata):
        text = (t.extra_json_schema or {}).get("description")
        if text:
            return str(text)
        t = t.type
    return ""


def _type_text(t: Any) -> str:
    ti = msgspec.inspect
    if isinstance(t, ti.Metadata):
        return _type_text(t.type)
    if isinstance(t, ti.UnionType):
        return " or ".join(_type_text(x) for x in t.types)
    if isinstance(t, ti.LiteralType):
        return " or ".join(repr(v) for v in t.values)
    if isinstance(t, ti.ListType):
        return f"list of {_type_text(t.item_type)}"
    names = {ti.StrType: "string", ti.IntType: "integer", ti.FloatType: "number",
             ti.BoolType: "boolean", ti.NoneType: "unset"}
    return names.get(type(t), type(t).__name__.removesuffix("Type").lower())


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
    def playlist_dir(self) -> Path:
        """Where playlists go unless the ``playlist_dir`` setting says otherwise."""
        return self.data_dir / "playlists"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "deejai.log"

    @property
    def socket_file(self) -> Path:
        return self.runtime_dir / "deejai.sock"

    def ensure(self) -> "Paths":
        """Create the folders, each with mode 0700 (whatever the umask), and return self.

        The library, the history of scans, the log and the settings (which may hold the MPD
        password) are the user's alone: a folder that exists with looser bits is tightened.
        """
        from deejai.engine._fs import private_dir

        for d in (self.config_dir, self.data_dir, self.state_dir, self.runtime_dir):
            private_dir(d)
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


def _path_fields(schema: type) -> dict[str, bool]:
    """Field name -> True when it holds a :data:`PathText` (or a list of them)."""
    out = {}
    for f in msgspec.inspect.type_info(schema).fields:
        t = f.type
        while isinstance(t, (msgspec.inspect.Metadata, msgspec.inspect.ListType)):
            if isinstance(t, msgspec.inspect.Metadata) and (t.extra or {}).get("path"):
                out[f.name] = True
                break
            t = t.type if isinstance(t, msgspec.inspect.Metadata) else t.item_type
    return out


def _absolute(value: Any) -> Any:
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    if isinstance(value, str) and value:
        return os.path.abspath(os.path.expanduser(value))
    return value


def _from_env(text: str, schema: type, key: str) -> Any:
    """An environment variable's text for ``schema``'s field ``key`` (lists split on the
    path separator; numbers and booleans parsed by msgspec)."""
    info = {f.name: f.type for f in msgspec.inspect.type_info(schema).fields}[key]
    while isinstance(info, msgspec.inspect.Metadata):
        info = info.type
    if isinstance(info, msgspec.inspect.ListType) or (
            isinstance(info, msgspec.inspect.UnionType)
            and any(isinstance(t, msgspec.inspect.ListType) for t in info.types)
            and os.pathsep in text):
        return [p for p in text.split(os.pathsep) if p]
    if isinstance(info, msgspec.inspect.BoolType):
        return text.strip().lower() in ("1", "true", "yes", "on")
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return text


def _validate(schema: type, values: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        obj = msgspec.convert(values, schema, str_keys=True)
    except msgspec.ValidationError as exc:
        reason = str(exc).replace("`$.", "`")
        raise ConfigError(f"{where}: {reason[:1].lower()}{reason[1:]}") from None
    out = msgspec.to_builtins(obj)
    for name in _path_fields(schema):
        out[name] = _absolute(out[name])
    return out


def load_settings(p: Paths | None = None, *,
                  sections: Mapping[str, type] | None = None) -> Settings:
    """Read the settings: defaults, then ``settings.toml``, then ``DEEJAI_*`` variables.

    Parameters
    ----------
    p : Paths, optional
        Default :func:`paths`.
    sections : dict of str to msgspec.Struct type, optional
        The plugins' schemas, by section name (the plugin manager's ``settings_sections()``).
        A section of the file without a schema here is kept as it is, unchecked (its plugin
        is not loaded), and no variable can change it.

    Returns
    -------
    Settings

    Raises
    ------
    ConfigError
        When the file is not valid TOML, or a value (from the file or a variable) does not fit
        its type; the message names the file or variable and the key.

    Notes
    -----
    A key the schema does not have is left out with a warning on the ``deejai.engine.config``
    logger (a typo must not pass silently, but must not stop the daemon either).
    """
    p = p or paths()
    schemas: dict[str, type] = {"": CoreSettings, **dict(sections or {})}
    raw: dict[str, Any] = {}
    if p.settings_file.is_file():
        try:
            with open(p.settings_file, "rb") as fh:
                raw = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p.settings_file}: not valid TOML ({exc})") from None
    origins: dict[str, str] = {}
    layers: dict[str, dict[str, Any]] = {name: {} for name in schemas}
    extra: dict[str, Any] = {}
    core_keys = {f.name for f in msgspec.inspect.type_info(CoreSettings).fields}
    for key, value in raw.items():
        if key in schemas and key and isinstance(value, dict):
            layers[key].update(value)
        elif key in core_keys:
            layers[""][key] = value
        elif isinstance(value, dict):
            extra[key] = value  # a section whose plugin gave no schema: kept as it is
        else:
            _warn_unknown(p.settings_file, key)
    for name, schema in schemas.items():
        known = {f.name for f in msgspec.inspect.type_info(schema).fields}
        for key in list(layers[name]):
            if key not in known:
                _warn_unknown(p.settings_file, f"{name}.{key}" if name else key)
                del layers[name][key]
        for key in layers[name]:
            origins[f"{name}.{key}" if name else key] = "file"
    env_layers: dict[str, dict[str, Any]] = {name: {} for name in schemas}
    for var, text in os.environ.items():
        if not var.startswith("DEEJAI_") or var[7:] in _NOT_SETTINGS:
            continue
        parts = var[7:].lower().split("__")
        name, key = (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])
        schema = schemas.get(name) if len(parts) <= 2 else None
        if schema is None or key not in {f.name for f in msgspec.inspect.type_info(
                schema).fields}:
            continue  # not a setting: a variable cannot create keys
        env_layers[name][key] = _from_env(text, schema, key)
        origins[f"{name}.{key}" if name else key] = "environment"
    out = Settings()
    for name, schema in schemas.items():
        values = {**layers[name], **env_layers[name]}
        env_names = ", ".join(f"DEEJAI_{(name + '__') if name else ''}{k}".upper()
                              for k in env_layers[name])
        where = str(p.settings_file) + (f" or {env_names}" if env_names else "")
        checked = _validate(schema, values, where + (f" [{name}]" if name else ""))
        for key in checked:
            origins.setdefault(f"{name}.{key}" if name else key, "default")
        if name:
            out[name] = checked
        else:
            out.update(checked)
    for key, value in extra.items():
        out[key] = value
        for sub in value:
            origins[f"{key}.{sub}"] = "file"
    out.origins = origins
    out.schemas = schemas
    out.file = p.settings_file
    return out

