"""The Kivy front end (desktop and phone). Install with ``pip install "deejai[kivy]"``."""
