"""A popup menu for tray backends that draw none (pystray's ``xorg``), made with tkinter.

pystray's Xorg icon has no menu (``HAS_MENU`` is False), and its GTK backends need PyGObject.
Tk comes with most Pythons (Debian: ``python3-tk``), so the xorg backend opens this menu
instead: :func:`show_menu` posts a ``tkinter.Menu`` at the pointer with the controller's
:class:`~deejai.plugins.tray.logic.MenuEntry` list (greyed-out items, separators, submenus)
and returns once it closes. Each popup runs its own Tk interpreter on the calling thread
(:class:`PopupMenus` starts one thread per popup), so it never blocks the icon's X loop; Tk is
only ever touched from that thread.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from deejai.engine.errors import DeejaiError
from deejai.plugins.tray.logic import MenuEntry

__all__ = ["MENU_CLASS", "PopupMenus", "have_tk", "show_menu"]

log = logging.getLogger(__name__)

#: WM_CLASS class name of the popup's windows (what a test or a window rule can look for).
MENU_CLASS = "DeejaiTrayMenu"


def have_tk() -> bool:
    """True when tkinter imports (it needs Tcl/Tk; Debian: ``python3-tk``)."""
    try:
        import tkinter  # noqa: F401
    except ImportError:
        return False
    return True


def _fill(tk: Any, menu: Any, entries: Sequence[MenuEntry],
          choose: Callable[[MenuEntry], None]) -> None:
    for entry in entries:
        if entry.is_separator:
            menu.add_separator()
            continue
        state = "normal" if entry.enabled else "disabled"
        if entry.submenu or entry.key == "recent":
            sub = tk.Menu(menu, tearoff=0)
            _fill(tk, sub, entry.submenu, choose)
            menu.add_cascade(label=entry.text, menu=sub, state=state)
        else:
            font = ("TkMenuFont", 10, "bold") if entry.default else None
            kwargs = {"font": font} if font else {}
            menu.add_command(label=entry.text, state=state,
                             command=(lambda e=entry: choose(e)), **kwargs)


def show_menu(entries: Sequence[MenuEntry], x: int, y: int,
              choose: Callable[[MenuEntry], None], *, display: str | None = None) -> None:
    """Post a popup menu at screen position ``(x, y)`` (pixels) and wait until it closes.

    Parameters
    ----------
    entries : sequence of MenuEntry
        What the menu shows, top to bottom.
    x, y : int
        Where its top-left corner goes (the pointer, in root-window pixels).
    choose : callable
        Called with the chosen entry (on this thread), after the menu closed.
    display : str, optional
        The X display (default ``$DISPLAY``).

    Raises
    ------
    DeejaiError
        When Tk cannot be loaded or cannot open the display.
    """
    try:
        import tkinter
    except ImportError as exc:
        raise DeejaiError(
            f"the tray menu needs tkinter ({exc}): install python3-tk, or PyGObject for the "
            "gtk backend") from None
    try:
        root = tkinter.Tk(screenName=display, className=MENU_CLASS)
    except tkinter.TclError as exc:
        raise DeejaiError(f"cannot open the tray menu: {exc}") from None
    chosen: list[MenuEntry] = []
    try:
        root.withdraw()
        menu = tkinter.Menu(root, tearoff=0)
        _fill(tkinter, menu, entries, lambda e: (chosen.append(e), root.after_idle(root.quit)))
        closing = []

        def closed(_event: Any = None) -> None:
            if not closing:
                closing.append(True)
                root.after(100, root.quit)  # after a chosen item's command has run

        menu.bind("<Unmap>", closed)
        root.after_idle(lambda: menu.tk_popup(int(x), int(y)))
        root.mainloop()
    finally:
        try:
            root.destroy()
        except tkinter.TclError:  # pragma: no cover - the display went away
            pass
    if chosen:
        choose(chosen[0])


class PopupMenus:
    """Opens one popup menu at a time, each on its own thread.

    Parameters
    ----------
    entries : callable
        Returns the entries to show (called when the menu opens, so they are current).
    choose : callable
        Called with the chosen entry.
    on_error : callable
        Called with a message when the menu cannot be shown.
    display : str, optional
        The X display.
    """

    def __init__(self, entries: Callable[[], Sequence[MenuEntry]],
                 choose: Callable[[MenuEntry], None], on_error: Callable[[str], None],
                 display: str | None = None) -> None:
        self._entries = entries
        self._choose = choose
        self._on_error = on_error
        self._display = display
        self._busy = threading.Lock()

    def open(self, x: int, y: int) -> threading.Thread | None:
        """Open the menu at ``(x, y)`` unless one is open; returns its thread (or None)."""
        if not self._busy.acquire(blocking=False):
            return None

        def run() -> None:
            try:
                show_menu(self._entries(), x, y, self._choose, display=self._display)
            except DeejaiError as exc:
                self._on_error(str(exc))
            except Exception as exc:  # a bug must not kill the icon's loop
                log.exception("the tray menu failed")
                self._on_error(f"the tray menu failed: {type(exc).__name__}: {exc}")
            finally:
                self._busy.release()

        thread = threading.Thread(target=run, name="deejai-tray-menu", daemon=True)
        thread.start()
        return thread
