"""What the tray asks of the desktop: open files, start programs, ask questions, autostart.

Everything here runs without a tray icon and without pystray, so the tests exercise it
directly:

* :func:`open_path` opens a file or folder with the platform's opener (``xdg-open`` on
  freedesktop systems, ``open`` on macOS, :func:`os.startfile` on Windows), or with the
  command in the ``[tray] opener`` setting;
* :func:`launch_detached` starts a program in its own session, so it outlives the tray;
* :func:`ask_two_tracks` asks for the two ends of a join with zenity, kdialog or tkinter,
  whichever is there;
* :func:`send_notification` shows a desktop notification with ``notify-send``;
* :func:`install_autostart` / :func:`remove_autostart` write or remove
  ``$XDG_CONFIG_HOME/autostart/deejai-tray.desktop`` (the `XDG Autostart specification
  <https://specifications.freedesktop.org/autostart-spec/latest/>`_);
* :func:`kivy_app_command` says how to open the Kivy app (on its join screen where it
  can), when it is installed.
"""
from __future__ import annotations

import importlib.util
import logging
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deejai.engine.errors import ConfigError, DeejaiError
from deejai.engine.hints import install_hint

__all__ = [
    "AUTOSTART_NAME",
    "DESKTOP_TEMPLATE",
    "ask_two_tracks",
    "autostart_file",
    "deejai_command",
    "desktop_entry",
    "has_graphical_session",
    "install_autostart",
    "kivy_app_command",
    "launch_detached",
    "open_path",
    "opener_command",
    "remove_autostart",
    "send_notification",
]

log = logging.getLogger(__name__)

#: File name of the autostart entry (and of the shipped ``.desktop`` template).
AUTOSTART_NAME = "deejai-tray.desktop"
#: The ``.desktop`` file shipped beside this module; ``Exec`` and ``Icon`` are filled in on
#: install.
DESKTOP_TEMPLATE = Path(__file__).resolve().parent / AUTOSTART_NAME


def _tray_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    tray = (settings or {}).get("tray") or {}
    return dict(tray) if isinstance(tray, Mapping) else {}


def opener_command(settings: Mapping[str, Any] | None = None) -> list[str] | None:
    """The command that opens a file or folder, without the path (None: ``os.startfile``).

    Parameters
    ----------
    settings : dict, optional
        deejai's settings; ``[tray] opener`` (a command line, split like a shell would)
        wins over the platform's default.

    Raises
    ------
    ConfigError
        When no opener is configured and the platform's (``xdg-open``) is not installed.
    """
    configured = _tray_settings(settings).get("opener")
    if configured:
        argv = shlex.split(str(configured)) if isinstance(configured, str) else [
            str(a) for a in configured]
        if not argv:
            raise ConfigError("settings: [tray] opener is empty")
        return argv
    if sys.platform == "win32":  # pragma: no cover - not run on Linux CI
        return None
    if sys.platform == "darwin":  # pragma: no cover
        return ["open"]
    exe = shutil.which("xdg-open")
    if exe is None:
        raise ConfigError(
            "no program to open files: install xdg-utils (xdg-open) or set "
            "[tray] opener in settings.toml"
        )
    return [exe]


def launch_detached(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                    log_file: Path | None = None) -> subprocess.Popen:
    """Start ``argv`` in a new session so it outlives the tray; do not wait for it.

    Parameters
    ----------
    argv : sequence of str
        The program and its arguments.
    env : mapping, optional
        The environment (default: this process's).
    log_file : Path, optional
        Where its stdout and stderr go (appended); default: nowhere.

    Returns
    -------
    subprocess.Popen
        The started process (the caller may poll it).

    Raises
    ------
    DeejaiError
        When the program cannot be started (not found, not executable).
    """
    out: Any = subprocess.DEVNULL
    fh = None
    if log_file is not None:
        from deejai.engine._fs import private_file

        log_file.parent.mkdir(parents=True, exist_ok=True)
        private_file(log_file)  # 0600: a daemon's log tells what a person listens to
        fh = open(log_file, "ab")
        out = fh
    try:
        kwargs: dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = getattr(subprocess, "DETACHED_PROCESS", 0)
        return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                env=dict(env) if env is not None else None, close_fds=True,
                                **kwargs)
    except OSError as exc:
        raise DeejaiError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
    finally:
        if fh is not None:
            fh.close()


