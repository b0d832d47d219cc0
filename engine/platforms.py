"""Which platform deejai runs on: one answer for the engine and the apps.

:func:`detect_platform` gives Kivy's names (``android``, ``ios``, ``linux``, ``macosx``,
``win``, ``unknown``), which the Kivy app plans with; :func:`current_platform` gives what the
TFLite backends are chosen by (``android``, ``ios``, else ``sys.platform``). Both come from the
same test: python-for-android's bootstrap sets ``ANDROID_ARGUMENT`` (and ``ANDROID_PRIVATE``)
before ``main.py`` runs, the test ``kivy.utils.platform`` uses; iOS is ``sys.platform ==
"ios"`` (CPython 3.13+ and kivy-ios) or a kivy-ios build (``KIVY_BUILD=ios``); when Kivy is
already imported its ``kivy.utils.platform`` is asked too (it is never imported here:
importing Kivy has side effects).
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

__all__ = ["detect_platform", "current_platform", "MOBILE"]

#: Platforms on which the engine always runs inside the app (no daemon, no subprocesses).
MOBILE = frozenset({"android", "ios"})


def detect_platform(environ: Mapping[str, str] | None = None,
                    sys_platform: str | None = None) -> str:
    """The platform, in Kivy's names.

    Parameters
    ----------
    environ : mapping, optional
        Environment to inspect; default ``os.environ``.
    sys_platform : str, optional
        Value of ``sys.platform`` to inspect; default the running one (then an imported
        ``kivy.utils`` is asked too).

    Returns
    -------
    str
        One of ``"android"``, ``"ios"``, ``"linux"``, ``"macosx"``, ``"win"``, ``"unknown"``.
    """
    env = os.environ if environ is None else environ
    plat = sys.platform if sys_platform is None else sys_platform
    if "ANDROID_ARGUMENT" in env or "ANDROID_PRIVATE" in env or plat == "android":
        return "android"
    if plat == "ios" or env.get("KIVY_BUILD") == "ios":
        return "ios"
    if sys_platform is None and "kivy.utils" in sys.modules:
        kivy_plat = getattr(sys.modules["kivy.utils"], "platform", None)
        if kivy_plat in MOBILE:
            return str(kivy_plat)
    if plat.startswith("linux") or plat.startswith("freebsd"):
        return "linux"
    if plat == "darwin":
        return "macosx"
    if plat in ("win32", "cygwin"):
        return "win"
    return "unknown"


def current_platform() -> str:
    """``"android"``, ``"ios"`` or ``sys.platform`` (``"linux"``, ``"darwin"``, ``"win32"``...):
    the names the TFLite runtime backends are chosen by."""
    plat = detect_platform()
    return plat if plat in MOBILE else sys.platform
