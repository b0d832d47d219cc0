"""The Kivy front end (desktop and phone). Install with ``pip install "deejai[kivy]"``.

Run it with ``deejai-kivy`` (``python -m deejai.ui_kivy.app``). Five screens, each a Python
module with its kv file beside it:

=============  ========================  ==================================================
screen         module / kv               what it does
=============  ========================  ==================================================
Library        ``library`` / .kv         tracks, hours, errors; Scan with a live progress
                                         bar, rate and ETA from ``scan.progress`` events
Join the dots  ``join`` / .kv            from / via / to with search-as-you-type, tracks
                                         between, "Variety" (noise); ``Engine.join``
Radio          ``join`` / .kv            seed, "Radio length", "Like the last" (lookback),
                                         "Variety"; ``Engine.radio``
Map            ``mapscreen`` / map.kv,   every track a dot (``Engine.map``); pan, pinch-zoom;
               ``mapview``               tap dots to join them, radio from a dot, the path
                                         drawn on the map and shown as the playlist
Playlist       ``playlist`` / .kv        entries with a bar per step distance; play/skip
                                         (``player``: Kivy's SoundLoader); save as M3U8;
                                         send to a sink plugin (MPD)
=============  ========================  ==================================================

Supporting modules: ``app`` (the App, the command line, the worker-thread -> ``@mainthread``
plumbing), ``backend`` (daemon client or in-process Engine, reconnecting; no Kivy),
``platform`` (Android/iOS/desktop decisions and storage paths; no Kivy), ``viewmodel`` (text
and bar lengths from engine results; no Kivy), ``widgets`` (track picker, distance bar, value
slider, message bar) and ``stage`` (lays out the folder buildozer packs, with
``buildozer.spec``). ``docs/kivy.md`` and ``docs/mobile.md`` describe use and packaging.

Nothing here is imported by the engine or the CLI; Kivy is imported only when the app starts.
"""
