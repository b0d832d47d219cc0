"""Where the Kivy app runs: the platform, where it keeps its files, where the music is.

This module imports no Kivy and, of the engine, only :mod:`deejai.engine.platforms` (which
imports nothing), so it can be tested (and used by the build helper) on any machine. On Android it asks python-for-android's ``android.storage`` module for
the folders; elsewhere it defers to :mod:`deejai.engine.config` (platformdirs, ``DEEJAI_HOME``).

Decisions made here::

    platform        embedded engine    index backend       analysis    music folder
    android         always             numpy unless faiss  threads     <primary external storage>/Music
    ios             always             numpy unless faiss  threads     ~/Documents
    linux/macosx/   only with          faiss when          processes   platformdirs' user music folder
    win             --embedded         importable          (setting)

The platform is :func:`deejai.engine.platforms.detect_platform`, the same answer the engine
chooses its TFLite runtime by.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MOBILE",
    "detect_platform",
    "is_mobile",
    "app_storage_dir",
    "music_dir",
    "apply_storage_env",
    "index_backend",
    "RunPlan",
    "run_plan",
    "ANDROID_PERMISSIONS",
]

from deejai.engine.platforms import MOBILE, detect_platform  # one answer for app and engine

#: Runtime permissions the app asks for on Android to read the user's music. Android 13 (API
#: 33) replaced READ_EXTERNAL_STORAGE with READ_MEDIA_AUDIO for audio files; asking for both
#: covers old and new releases (the one that does not apply is ignored by the system).
ANDROID_PERMISSIONS = ("READ_MEDIA_AUDIO", "READ_EXTERNAL_STORAGE")


def is_mobile(platform: str | None = None) -> bool:
    """True on Android and iOS, where the app always embeds the engine."""
    return (platform or detect_platform()) in MOBILE


def _android_storage():  # pragma: no cover - only importable inside an APK
    try:
        from android import storage  # type: ignore[import-not-found]
    except ImportError:
        return None
    return storage


def app_storage_dir(platform: str | None = None) -> Path | None:
    """The app's private folder on a phone; None on desktop (platformdirs decides there).

    On Android this is ``android.storage.app_storage_path()`` (python-for-android), falling
    back to ``ANDROID_PRIVATE``; on iOS ``~/Documents`` inside the app sandbox.
    """
    plat = platform or detect_platform()
    if plat == "android":
        storage = _android_storage()
        if storage is not None:
            return Path(storage.app_storage_path())
        private = os.environ.get("ANDROID_PRIVATE")
        return Path(private) if private else None
    if plat == "ios":
        return Path.home() / "Documents"
    return None


def music_dir(platform: str | None = None) -> Path:
    """The folder the app proposes to scan first.

    Android: ``android.storage.primary_external_storage_path()/Music`` (``/sdcard/Music`` when
    the module is missing); iOS: the app's Documents folder (files shared through iTunes or the
    Files app); desktop: platformdirs' ``user_music_dir`` (``~/Music`` on most systems).
    """
    plat = platform or detect_platform()
    if plat == "android":
        storage = _android_storage()
        root = storage.primary_external_storage_path() if storage is not None else "/sdcard"
        return Path(root) / "Music"
    if plat == "ios":
        return Path.home() / "Documents"
    import platformdirs

    return Path(platformdirs.user_music_dir())


def apply_storage_env(platform: str | None = None, environ: dict[str, str] | None = None) -> Path | None:
    """On a phone, point ``DEEJAI_HOME`` at the app's private storage (unless already set).

    Returns the folder set, or None when nothing changed (desktop, or ``DEEJAI_HOME`` given).
    """
    env = os.environ if environ is None else environ
    if env.get("DEEJAI_HOME"):
        return None
    folder = app_storage_dir(platform)
    if folder is None:
        return None
    home = folder / "deejai"
    env["DEEJAI_HOME"] = str(home)
    return home


def index_backend(platform: str | None = None) -> str:
    """``"faiss"`` when the FAISS module can be imported here, else ``"numpy"``.

    python-for-android has no FAISS recipe, so a phone build normally gets ``"numpy"``: the
    engine's exact NumPy index, fast enough for a phone-sized library (a few thousand tracks).
    """
    return "faiss" if importlib.util.find_spec("faiss") is not None else "numpy"


@dataclass(frozen=True)
class RunPlan:
    """How the app reaches the engine.

    Attributes
    ----------
    platform : str
        As :func:`detect_platform`.
    embedded : bool
        Run an in-process :class:`~deejai.engine.service.Engine` on a worker thread.
    start_daemon : bool
        On desktop, start ``deejai serve`` when no daemon answers.
    index_backend : str
        Passed to the embedded Engine.
    music_dir : str
        The folder proposed in the Library screen.
    scan_executor : str or None
        Passed to the embedded Engine: ``"thread"`` on a phone, where an app cannot start
        Python worker processes; None elsewhere (the ``scan_executor`` setting decides, by
        default worker processes).
    """

    platform: str
    embedded: bool
    start_daemon: bool
    index_backend: str
    music_dir: str
    scan_executor: str | None = None


def run_plan(
    *, embedded: bool = False, start_daemon: bool = True, platform: str | None = None
) -> RunPlan:
    """Decide how the app runs from the command line flags and the platform.

    Phones always embed the engine (no daemon process, no Unix socket to rely on).
    """
    plat = platform or detect_platform()
    mobile = plat in MOBILE
    return RunPlan(
        platform=plat,
        embedded=bool(embedded) or mobile,
        start_daemon=bool(start_daemon) and not mobile,
        index_backend=index_backend(plat),
        music_dir=str(music_dir(plat)),
        scan_executor="thread" if mobile else None,
    )
