"""The pystray glue: a system tray icon over :class:`~deejai.plugins.tray.logic.TrayController`.

Everything the icon does is decided by the controller; this module only

* picks and imports a pystray backend (``appindicator``, ``gtk`` or ``xorg`` on Linux, the
  native one on macOS and Windows), and turns every way that can fail into one
  :class:`TrayUnavailableError` line;
* checks, on X11, that a system tray (a ``_NET_SYSTEM_TRAY_S<screen>`` selection owner, see the
  `System Tray Protocol Specification
  <https://specifications.freedesktop.org/systemtray-spec/latest/>`_) is there to dock in;
* turns :class:`~deejai.plugins.tray.logic.MenuEntry` lists into a dynamic ``pystray.Menu``,
  and the controller's state into the icon's picture and title, calling
  ``Icon.update_menu()`` when a daemon notification changes the state.

pystray's ``xorg`` backend draws no menu of its own: there a left click runs the menu's
default item (Join the dots… while the daemon runs, else Start daemon) and a right click opens
the whole menu as a Tk popup (:mod:`deejai.plugins.tray.popup`). The ``gtk`` and
``appindicator`` backends show pystray's menu; they need PyGObject (``pip install
PyGObject``, which builds against the system's ``libgirepository1.0-dev`` and
``libcairo2-dev``) and a D-Bus session.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

from deejai.engine.errors import TrayUnavailableError
from deejai.engine.hints import install_hint
from deejai.plugins.tray import desktop
from deejai.plugins.tray.icons import load_icon
from deejai.plugins.tray.logic import MenuEntry, TrayController, TrayState

__all__ = [
    "BACKENDS",
    "TrayApp",
    "TrayUnavailableError",
    "import_pystray",
    "run_tray",
    "system_tray_owner",
    "wait_for_system_tray",
]

log = logging.getLogger(__name__)

#: Backends ``--backend`` accepts; "auto" lets pystray choose (appindicator, gtk, xorg on Linux).
BACKENDS = ("auto", "appindicator", "gtk", "xorg", "darwin", "win32")
#: Pixel size of the picture handed to pystray (backends scale it to the panel's size).
ICON_SIZE = 64


def import_pystray(backend: str = "auto") -> Any:
    """Import pystray with ``backend``, or explain in one line why it cannot be used.

    Parameters
    ----------
    backend : str
        One of :data:`BACKENDS`; anything but "auto" is passed to pystray as
        ``PYSTRAY_BACKEND`` (which also wins when set in the environment and ``backend`` is
        "auto").

    Returns
    -------
    module
        The ``pystray`` module.

    Raises
    ------
    TrayUnavailableError
        When there is no display (Linux), pystray or Pillow is not installed (the ``tray``
        extra), or no backend loads (for example Xlib cannot open the display).
    """
    if backend not in BACKENDS:
        raise TrayUnavailableError(
            f"unknown tray backend {backend!r}; known: {', '.join(BACKENDS)}")
    if not desktop.has_graphical_session():
        raise TrayUnavailableError(
            "no graphical session (DISPLAY and WAYLAND_DISPLAY are unset): the tray icon "
            "needs a desktop; use `deejai` on the command line instead")
    if backend != "auto":
        os.environ["PYSTRAY_BACKEND"] = backend
    try:
        import PIL  # noqa: F401
        import pystray
    except ModuleNotFoundError as exc:
        if exc.name in ("pystray", "PIL", "Xlib", "six"):
            raise TrayUnavailableError(
                f"the tray needs the 'tray' extra ({exc.name} is missing): "
                f"{install_hint('tray')}") from None
        raise TrayUnavailableError(f"no system tray backend works here: {exc}") from None
    except Exception as exc:  # ImportError of every backend, Xlib.error.DisplayConnectionError
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise TrayUnavailableError(f"no system tray backend works here: {text}") from None
    return pystray


def backend_name(pystray: Any) -> str:
    """The name of the backend pystray loaded (``"xorg"``, ``"gtk"``, ...)."""
    return pystray.Icon.__module__.rsplit("._", 1)[-1] if hasattr(pystray, "Icon") else "?"


def system_tray_owner(display_name: str | None = None) -> int | None:
    """The X window that owns the system tray selection of the default screen, or None.

    Uses python-xlib (a pystray dependency on Linux). Returns None where no tray runs; the
    caller decides whether that is an error.
    """
    import Xlib.display
    import Xlib.X

    display = Xlib.display.Display(display_name)
    try:
        atom = display.intern_atom(f"_NET_SYSTEM_TRAY_S{display.get_default_screen()}")
        owner = display.get_selection_owner(atom)
        return None if owner == Xlib.X.NONE else int(owner.id)
    finally:
        display.close()


def wait_for_system_tray(timeout_s: float, say: Any = None) -> int:
    """Wait up to ``timeout_s`` seconds for an X11 system tray (a panel starting at login).

    Parameters
    ----------
    timeout_s : float
    say : callable, optional
        Called once with a line (e.g. printed on stderr) when the tray is not there at once,
        so a person knows what the wait is for.

    Raises
    ------
    TrayUnavailableError
        When no tray shows up in time.
    """
    deadline = time.monotonic() + max(0.0, timeout_s)
    said = False
    while True:
        try:
            owner = system_tray_owner()
        except Exception as exc:  # Xlib errors: the display went away
            raise TrayUnavailableError(f"cannot talk to the X display: {exc}") from None
        if owner is not None:
            return owner
        if not said and say is not None and timeout_s > 0:
            say(f"waiting up to {timeout_s:g} s for a system tray (a panel with a notification "
                "area) to start...")
            said = True
        if time.monotonic() >= deadline:
            raise TrayUnavailableError(
                "no system tray on this display (nothing owns _NET_SYSTEM_TRAY_S0): start a "
                "panel with a notification area, or use the appindicator backend")
        time.sleep(0.25)


#: Seconds between two dock requests while the system tray has not embedded the icon.
DOCK_RETRY_S = 0.5


def _icon_class(pystray: Any) -> Any:
    """pystray's ``Icon``, mended for the ``xorg`` backend.

    Mends, all found under Xvfb with trayer:

    * **Clicks.** pystray creates the icon window without ``ButtonPressMask``, so no click
      ever reached it. The subclass selects button events: a left click runs the menu's
      default item (pystray's activate), a right click calls ``on_menu(x, y)`` (the app opens
      its Tk popup menu there, :mod:`deejai.plugins.tray.popup`).
    * **Docking.** pystray sends one dock request and takes it as done. A request that
      reaches the tray while it is still starting is lost, and the icon stays an undocked
      1x1 window at 0,0 (3 starts in 10 under trayer). The subclass counts the icon docked
      only when the tray has reparented the window (``ReparentNotify``, the XEMBED
      embedding), sends the request again every :data:`DOCK_RETRY_S` seconds until then,
      docks again at once when a new tray manager announces itself (the ``MANAGER`` client
      message on the root window, System Tray Protocol Specification) and when the old
      manager window is destroyed or the window is reparented back to the root.
    * pystray asks the system tray to dock the icon again on every picture change
      (``_update_icon`` calls ``_assert_docked``). A tray that embeds with GtkSocket
      (trayer) then re-embeds the window at the 1x1 size it was created with and the icon
      disappears. While the icon is docked, the subclass only repaints.
    * pystray starts the setup thread before its loop records ``_thread``, which the calls
      from other threads read; a setup that touches the icon early fails with an
      ``AttributeError``. The subclass records the thread first.
    * A new title or picture requested from the loop thread was sometimes not seen by the X
      server (the old title stayed) until a round trip; the subclass syncs with the server
      after each.
    """
    base = pystray.Icon
    if backend_name(pystray) != "xorg":
        return base
    import Xlib.X

    xorg = sys.modules[base.__module__]

    class XorgIcon(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._docked = False
            self._want_docked = False
            self._loop_done = threading.Event()
            #: ``on_menu(x, y)``: called on a right click with the pointer's root position.
            self.on_menu: Any = None
            super().__init__(*args, **kwargs)
            display = self._display
            with xorg.display_manager(display):
                self._window.change_attributes(
                    event_mask=Xlib.X.ExposureMask | Xlib.X.StructureNotifyMask
                    | Xlib.X.ButtonPressMask | Xlib.X.ButtonReleaseMask)
                self._root = display.screen().root
                # MANAGER announcements of a new tray are sent to the root window with
                # StructureNotifyMask
                self._root.change_attributes(event_mask=Xlib.X.StructureNotifyMask)
                self._manager_atom = display.intern_atom("MANAGER")
                self._redock_atom = display.intern_atom("_DEEJAI_TRAY_REDOCK")
            self._message_handlers[Xlib.X.ReparentNotify] = self._on_reparent
            client_message = self._message_handlers[Xlib.X.ClientMessage]

            def on_client_message(event: Any) -> None:
                if event.client_type == self._redock_atom:
                    self._request_dock()
                elif event.client_type == self._manager_atom:
                    if event.data[1][1] == self._net_system_tray_sx:
                        self._docked = False
                        self._request_dock()
                else:
                    client_message(event)

            self._message_handlers[Xlib.X.ClientMessage] = on_client_message

        # -- docking (loop thread)
        def _request_dock(self) -> None:
            if self._docked or not self._want_docked:
                return
            try:
                with xorg.display_manager(self._display):
                    self._dock_window()
            except xorg.XError:  # the manager went away meanwhile: the next retry finds it
                log.debug("dock request failed", exc_info=True)
                self._systray_manager = None

        def _on_reparent(self, event: Any) -> None:
            if event.window.id != self._window.id:
                return
            self._docked = event.parent.id != self._root.id
            log.debug("tray icon %s", "docked" if self._docked else "undocked")
            if self._docked:
                self._draw()
            else:
                self._request_dock()

        def _on_destroy_notify(self, event: Any) -> None:
            manager = self._systray_manager
            if manager is None or event.window.id != manager.id:
                return
            self._systray_manager = None
            self._docked = False
            self._request_dock()

        def _on_button_press(self, event: Any) -> None:
            if event.detail == 1:
                self()
            elif event.detail == 3 and self.on_menu is not None:
                self.on_menu(event.root_x, event.root_y)

        def _show(self) -> None:
            self._want_docked = True
            self._request_dock()

        def _hide(self) -> None:
            self._want_docked = False
            if self._systray_manager:
                self._undock_window()
            self._docked = False

        def _retry_docking(self) -> None:
            """Ask the loop thread to dock again, every DOCK_RETRY_S s while undocked."""
            while not self._loop_done.wait(DOCK_RETRY_S):
                if self._want_docked and not self._docked:
                    try:
                        self._send_message(self._window, self._redock_atom)
                        self._display.flush()
                    except Exception:  # the connection is closing
                        return

        def _run(self) -> None:
            self._thread = threading.current_thread()
            threading.Thread(target=self._retry_docking, name="deejai-tray-dock",
                             daemon=True).start()
            try:
                super()._run()
            finally:
                self._loop_done.set()

        def _update_title(self) -> None:
            super()._update_title()
            self._display.sync()

        def _update_icon(self) -> None:
            self._icon_data = None
            if self._docked:
                self._draw()
            else:
                self._request_dock()
            self._icon_valid = True
            self._display.sync()

    XorgIcon.__name__ = XorgIcon.__qualname__ = "Icon"
    XorgIcon.__module__ = base.__module__
    return XorgIcon


class TrayApp:
    """The tray icon: a pystray ``Icon`` showing a :class:`TrayController`.

    Parameters
    ----------
    pystray : module
        From :func:`import_pystray`.
    controller : TrayController, optional
        Built here (talking to the default daemon) when not given; its ``on_change``,
        ``notify`` and ``on_quit`` are wired to the icon.
    """

    def __init__(self, pystray: Any, controller: TrayController | None = None,
                 **controller_options: Any) -> None:
        self.pystray = pystray
        self.icon: Any = None
        self._picture: tuple[str, int | None] | None = None
        self._ready = threading.Event()
        self._show_lock = threading.Lock()
        self._stopping = False
        if controller is None:
            controller = TrayController(on_change=self._on_change, notify=self.notify,
                                        on_quit=self.stop, **controller_options)
        else:
            controller._on_change = self._on_change
            controller._notify = self.notify
            controller._on_quit = self.stop
        self.controller = controller

    # -- menu
    def menu_items(self, entries: list[MenuEntry] | None = None) -> tuple:
        """The ``pystray.MenuItem`` objects for ``entries`` (default: the controller's menu).

        Choosing an item runs its action on the controller's action thread
        (:meth:`TrayController.dispatch`); calling the item returns that action's future.
        """
        ps = self.pystray
        items = []
        for entry in entries if entries is not None else self.controller.menu_entries():
            if entry.is_separator:
                items.append(ps.Menu.SEPARATOR)
            elif entry.submenu or entry.key == "recent":
                sub = self.menu_items(list(entry.submenu))
                items.append(ps.MenuItem(entry.text, ps.Menu(*sub), enabled=entry.enabled))
            else:
                items.append(ps.MenuItem(entry.text, self._handler(entry.action),
                                         enabled=entry.enabled, default=entry.default))
        return tuple(items)

    def _handler(self, action: Any) -> Any:
        """A pystray callback ``(icon, item)`` that dispatches ``action``."""

        def handler(icon: Any, item: Any) -> Any:
            if action is None:
                return None
            return self.controller.dispatch(action)

        return handler

    def _choose(self, entry: MenuEntry) -> Any:
        """Run a popup menu's chosen entry on the controller's action thread."""
        return self.controller.dispatch(entry.action) if entry.action is not None else None

    def build_menu(self) -> Any:
        """A dynamic ``pystray.Menu``: rebuilt from the controller on every ``update_menu()``."""
        return self.pystray.Menu(lambda: self.menu_items())

    # -- state
    def _picture_for(self, state: TrayState) -> Any:
        return load_icon(state.kind, ICON_SIZE, state.progress if state.kind == "scanning"
                         else None)

    def _on_change(self, state: TrayState) -> None:
        """Show the controller's state. Changes arrive from several threads (the poller, the
        daemon's event thread, actions): they are shown one at a time, and always the latest
        state, so a late caller cannot bring back an older picture."""
        icon = self.icon
        if icon is None or not self._ready.is_set() or self._stopping:
            return
        with self._show_lock:
            state = self.controller.state
            if state.picture != self._picture:
                self._picture = state.picture
                icon.icon = self._picture_for(state)
            if icon.title != state.title:
                icon.title = state.title
            icon.update_menu()

    def notify(self, title: str, message: str) -> None:
        """Show a message: the backend's notification, else ``notify-send``, else the log."""
        log.info("%s: %s", title, message)
        icon = self.icon
        if icon is not None and getattr(icon, "HAS_NOTIFICATION", False) and self._ready.is_set():
            try:
                icon.notify(message, title)
                return
            except Exception:  # no notification service on the session bus
                log.debug("backend notification failed", exc_info=True)
        desktop.send_notification(title, message)

    # -- lifetime
    def _setup(self, icon: Any) -> None:
        try:
            icon.visible = True
            self._ready.set()
            self.controller.start()
            self._on_change(self.controller.state)
        except Exception:
            log.exception("the tray icon could not be set up")
            self.stop()

    def stop(self) -> None:
        """Remove the icon and end :meth:`run` (the daemon keeps running)."""
        self._stopping = True
        if self.icon is not None:
            self.icon.stop()

    def run(self) -> None:
        """Show the icon and run the toolkit's main loop until Quit (or :meth:`stop`)."""
        state = self.controller.state
        self._picture = state.picture
        self.icon = _icon_class(self.pystray)("deejai", self._picture_for(state), state.title,
                                              self.build_menu())
        if hasattr(self.icon, "on_menu"):  # the xorg backend: our own popup menu
            from deejai.plugins.tray.popup import PopupMenus

            self.icon.on_menu = PopupMenus(
                self.controller.menu_entries, self._choose,
                on_error=lambda message: self.notify("deejai", message),
                display=os.environ.get("DISPLAY")).open
        try:
            self.icon.run(self._setup)
        except Exception as exc:
            if not self._stopping:
                raise TrayUnavailableError(f"the tray icon failed: {exc}") from exc
            # GTK backends report a missing notification service while shutting down
            log.debug("error while the tray icon stopped", exc_info=True)
        finally:
            self.controller.close()


def run_tray(backend: str = "auto", wait_for_tray_s: float = 10.0, **controller_options: Any) -> int:
    """Run the tray until Quit; the ``run`` of the ``tray`` front end.

    Parameters
    ----------
    backend : str
        A pystray backend (:data:`BACKENDS`), "auto" to let pystray choose.
    wait_for_tray_s : float
        On X11 with the ``xorg`` or ``gtk`` backend: seconds to wait for a system tray (a
        panel starting at login) before giving up.
    **controller_options
        Passed to :class:`TrayController` (``settings``, ``paths``, ``connect``...).

    Returns
    -------
    int
        0 after Quit.

    Raises
    ------
    TrayUnavailableError
        When no tray can be shown here (one line says why).
    """
    pystray = import_pystray(backend)
    name = backend_name(pystray)
    if name in ("xorg", "gtk") and sys.platform.startswith(("linux", "freebsd", "openbsd")) \
            and os.environ.get("DISPLAY"):
        wait_for_system_tray(wait_for_tray_s,
                             say=lambda line: print(f"deejai: {line}", file=sys.stderr, flush=True))
    log.info("tray backend: %s", name)
    TrayApp(pystray, **controller_options).run()
    return 0