def open_path(path: Path | str, settings: Mapping[str, Any] | None = None) -> None:
    """Open ``path`` (a playlist, a folder) with the desktop's default program.

    Raises
    ------
    DeejaiError
        When ``path`` does not exist or no opener can be started.
    """
    path = Path(path)
    if not path.exists():
        raise DeejaiError(f"{path}: no such file or folder")
    argv = opener_command(settings)
    if argv is None:  # pragma: no cover - Windows
        try:
            os.startfile(str(path))  # type: ignore[attr-defined]
        except OSError as exc:
            raise DeejaiError(f"{path}: cannot open it ({exc})") from None
        return
    launch_detached([*argv, str(path)])


def has_graphical_session() -> bool:
    """True where a tray can live: Windows, macOS, or an X11/Wayland display is set."""
    if sys.platform in ("win32", "darwin"):  # pragma: no cover
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def send_notification(title: str, message: str) -> bool:
    """Show a desktop notification with ``notify-send`` (libnotify); False when there is none."""
    exe = shutil.which("notify-send")
    if exe is None or not has_graphical_session():
        return False
    try:
        subprocess.run([exe, "--app-name=deejai", title, message], timeout=5,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return True


def _ask_zenity(exe: str) -> tuple[str, str] | None:
    answers = []
    for prompt in ("Join the dots from (a track: path, id or \"artist - title\"):",
                   "...to (a track: path, id or \"artist - title\"):"):
        res = subprocess.run([exe, "--entry", "--title=deejai: join the dots", f"--text={prompt}"],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0 or not res.stdout.strip():
            return None
        answers.append(res.stdout.strip())
    return answers[0], answers[1]


def _ask_kdialog(exe: str) -> tuple[str, str] | None:
    answers = []
    for prompt in ("Join the dots from (a track: path, id or \"artist - title\"):",
                   "...to (a track: path, id or \"artist - title\"):"):
        res = subprocess.run([exe, "--title", "deejai: join the dots", "--inputbox", prompt],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0 or not res.stdout.strip():
            return None
        answers.append(res.stdout.strip())
    return answers[0], answers[1]


def _ask_tkinter() -> tuple[str, str] | None:
    import tkinter
    from tkinter import simpledialog

    root = tkinter.Tk()
    root.withdraw()
    try:
        first = simpledialog.askstring("deejai: join the dots",
                                       "From (a track: path, id or \"artist - title\"):",
                                       parent=root)
        if not first:
            return None
        second = simpledialog.askstring("deejai: join the dots",
                                        "To (a track: path, id or \"artist - title\"):",
                                        parent=root)
        if not second:
            return None
        return first.strip(), second.strip()
    finally:
        root.destroy()


def ask_two_tracks() -> tuple[str, str] | None:
    """Ask for the two ends of a join: zenity, else kdialog, else a tkinter dialog.

    Returns
    -------
    tuple of str or None
        ``(from, to)`` as typed; None when the person cancelled.

    Raises
    ------
    DeejaiError
        When no dialog program is available; the message says what to install.
    """
    for name, ask in (("zenity", _ask_zenity), ("kdialog", _ask_kdialog)):
        exe = shutil.which(name)
        if exe:
            return ask(exe)
    if importlib.util.find_spec("tkinter") is not None:
        try:
            return _ask_tkinter()
        except Exception as exc:  # tkinter.TclError: no display, broken Tk
            log.debug("tkinter dialog failed", exc_info=True)
            raise DeejaiError(f"cannot show a dialog: {exc}") from None
    raise DeejaiError(
        f"no way to ask for two tracks here: install the deejai app ({install_hint('kivy')}), "
        "zenity or python3-tk, or use `deejai playlist --from A --to B`"
    )


def deejai_command() -> list[str]:
    """The command line that runs ``deejai`` with this Python (works inside a virtualenv)."""
    return [sys.executable, "-m", "deejai.ui_cli.main"]


def kivy_app_command(screen: str = "join") -> list[str] | None:
    """The command that opens the Kivy app on ``screen``; None without it.

    The app is ``python -m deejai.ui_kivy.app`` (the ``deejai-kivy`` script) and needs the
    ``kivy`` extra; the tray launches it as a process of its own and never imports it (only
    the presence of both packages is looked up). ``--screen`` is one of ``library``,
    ``join``, ``radio``.
    """
    try:
        has_app = importlib.util.find_spec("deejai.ui_kivy") is not None
        has_kivy = importlib.util.find_spec("kivy") is not None
    except (ImportError, ValueError):
        return None
    if not (has_app and has_kivy):
        return None
    return [sys.executable, "-m", "deejai.ui_kivy.app", "--screen", screen]


# ---------------------------------------------------------------------------- autostart
def autostart_file() -> Path:
    """``$XDG_CONFIG_HOME/autostart/deejai-tray.desktop`` (``~/.config`` when unset).

    Raises
    ------
    DeejaiError
        On Windows and macOS, which do not read XDG autostart folders.
    """
    if sys.platform in ("win32", "darwin"):  # pragma: no cover
        raise DeejaiError(
            "autostart files are a freedesktop (Linux/BSD) feature; on this system add "
            "`deejai tray` to the login items yourself"
        )
    base = os.environ.get("XDG_CONFIG_HOME") or ""
    # The specification says a relative XDG_CONFIG_HOME is invalid and must be ignored.
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "autostart" / AUTOSTART_NAME


def _desktop_quote(arg: str) -> str:
    """Quote one argument of an ``Exec`` key (Desktop Entry Specification, "The Exec key")."""
    if arg and not any(c in arg for c in ' \t\n"\'\\><~|&;$*?#()`%='):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`").replace(
        "$", "\\$")
    return '"' + escaped.replace("%", "%%") + '"'


def desktop_entry(exec_argv: Sequence[str] | None = None, icon: Path | str | None = None) -> str:
    """The text of the autostart ``.desktop`` file: the shipped template with ``Exec`` and
    ``Icon`` set for this installation.

    Parameters
    ----------
    exec_argv : sequence of str, optional
        The command to run at login; default ``<python> -m deejai.ui_cli.main tray``, so the
        entry works from a virtualenv.
    icon : path, optional
        The icon; default the shipped 256-pixel application icon.
    """
    from deejai.plugins.tray.icons import ICON_DIR

    argv = list(exec_argv) if exec_argv is not None else [*deejai_command(), "tray"]
    icon = Path(icon) if icon is not None else ICON_DIR / "deejai.png"
    lines = []
    for line in DESKTOP_TEMPLATE.read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            line = "Exec=" + " ".join(_desktop_quote(a) for a in argv)
        elif line.startswith("Icon="):
            line = f"Icon={icon}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def install_autostart(exec_argv: Sequence[str] | None = None) -> Path:
    """Write the autostart entry so the tray starts at login; returns its path.

    The file is written atomically (a temporary file renamed over it).
    """
    from deejai.engine._fs import atomic_write

    target = autostart_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(target, desktop_entry(exec_argv).encode("utf-8"))


def remove_autostart() -> Path | None:
    """Remove the autostart entry; returns its path, or None when there was none."""
    target = autostart_file()
    try:
        target.unlink()
    except FileNotFoundError:
        return None
    return target
