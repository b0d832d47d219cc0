"""The ``deejai`` command line (click)."""
