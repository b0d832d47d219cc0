"""The Library screen: what is scanned, and a Scan button with live progress."""
from __future__ import annotations

from typing import Any

from kivy.app import App
from kivy.lang import Builder
from kivy.properties import BooleanProperty, DictProperty, NumericProperty, StringProperty
from kivy.uix.screenmanager import Screen

from deejai.ui_kivy.viewmodel import contract_home, library_summary, scan_progress, split_folders
from deejai.ui_kivy.widgets import kv_path

__all__ = ["LibraryScreen"]


class LibraryScreen(Screen):
    """Track count, hours and errors; the folders to scan; a progress bar fed by scan events.

    The numbers come from ``Engine.status()``; the bar, rate and ETA from ``scan.progress``
    events (and ``scan_status()`` when the screen opens while a scan started elsewhere runs).
    """

    tracks = StringProperty("-")
    hours = StringProperty("-")
    errors = StringProperty("-")
    model = StringProperty("")
    scanning = BooleanProperty(False)
    scanning_folders = StringProperty("")
    progress_value = NumericProperty(0)
    progress_max = NumericProperty(1)
    progress_text = StringProperty("")
    job = StringProperty("")
    last_summary = DictProperty({})

    def on_pre_enter(self, *_: Any) -> None:
        self.refresh()

    def refresh(self) -> None:
        """Ask the engine for its status and show it."""
        App.get_running_app().call("status", on_result=self.show_status)

    def show_status(self, status: dict) -> None:
        summary = library_summary(status)
        self.tracks, self.hours, self.errors = summary["tracks"], summary["hours"], summary["errors"]
        self.model = summary["model"]
        last = status.get("last_scan") or {}
        field = self.ids.folders
        if not field.text.strip() and last.get("roots"):
            field.text = "\n".join(contract_home(r) for r in last["roots"])
        scan = status.get("scan") or {}
        if scan.get("state") == "running":
            self.scanning = True
            self.job = str(scan.get("job") or "")
            self.scanning_folders = ", ".join(contract_home(r) for r in scan.get("roots") or [])
            self.on_progress(scan)

    def start_scan(self) -> None:
        """Scan the folders in the text field (one per line)."""
        app = App.get_running_app()
        folders = split_folders(self.ids.folders.text)
        if not folders:
            app.show_message("type a music folder to scan first", error=True)
            return
        self.scanning = True
        self.scanning_folders = ", ".join(contract_home(f) for f in folders)
        self.progress_value, self.progress_max = 0, 1
        self.progress_text = "starting..."
        app.clear_message("scan")  # the last scan's report is about to be out of date
        app.call("scan", paths=folders, on_result=self._started, on_error=self._failed)

    def _started(self, result: dict) -> None:
        self.job = str(result.get("job") or "")

    def _failed(self, exc: BaseException) -> None:
        self.scanning = False
        self.progress_text = ""

    def cancel_scan(self) -> None:
        App.get_running_app().call("cancel_scan", job=self.job or None)

    def on_progress(self, params: dict) -> None:
        """A ``scan.progress`` event (on the UI thread)."""
        self.scanning = True
        view = scan_progress(params)
        self.progress_max = view["max"]
        self.progress_value = view["value"]
        self.progress_text = view["text"]

    def on_finished(self, params: dict) -> None:
        """A ``scan.finished`` event (on the UI thread)."""
        self.scanning = False
        self.last_summary = dict(params)
        state = params.get("state")
        summary = params.get("summary") or {}
        app = App.get_running_app()
        if state == "failed":
            app.show_message(f"scan failed: {params.get('error')}", error=True, scope="scan")
        else:
            parts = [f"scan {state}"]
            for key in ("added", "updated", "removed", "unchanged"):
                if summary.get(key) is not None:
                    parts.append(f"{summary[key]} {key}")
            if summary.get("errors") is not None:
                # this scan's failures; the header counts every failing file of the library
                parts.append(f"{summary['errors']} failed in this scan")
            app.show_message(", ".join(parts), scope="scan")
            self.progress_value = self.progress_max
        self.progress_text = f"last scan: {state}"
        self.refresh()


Builder.load_file(kv_path("library.kv"))
